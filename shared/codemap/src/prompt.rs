//! Prompt assembly within a token budget, counted with the target model's tokenizer.
//!
//! Layout: repository overview, skeletons (signatures) of the ranked files, full
//! bodies of the most relevant symbols, then the request. How many items fit is
//! found by binary search; the first item that does not fit is truncated by lines
//! rather than dropped. The request always fits: everything else goes first, and a
//! request longer than the whole budget is itself truncated with a marker.

use std::fmt::Write as _;

use serde::Serialize;
use tiktoken_rs::CoreBPE;

use crate::codemap::CodeMap;
use crate::query::RankedFile;
use crate::redact::{self, RedactionCounts};

const MAX_SKELETON_SYMBOLS: usize = 40;
const MAX_BODY_LINES: usize = 150;
const REQUEST_HEADER: &str = "# Request\n";
const TRUNCATED_REQUEST: &str = "\n[request truncated to fit the token budget]";
const TRUNCATED_ITEM: &str = "\n… (truncated)\n";

/// What kind of context an included item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// The repository overview.
    Summary,
    /// A file's signatures.
    Skeleton,
    /// A symbol's full body.
    Body,
}

/// One piece of context that made it into the prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncludedItem {
    /// Kind.
    pub kind: ItemKind,
    /// File, for skeletons and bodies.
    pub path: Option<String>,
    /// Symbol, for bodies.
    pub symbol: Option<String>,
    /// Whether it was cut to fit.
    pub truncated: bool,
}

/// The assembled prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssembledPrompt {
    /// Prompt text.
    pub text: String,
    /// Its token count (never above the budget).
    pub tokens: usize,
    /// The budget asked for.
    pub budget: usize,
    /// Tokenizer used (`o200k_base` or `cl100k_base`).
    pub encoding: String,
    /// Context items included, in order.
    pub included: Vec<IncludedItem>,
    /// Whether the request itself had to be cut.
    pub request_truncated: bool,
    /// Secrets removed from what the prompt contains, by kind.
    pub redactions: RedactionCounts,
}

/// The tokenizer of a model: o200k for the gpt-4o / 4.1 / o-series / gpt-5 families,
/// cl100k otherwise. Both are built once per process (they are slow to build).
pub fn tokenizer_for(model: &str) -> (&'static CoreBPE, &'static str) {
    let m = model.to_ascii_lowercase();
    let o200k = m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-4.5")
        || m.starts_with("gpt-5")
        || m.starts_with("chatgpt-4o")
        || m.starts_with("gpt-oss")
        || (m.starts_with('o') && m.chars().nth(1).is_some_and(|c| c.is_ascii_digit()));
    if o200k {
        (tiktoken_rs::o200k_base_singleton(), "o200k_base")
    } else {
        (tiktoken_rs::cl100k_base_singleton(), "cl100k_base")
    }
}

struct Item {
    meta: IncludedItem,
    text: String,
}

