//! Co-change statistics: which files changed together in the repository's
//! history, and how often each file changed.
//!
//! Built from whatever history is present: the evaluation reads the last N
//! commits before a case's parent from a full clone; a production checkout
//! fetched with depth 1 has no history, so the table is empty and the ranking
//! is unchanged (see `eval/README.md`, "co-change").

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::bm25::{Bm25Index, TermTable, sum_repeated};
use crate::tokens;

/// Commits touching more files than this say little about which files belong
/// together (mass renames, formatting, licence headers) and are skipped.
pub const MAX_COMMIT_FILES: usize = 20;
/// Neighbours kept per file, strongest first.
const NEIGHBOURS: usize = 16;
/// Commits over which a change's recency weight falls by `e`.
const RECENCY_COMMITS: f32 = 25.0;

/// Co-change counts over a window of history.
#[derive(Debug, Default, Clone)]
pub struct CoChange {
    /// Path → commits that touched it.
    changes: HashMap<String, f32>,
    /// Path → (other path, co-change confidence), strongest first.
    neighbours: HashMap<String, Vec<(String, f32)>>,
    /// Most changes of any one file.
    max_changes: f32,
    /// Path → sum over its changes of `exp(-age / RECENCY_COMMITS)`, age in
    /// commits (0 = the newest commit given).
    recent: HashMap<String, f32>,
    /// Highest recency of any file.
    max_recent: f32,
    /// The commits' messages, indexed so a request finds the past changes that
    /// read like it (none when the history was given without messages).
    messages: Option<Arc<MessageIndex>>,
}

/// A past commit found by [`CoChange::similar_commits`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PastCommit<'a> {
    /// BM25 similarity of its message to the request, relative to the best (0..1].
    pub similarity: f32,
    /// Its subject line (whole: [`shortened`] cuts it for display).
    pub subject: &'a str,
    /// The files it touched.
    pub files: &'a [String],
}

/// Longest commit subject shown to explain a ranking.
pub const SUBJECT_CHARS: usize = 72;

/// The first line of a commit message.
fn subject(message: &str) -> String {
    message
        .trim_start()
        .lines()
        .next()
        .unwrap_or("")
        .trim_end()
        .to_owned()
}

/// `subject` cut to at most [`SUBJECT_CHARS`] characters, for display: cut
/// after masking, so no part of a secret is left unrecognised.
pub fn shortened(subject: &str) -> Cow<'_, str> {
    match subject.char_indices().nth(SUBJECT_CHARS) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &subject[..cut])),
        None => Cow::Borrowed(subject),
    }
}

/// `#123`, `/pull/123` and `/issues/123` (not `&#123;` or `abc#123`).
static NUMBER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:(?:^|[^\w&])#|/pull/|/issues/)([0-9]{1,9})\b")
        .unwrap_or_else(|e| panic!("number regex: {e}"))
});

/// The issue and pull request numbers `text` names, in order.
fn referenced_numbers(text: &str) -> impl Iterator<Item = u64> + '_ {
    NUMBER_RE
        .captures_iter(text)
        .filter_map(|c| c.get(1)?.as_str().parse().ok())
}

/// Past commit messages as BM25 documents, with the files each commit touched.
#[derive(Debug, Default)]
struct MessageIndex {
    index: Bm25Index,
    files: Vec<Vec<String>>,
    /// Each indexed commit's subject line, to explain a lift.
    subjects: Vec<String>,
    /// Issue or pull request number → the indexed commits whose message
    /// names it (`#123`, `.../pull/123`, `.../issues/123`).
    numbers: HashMap<u64, Vec<u32>>,
    /// One document per file: the messages of every commit that touched it.
    by_file: Bm25Index,
    file_paths: Vec<String>,
}

impl CoChange {
    /// Counts co-changes over `commits` (each the paths one commit touched),
    /// newest first.
    ///
    /// Confidence of `a → b` is the number of commits touching both, each
    /// weighted `1 / (files - 1)` so a big commit links its files weakly, over
    /// the commits touching `a` plus one (so a single shared commit is not
    /// certainty).
    pub fn from_commits<S: AsRef<str>>(commits: &[Vec<S>]) -> Self {
        let none: Vec<(&str, &[S])> = commits.iter().map(|c| ("", c.as_slice())).collect();
        Self::from_history(&none)
    }

