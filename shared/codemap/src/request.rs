//! Request understanding: which words of a request count, and how much.
//!
//! An issue's or commit's first line (its title) says what it is about more
//! densely than its body, so title terms weigh `title` and body terms `body`
//! (fitted on the evaluation's tuning set, see `eval/README.md`). Names written
//! in kebab-case are also matched as one identifier (`parse-headers` meets
//! `parseHeaders` and `parse_headers`, which the tokeniser already joins), and
//! fenced code blocks are set apart so names inside them count as code.

use std::sync::LazyLock;

use regex::Regex;

use crate::tokens;

static KEBAB_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z][A-Za-z0-9]*)+")
        .unwrap_or_else(|e| panic!("kebab regex: {e}"))
});

/// A request split into weighted terms and code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// (term, weight) in first-seen order, repeated terms summed.
    pub terms: Vec<(String, f32)>,
    /// Text of fenced code blocks (```...```), where names are code.
    pub code: Vec<String>,
}

impl Request {
    /// Splits `text`: the first non-empty line is the title.
    pub fn parse(text: &str, title: f32, body: f32) -> Self {
        let mut req = Self::default();
        let text = text.trim_start();
        let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
        req.add_terms(head, title);
        let mut prose = String::new();
        let mut code = String::new();
        let mut in_code = false;
        for line in rest.lines() {
            if line.trim_start().starts_with("```") {
                if in_code {
                    req.code.push(std::mem::take(&mut code));
                }
                in_code = !in_code;
                continue;
            }
            let buf = if in_code { &mut code } else { &mut prose };
            buf.push_str(line);
            buf.push('\n');
        }
        if in_code && !code.is_empty() {
            req.code.push(code);
        }
        req.add_terms(&prose, body);
        for c in req.code.clone() {
            req.add_terms(&c, body);
        }
        req
    }

    fn add_terms(&mut self, text: &str, w: f32) {
        if w <= 0.0 {
            return;
        }
        for t in tokens::query_terms(text) {
            self.add(t, w);
        }
        for m in KEBAB_RE.find_iter(text) {
            let joined: String = m.as_str().split('-').collect();
            if joined.len() <= 48 {
                // Unstemmed, as the tokeniser emits a split identifier's whole.
                self.add(joined.to_ascii_lowercase(), w);
            }
        }
    }

    fn add(&mut self, term: String, w: f32) {
        if let Some(e) = self.terms.iter_mut().find(|(x, _)| *x == term) {
            e.1 += w;
        } else {
            self.terms.push((term, w));
        }
    }

    /// Whether any term is `t`.
    pub fn has(&self, t: &str) -> bool {
        self.terms.iter().any(|(x, _)| x == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(r: &Request, t: &str) -> f32 {
        r.terms
            .iter()
            .find(|(x, _)| x == t)
            .map_or(0.0, |(_, w)| *w)
    }

    #[test]
    fn title_terms_weigh_more_than_body_terms() {
        let r = Request::parse(
            "Fix redirect loop\n\nThe session keeps the redirect",
            2.0,
            0.5,
        );
        assert_eq!(weight(&r, "redirect"), 2.5);
        assert_eq!(weight(&r, "loop"), 2.0);
        assert_eq!(weight(&r, "session"), 0.5);
        assert!(!r.has("the"), "stop words dropped");
    }

    #[test]
    fn names_meet_across_naming_conventions() {
        // The tokeniser emits the joined whole for camelCase and snake_case; the
        // request adds it for kebab-case, so all three share `parseheaders`.
        let camel = Request::parse("parseHeaders fails", 1.0, 1.0);
        let snake = Request::parse("parse_headers fails", 1.0, 1.0);
        let kebab = Request::parse("parse-headers fails", 1.0, 1.0);
        for r in [&camel, &snake, &kebab] {
            assert!(r.has("parseheaders"), "{r:?}");
            assert!(r.has("pars") && r.has("header"), "{r:?}");
        }
    }

    #[test]
    fn fenced_code_is_set_apart() {
        let r = Request::parse(
            "Crash on decode\nSteps:\n```\nlet v = json_decode(raw);\n```\nthen it fails",
            1.0,
            1.0,
        );
        assert_eq!(r.code.len(), 1);
        assert!(r.code[0].contains("json_decode"));
        assert!(r.has("jsondecode") && r.has("fail"), "{r:?}");
    }

    #[test]
    fn zero_body_weight_keeps_only_the_title() {
        let r = Request::parse("Parser crash\nbody text only", 1.0, 0.0);
        assert!(r.has("parser") && r.has("crash") && !r.has("body"), "{r:?}");
    }
}
