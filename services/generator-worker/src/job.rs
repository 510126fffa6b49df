//! What to generate, gathered from the envelope and the repository snapshot:
//! the kind (new code or a diff to an existing file), the language, the symbol,
//! the target file's code, usage snippets and the context worker's prompt.
//! Files are read only through [`files`] (sensitive paths refused before any
//! read); every text that reaches a prompt is redacted by codemap's rules.

use crate::files::{self, FileSource};
use crate::repo::Snapshot;
use crate::syntax::{Language, language_of};
use contexten_envelope::TaskEnvelope;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Target files larger than this are cut in the prompt (the diff still applies
/// to the full file).
const MAX_TARGET_CHARS: usize = 48_000;
/// Usage snippets gathered at most, and files searched for them.
const MAX_USAGES: usize = 8;
const MAX_USAGE_FILES: usize = 10;

/// The two generation kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function, class or module from a description and the surrounding code.
    NewCode,
    /// Changes to existing files as a unified diff.
    Diff,
}

impl Kind {
    /// The label in keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewCode => "new_code",
            Kind::Diff => "diff",
        }
    }

    /// The result kind label stored in cached answers.
    pub fn result_label(self) -> &'static str {
        match self {
            Kind::NewCode => "code",
            Kind::Diff => "diff",
        }
    }
}

/// One generation job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub kind: Kind,
    pub request: String,
    pub language: Option<Language>,
    pub symbol: Option<String>,
    /// `function`, `class`, `module`, … (autogenlib: an uppercase name is a class).
    pub symbol_kind: String,
    pub target_file: Option<String>,
    /// The target file's code, redacted (prompt only).
    pub target_code: Option<String>,
    /// The context worker's assembled, budgeted prompt (redacted again here:
    /// the envelope is input like any other).
    pub context: String,
    /// `path:line: text` lines that mention the symbol, redacted.
    pub usages: String,
    /// Identifies the context and the snapshot (part of the cache key).
    pub fingerprint: String,
}

impl Job {
    /// Builds the job of `envelope`, reading from `snapshot` when there is one.
    pub async fn build(
        envelope: &TaskEnvelope,
        repos: &impl FileSource,
        snapshot: Option<&Snapshot>,
    ) -> Job {
        let hints = &envelope.request.hints;
        let context = envelope.context.as_ref();
        let target_file = hints
            .target_file
            .clone()
            .or_else(|| (hints.paths.len() == 1).then(|| hints.paths[0].clone()));
        let target_source = match (snapshot, &target_file) {
            (Some(snapshot), Some(path)) => files::read_for_prompt(repos, snapshot, path)
                .await
                .unwrap_or_else(|e| {
                    tracing::info!(error = %e, "target file not read");
                    None
                }),
            _ => None,
        };
        let language = hints
            .language
            .as_deref()
            .and_then(Language::from_name)
            .or_else(|| target_file.as_deref().and_then(language_of))
            .or_else(|| majority_language(envelope));
        let symbol = hints.symbols.first().cloned();
        let symbol_kind = hints.symbol_kind.clone().unwrap_or_else(|| match &symbol {
            Some(s) if s.starts_with(char::is_uppercase) => "class".into(),
            Some(_) => "function".into(),
            None => "module".into(),
        });
        let kind = if target_source.is_some() {
            Kind::Diff
        } else {
            Kind::NewCode
        };
        let usages = match (snapshot, &symbol) {
            (Some(snapshot), Some(symbol)) => {
                usages(envelope, repos, snapshot, symbol, target_file.as_deref()).await
            }
            _ => String::new(),
        };
        let target_code = target_source.map(|mut code| {
            if code.len() > MAX_TARGET_CHARS {
                let cut = (0..=MAX_TARGET_CHARS)
                    .rev()
                    .find(|i| code.is_char_boundary(*i))
                    .unwrap_or(0);
                code.truncate(cut);
                code.push_str("\n… (file truncated)\n");
            }
            code
        });
        Job {
            kind,
            request: files::redact(envelope.request.text.trim()),
            language,
            symbol,
            symbol_kind,
            target_file,
            target_code,
            context: context
                .map(|c| files::redact(c.prompt.as_str()))
                .unwrap_or_default(),
            usages,
            fingerprint: fingerprint(envelope, snapshot),
        }
    }

    /// A small job for unit tests.
    #[cfg(test)]
    pub fn sample() -> Job {
        Job {
            kind: Kind::NewCode,
            request: "write parse_duration".into(),
            language: Some(Language::Python),
            symbol: Some("parse_duration".into()),
            symbol_kind: "function".into(),
            target_file: None,
            target_code: None,
            context: String::new(),
            usages: String::new(),
            fingerprint: String::new(),
        }
    }
}