    /// [`CoChange::from_commits`] with each commit's message, newest first:
    /// the messages are indexed for [`CoChange::similar_commits`].
    pub fn from_history<M: AsRef<str>, S: AsRef<str>>(commits: &[(M, &[S])]) -> Self {
        let mut indexed: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        let mut subjects: Vec<String> = Vec::new();
        let mut numbers: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut changes: HashMap<String, f32> = HashMap::new();
        let mut pairs: HashMap<(String, String), f32> = HashMap::new();
        let mut recent: HashMap<String, f32> = HashMap::new();
        for (age, (message, c)) in commits.iter().enumerate() {
            let mut files: Vec<&str> = c.iter().map(AsRef::as_ref).collect();
            files.sort_unstable();
            files.dedup();
            if files.is_empty() || files.len() > MAX_COMMIT_FILES {
                continue;
            }
            let terms = tokens::query_terms(message.as_ref());
            if !terms.is_empty() {
                indexed.push((terms, files.iter().map(|f| (*f).to_owned()).collect()));
                for n in referenced_numbers(message.as_ref()) {
                    numbers
                        .entry(n)
                        .or_default()
                        .push(u32::try_from(subjects.len()).unwrap_or(u32::MAX));
                }
                subjects.push(subject(message.as_ref()));
            }
            let r = (-(age as f32) / RECENCY_COMMITS).exp();
            for f in &files {
                *changes.entry((*f).to_owned()).or_default() += 1.0;
                *recent.entry((*f).to_owned()).or_default() += r;
            }
            if files.len() < 2 {
                continue;
            }
            let w = 1.0 / (files.len() - 1) as f32;
            for a in &files {
                for b in &files {
                    if a != b {
                        *pairs.entry(((*a).to_owned(), (*b).to_owned())).or_default() += w;
                    }
                }
            }
        }
        let mut neighbours: HashMap<String, Vec<(String, f32)>> = HashMap::new();
        for ((a, b), n) in pairs {
            let conf = n / (changes.get(&a).copied().unwrap_or(0.0) + 1.0);
            neighbours.entry(a).or_default().push((b, conf));
        }
        for list in neighbours.values_mut() {
            list.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            list.truncate(NEIGHBOURS);
        }
        let max_changes = changes.values().copied().fold(0.0, f32::max);
        let max_recent = recent.values().copied().fold(0.0, f32::max);
        let messages = (!indexed.is_empty()).then(|| {
            let table = Arc::new(TermTable::default());
            let docs: Vec<Vec<(u32, f32)>> = indexed
                .iter()
                .map(|(terms, _)| table.intern_all(terms.iter().map(|t| (t.as_str(), 1.0))))
                .collect();
            let refs: Vec<&[(u32, f32)]> = docs.iter().map(Vec::as_slice).collect();
            let mut per_file: HashMap<&str, Vec<(u32, f32)>> = HashMap::new();
            for (doc, (_, files)) in docs.iter().zip(&indexed) {
                for f in files {
                    per_file
                        .entry(f.as_str())
                        .or_default()
                        .extend(doc.iter().copied());
                }
            }
            let mut per_file: Vec<(&str, Vec<(u32, f32)>)> = per_file.into_iter().collect();
            per_file.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (_, terms) in &mut per_file {
                sum_repeated(terms);
            }
            let file_refs: Vec<&[(u32, f32)]> =
                per_file.iter().map(|(_, t)| t.as_slice()).collect();
            let by_file = Bm25Index::build(&file_refs, table.clone());
            let file_paths = per_file.iter().map(|(p, _)| (*p).to_owned()).collect();
            Arc::new(MessageIndex {
                index: Bm25Index::build(&refs, table),
                files: indexed.into_iter().map(|(_, f)| f).collect(),
                subjects,
                numbers,
                by_file,
                file_paths,
            })
        });
        Self {
            changes,
            neighbours,
            max_changes,
            recent,
            max_recent,
            messages,
        }
    }