/// Assembles a prompt for `request` from `ranked` results of `map`.
pub fn assemble_prompt(
    map: &CodeMap,
    request: &str,
    ranked: &[RankedFile],
    budget_tokens: usize,
    model: &str,
) -> AssembledPrompt {
    let (bpe, encoding) = tokenizer_for(model);
    let count = |s: &str| bpe.count_ordinary(s);
    let mut req_counts = RedactionCounts::new();
    let request = redact::redact(request, &mut req_counts).into_owned();
    let items = context_items(map, ranked);

    let render = |items: &[Item], extra: Option<&str>, req: &str| -> String {
        let mut s = String::new();
        for it in items {
            s.push_str(&it.text);
        }
        if let Some(e) = extra {
            s.push_str(e);
        }
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(REQUEST_HEADER);
        s.push_str(req);
        s
    };

    // The request alone first: if it does not fit, it is all the prompt holds.
    let bare = render(&[], None, &request);
    if count(&bare) > budget_tokens {
        let text = truncate_request(&request, budget_tokens, &count);
        return finish(text, budget_tokens, encoding, Vec::new(), true, &count);
    }
    let fits = |n: usize| count(&render(&items[..n], None, &request)) <= budget_tokens;
    let (mut lo, mut hi) = (0usize, items.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    let mut included: Vec<IncludedItem> = items[..lo].iter().map(|i| i.meta.clone()).collect();
    let mut text = render(&items[..lo], None, &request);
    if let Some(next) = items.get(lo) {
        let lines: Vec<&str> = next.text.lines().collect();
        let partial = |k: usize| format!("{}{TRUNCATED_ITEM}", lines[..k].join("\n"));
        let (mut a, mut b) = (0usize, lines.len());
        while a < b {
            let mid = (a + b).div_ceil(2);
            if count(&render(&items[..lo], Some(&partial(mid)), &request)) <= budget_tokens {
                a = mid
            } else {
                b = mid - 1
            }
        }
        // A header-only fragment is noise; require a few real lines.
        if a >= 3 {
            text = render(&items[..lo], Some(&partial(a)), &request);
            included.push(IncludedItem {
                truncated: true,
                ..next.meta.clone()
            });
        }
    }
    finish(text, budget_tokens, encoding, included, false, &count)
}

fn finish(
    text: String,
    budget: usize,
    encoding: &str,
    included: Vec<IncludedItem>,
    request_truncated: bool,
    count: &dyn Fn(&str) -> usize,
) -> AssembledPrompt {
    let mut redactions = RedactionCounts::new();
    redact::count_markers(&text, &mut redactions);
    AssembledPrompt {
        tokens: count(&text),
        text,
        budget,
        encoding: encoding.to_owned(),
        included,
        request_truncated,
        redactions,
    }
}

/// The longest prefix of the request (by characters) that fits with the header and
/// marker; without room for those, a bare prefix; with no room at all, nothing.
fn truncate_request(request: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> String {
    let bounds: Vec<usize> = request
        .char_indices()
        .map(|(i, _)| i)
        .chain([request.len()])
        .collect();
    let best = |wrap: &dyn Fn(&str) -> String| -> Option<String> {
        let (mut lo, mut hi) = (0usize, bounds.len() - 1);
        if count(&wrap(&request[..bounds[0]])) > budget {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if count(&wrap(&request[..bounds[mid]])) <= budget {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        Some(wrap(&request[..bounds[lo]]))
    };
    best(&|p: &str| format!("{REQUEST_HEADER}{p}{TRUNCATED_REQUEST}"))
        .or_else(|| best(&|p: &str| p.to_owned()))
        .unwrap_or_default()
}

fn context_items(map: &CodeMap, ranked: &[RankedFile]) -> Vec<Item> {
    let mut items = Vec::new();
    let summary = map.overview_text(ranked);
    if !summary.is_empty() {
        items.push(Item {
            meta: IncludedItem {
                kind: ItemKind::Summary,
                path: None,
                symbol: None,
                truncated: false,
            },
            text: format!("# Repository overview\n{summary}\n"),
        });
    }
    for r in ranked {
        let Some(fi) = map.find_file(&r.path) else {
            continue;
        };
        let f = &map.files()[fi as usize];
        let mut s = format!("## {} (signatures)\n", f.path);
        for d in f.analysis.symbols.iter().take(MAX_SKELETON_SYMBOLS) {
            let depth =
                std::iter::successors(d.parent, |p| f.analysis.symbols[*p as usize].parent).count();
            let _ = writeln!(
                s,
                "{:indent$}{}: {}",
                "",
                d.start_line,
                d.signature,
                indent = depth * 2
            );
        }
        if f.analysis.symbols.is_empty() {
            for l in f.content.lines().take(12) {
                let _ = writeln!(s, "{l}");
            }
        }
        items.push(Item {
            meta: IncludedItem {
                kind: ItemKind::Skeleton,
                path: Some(f.path.clone()),
                symbol: None,
                truncated: false,
            },
            text: s,
        });
    }
    for r in ranked {
        let Some(fi) = map.find_file(&r.path) else {
            continue;
        };
        let f = &map.files()[fi as usize];
        let lines: Vec<&str> = f.content.lines().collect();
        for sym in &r.symbols {
            let start = (sym.start_line as usize).saturating_sub(1);
            let end = (sym.end_line as usize)
                .min(lines.len())
                .min(start + MAX_BODY_LINES);
            if start >= end {
                continue;
            }
            let body = lines[start..end].join("\n");
            items.push(Item {
                meta: IncludedItem {
                    kind: ItemKind::Body,
                    path: Some(f.path.clone()),
                    symbol: Some(sym.name.clone()),
                    truncated: end < sym.end_line as usize,
                },
                text: format!(
                    "## {}:{}-{} `{}`\n```\n{body}\n```\n",
                    f.path, sym.start_line, end, sym.name
                ),
            });
        }
    }
    items
}

impl CodeMap {
    /// The codebase summary as compact text (computed once per map).
    pub fn summary_text(&self) -> &str {
        self.summary_text.get_or_init(|| self.summary().to_text())
    }

    /// Assembles a prompt; see [`assemble_prompt`].
    pub fn assemble_prompt(
        &self,
        request: &str,
        ranked: &[RankedFile],
        budget_tokens: usize,
        model: &str,
    ) -> AssembledPrompt {
        assemble_prompt(self, request, ranked, budget_tokens, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_pick_their_encoding() {
        assert_eq!(tokenizer_for("gpt-4o-mini").1, "o200k_base");
        assert_eq!(tokenizer_for("o3").1, "o200k_base");
        assert_eq!(tokenizer_for("gpt-5").1, "o200k_base");
        assert_eq!(tokenizer_for("gpt-4").1, "cl100k_base");
        assert_eq!(tokenizer_for("claude-sonnet-4").1, "cl100k_base");
    }

    #[test]
    fn oversized_request_is_truncated_within_budget() {
        let (bpe, _) = tokenizer_for("gpt-4");
        let count = |s: &str| bpe.count_ordinary(s);
        let req = "word ".repeat(500);
        for budget in [0, 1, 5, 20, 100] {
            let t = truncate_request(&req, budget, &count);
            assert!(count(&t) <= budget, "budget {budget}");
        }
        assert!(truncate_request(&req, 100, &count).ends_with(TRUNCATED_REQUEST));
    }
}