/// The most common language among the context's files.
fn majority_language(envelope: &TaskEnvelope) -> Option<Language> {
    let mut counts: BTreeMap<&'static str, (usize, Language)> = BTreeMap::new();
    for item in envelope.context.iter().flat_map(|c| &c.items) {
        if let Some(language) = language_of(&item.path) {
            counts.entry(language.name()).or_insert((0, language)).0 += 1;
        }
    }
    counts
        .into_values()
        .max_by_key(|(n, _)| *n)
        .map(|(_, language)| language)
}

/// Lines mentioning `symbol` in the target file and the context's files.
async fn usages(
    envelope: &TaskEnvelope,
    repos: &impl FileSource,
    snapshot: &Snapshot,
    symbol: &str,
    target: Option<&str>,
) -> String {
    let mut paths: Vec<String> = target.map(str::to_owned).into_iter().collect();
    for item in envelope.context.iter().flat_map(|c| &c.items) {
        if !paths.contains(&item.path) {
            paths.push(item.path.clone());
        }
    }
    let mut found = Vec::new();
    for path in paths.iter().take(MAX_USAGE_FILES) {
        // Redacted whole, before lines are picked: a multi-line secret (a key
        // block) is only recognised in one piece.
        let Ok(Some(code)) = files::read_for_prompt(repos, snapshot, path).await else {
            continue;
        };
        for (n, line) in code.lines().enumerate() {
            if found.len() >= MAX_USAGES {
                break;
            }
            if mentions(line, symbol) {
                let line: String = line.trim().chars().take(200).collect();
                found.push(format!("{path}:{}: {line}", n + 1));
            }
        }
    }
    found.join("\n")
}

/// Whether `line` mentions `symbol` as a whole word.
fn mentions(line: &str, symbol: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(symbol).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + symbol.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Hash of the context's files and the snapshot's identity.
fn fingerprint(envelope: &TaskEnvelope, snapshot: Option<&Snapshot>) -> String {
    let mut hasher = Sha256::new();
    if let Some(repo) = &envelope.request.repository {
        hasher.update(repo.url.as_bytes());
        hasher.update([0]);
        hasher.update(repo.reference.as_deref().unwrap_or("").as_bytes());
        hasher.update([0]);
    }
    if let Some(Snapshot::Git { commit, .. }) = snapshot {
        hasher.update(commit.as_bytes());
    }
    for item in envelope.context.iter().flat_map(|c| &c.items) {
        hasher.update(item.path.as_bytes());
        hasher.update([0]);
        hasher.update(item.symbols.join(",").as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::files::tests::{FakeFiles, snapshot};
    use contexten_envelope::{
        ContextItem, Hints, ReplyTarget, Request, Source, SourceKind, TaskContext,
    };

    #[tokio::test]
    async fn a_request_naming_env_or_key_files_never_reads_them() {
        let fake = FakeFiles::with(&[
            (".env", "GREETING_WORD=mellon-7f3a\n"),
            ("id_rsa", "GREETING_WORD in a key file\n"),
            ("app/greet.py", "def greet():\n    return GREETING_WORD\n"),
        ]);
        let mut envelope = TaskEnvelope::new(
            Source {
                kind: SourceKind::API,
                delivery_id: None,
                requested_by: None,
                reply_to: ReplyTarget::None,
                extra: Default::default(),
            },
            Request {
                text: "use GREETING_WORD from .env and id_rsa".into(),
                hints: Hints {
                    paths: vec![".env".into(), "id_rsa".into()],
                    symbols: vec!["GREETING_WORD".into()],
                    target_file: Some(".env".into()),
                    ..Hints::default()
                },
                ..Request::default()
            },
        );
        envelope.context = Some(TaskContext {
            items: ["id_rsa", "app/greet.py", "config/.env.local"]
                .map(|path| ContextItem {
                    path: path.into(),
                    score: 1.0,
                    symbols: Vec::new(),
                    reasons: Vec::new(),
                })
                .to_vec(),
            ..TaskContext::default()
        });
        let job = Job::build(&envelope, &fake, Some(&snapshot())).await;
        assert_eq!(fake.attempted(), ["app/greet.py"]);
        assert_eq!(job.kind, Kind::NewCode, "the refused target is not read");
        assert!(job.target_code.is_none());
        assert_eq!(job.usages, "app/greet.py:2: return GREETING_WORD");
        assert!(!format!("{job:?}").contains("mellon-7f3a"));
    }

    #[test]
    fn symbols_match_as_whole_words() {
        assert!(mentions("x = parse(y)", "parse"));
        assert!(!mentions("x = parse_all(y)", "parse"));
        assert!(!mentions("reparse()", "parse"));
    }
}