    /// Reads the last `depth` non-merge commits reachable from `rev` in
    /// `git_dir` (all that is there when the clone is shallower).
    pub fn from_git(git_dir: &Path, rev: &str, depth: usize) -> std::io::Result<Self> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(git_dir)
            .args(["log", "--no-merges", "--no-renames", "--name-only"])
            .arg(format!("--max-count={depth}"))
            .args(["--format=%x1e%B%x1f", rev, "--"])
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        let log = parse_log(&String::from_utf8_lossy(&out.stdout));
        let commits: Vec<(&str, &[String])> = log
            .iter()
            .map(|(m, f)| (m.as_str(), f.as_slice()))
            .collect();
        Ok(Self::from_history(&commits))
    }

    /// Past commits whose messages read like `query` (weighted terms), best
    /// first, at most `top`.
    pub fn similar_commits(&self, query: &[(String, f32)], top: usize) -> Vec<PastCommit<'_>> {
        let Some(m) = &self.messages else {
            return Vec::new();
        };
        let scores = m.index.score(query);
        let mut order: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] > 0.0).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
        order.truncate(top);
        let best = order.first().map_or(1.0, |i| scores[*i]);
        order
            .into_iter()
            .map(|i| PastCommit {
                similarity: scores[i] / best,
                subject: &m.subjects[i],
                files: &m.files[i],
            })
            .collect()
    }

    /// Past commits that name an issue or pull request the `request` text
    /// names (`#123`, `.../pull/123`): the change a request points at,
    /// whatever words either uses. Newest first, each with similarity 1.
    pub fn referenced_commits(&self, request: &str) -> Vec<PastCommit<'_>> {
        let Some(m) = &self.messages else {
            return Vec::new();
        };
        let mut found: Vec<u32> = referenced_numbers(request)
            .filter_map(|n| m.numbers.get(&n))
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .map(|i| PastCommit {
                similarity: 1.0,
                subject: &m.subjects[i as usize],
                files: &m.files[i as usize],
            })
            .collect()
    }

    /// Files whose past commit messages, taken together, read like `query`:
    /// (path, score relative to the best file).
    pub fn message_match(&self, query: &[(String, f32)]) -> Vec<(&str, f32)> {
        let Some(m) = &self.messages else {
            return Vec::new();
        };
        let scores = m.by_file.score(query);
        let best = scores.iter().copied().fold(0.0f32, f32::max);
        if best <= 0.0 {
            return Vec::new();
        }
        scores
            .iter()
            .zip(&m.file_paths)
            .filter(|(s, _)| **s > 0.0)
            .map(|(s, p)| (p.as_str(), s / best))
            .collect()
    }

    /// Whether no history was counted.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Files that changed with `path`, with their confidence (0..1), strongest first.
    pub fn neighbours(&self, path: &str) -> &[(String, f32)] {
        self.neighbours.get(path).map_or(&[], Vec::as_slice)
    }

    /// How often `path` changed relative to the most changed file, on a log
    /// scale (0 = never, 1 = the most changed).
    pub fn churn(&self, path: &str) -> f32 {
        let n = self.changes.get(path).copied().unwrap_or(0.0);
        if n <= 0.0 || self.max_changes <= 0.0 {
            return 0.0;
        }
        (1.0 + n).ln() / (1.0 + self.max_changes).ln()
    }
}

impl CoChange {
    /// How recently and often `path` changed, relative to the most recently
    /// active file (0..1; changes fade over about [`RECENCY_COMMITS`] commits).
    pub fn recency(&self, path: &str) -> f32 {
        let r = self.recent.get(path).copied().unwrap_or(0.0);
        if self.max_recent <= 0.0 {
            return 0.0;
        }
        r / self.max_recent
    }
}

/// Splits `git log --name-only --format=%x1e%B%x1f` output into per-commit
/// (message, paths).
fn parse_log(log: &str) -> Vec<(String, Vec<String>)> {
    log.split('\x1e')
        .filter_map(|rec| {
            let (message, names) = rec.split_once('\x1f').unwrap_or(("", rec));
            let paths: Vec<String> = names
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            (!paths.is_empty()).then(|| (message.trim().to_owned(), paths))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_changed_together_are_neighbours() {
        let commits = vec![
            vec!["a.rs", "b.rs"],
            vec!["a.rs", "b.rs"],
            vec!["a.rs", "c.rs", "d.rs"],
            vec!["e.rs"],
        ];
        let c = CoChange::from_commits(&commits);
        let n = c.neighbours("a.rs");
        assert_eq!(n[0].0, "b.rs");
        // Two shared commits over a.rs's three changes plus one.
        assert!((n[0].1 - 0.5).abs() < 1e-6, "{n:?}");
        // The three-file commit counts half for each pair.
        let c_conf = n.iter().find(|(p, _)| p == "c.rs").map(|x| x.1);
        assert_eq!(c_conf, Some(0.5 / 4.0));
        assert!(c.neighbours("e.rs").is_empty());
        assert!(c.neighbours("missing.rs").is_empty());
        assert!((c.churn("a.rs") - 1.0).abs() < 1e-6);
        assert!(c.churn("e.rs") > 0.0 && c.churn("e.rs") < c.churn("b.rs"));
        assert_eq!(c.churn("missing.rs"), 0.0);
        // a.rs changed in the three newest commits; e.rs only in the oldest.
        assert!((c.recency("a.rs") - 1.0).abs() < 1e-6);
        assert!(c.recency("e.rs") > 0.0 && c.recency("e.rs") < c.recency("c.rs"));
        assert_eq!(c.recency("missing.rs"), 0.0);
    }

    #[test]
    fn huge_commits_are_skipped() {
        let big: Vec<String> = (0..=MAX_COMMIT_FILES).map(|i| format!("f{i}.rs")).collect();
        let c = CoChange::from_commits(&[big]);
        assert!(c.is_empty());
        assert!(c.neighbours("f0.rs").is_empty());
    }

    #[test]
    fn log_is_split_per_commit_with_its_message() {
        let log = "\x1eFix the parser\n\nbody\n\x1f\n\nsrc/a.rs\nsrc/b.rs\n\x1eDocs\x1f\n\nREADME.md\n\x1eEmpty\x1f\n\n";
        assert_eq!(
            parse_log(log),
            vec![
                (
                    "Fix the parser\n\nbody".to_owned(),
                    vec!["src/a.rs".to_owned(), "src/b.rs".to_owned()]
                ),
                ("Docs".to_owned(), vec!["README.md".to_owned()])
            ]
        );
    }

    #[test]
    fn a_commit_is_named_by_its_first_line_cut_at_a_character_boundary() {
        assert_eq!(
            subject("\n  Fix the decoder\n\nLong body"),
            "Fix the decoder"
        );
        assert_eq!(shortened("Fix the decoder"), "Fix the decoder");
        let long = "é".repeat(SUBJECT_CHARS + 5);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), SUBJECT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_request_naming_a_pull_request_finds_its_commit() {
        let a = ["src/lazy_number.rs"].map(String::from);
        let b = ["src/decoder.rs"].map(String::from);
        let commits: Vec<(&str, &[String])> = vec![
            ("Tidy the decoder (#12)", &b),
            (
                "Parse numbers lazily (#3076)\n\nSee https://github.com/o/r/issues/3001",
                &a,
            ),
        ];
        let h = CoChange::from_history(&commits);
        let subjects = |text: &str| -> Vec<String> {
            h.referenced_commits(text)
                .iter()
                .map(|c| c.subject.to_owned())
                .collect()
        };
        assert_eq!(
            subjects("Fix a silly mistake in the unit test for #3076"),
            ["Parse numbers lazily (#3076)"]
        );
        assert_eq!(
            subjects("regression from https://github.com/o/r/pull/3076 and #12"),
            ["Tidy the decoder (#12)", "Parse numbers lazily (#3076)"]
        );
        assert_eq!(
            subjects("see issue #3001"),
            ["Parse numbers lazily (#3076)"]
        );
        assert!(subjects("the html entity &#3076; and abc#12 and #999").is_empty());
    }

    #[test]
    fn a_request_finds_the_past_commits_that_read_like_it() {
        let a = ["src/decoder.rs", "tests/decoder.rs"].map(String::from);
        let b = ["src/encoder.rs"].map(String::from);
        let c = ["README.md"].map(String::from);
        let commits: Vec<(&str, &[String])> = vec![
            ("Fix decoder panic on trailing comma", &a),
            ("Speed up the encoder", &b),
            ("Docs: typo", &c),
        ];
        let h = CoChange::from_history(&commits);
        let q =
            crate::bm25::weigh_query(&tokens::query_terms("decoder panics with a trailing comma"));
        let found = h.similar_commits(&q, 5);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].similarity, 1.0);
        assert_eq!(found[0].files, &a[..]);
        assert_eq!(found[0].subject, "Fix decoder panic on trailing comma");
        assert!(
            CoChange::from_commits(&[vec!["a.rs"]])
                .similar_commits(&q, 5)
                .is_empty()
        );
    }
}
