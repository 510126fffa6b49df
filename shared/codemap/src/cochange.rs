//! Co-change statistics: which files changed together in the repository's
//! history, and how often each file changed.
//!
//! Built from whatever history is present: the evaluation reads the last N
//! commits before a case's parent from a full clone; a production checkout
//! fetched with depth 1 has no history, so the table is empty and the ranking
//! is unchanged (see `eval/README.md`, "co-change").

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

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
        let mut changes: HashMap<String, f32> = HashMap::new();
        let mut pairs: HashMap<(String, String), f32> = HashMap::new();
        let mut recent: HashMap<String, f32> = HashMap::new();
        for (age, c) in commits.iter().enumerate() {
            let mut files: Vec<&str> = c.iter().map(AsRef::as_ref).collect();
            files.sort_unstable();
            files.dedup();
            if files.is_empty() || files.len() > MAX_COMMIT_FILES {
                continue;
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
        Self {
            changes,
            neighbours,
            max_changes,
            recent,
            max_recent,
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
            .args(["--format=%x1e", rev, "--"])
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(Self::from_commits(&parse_name_only(
            &String::from_utf8_lossy(&out.stdout),
        )))
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

/// Splits `git log --name-only --format=%x1e` output into per-commit path lists.
fn parse_name_only(log: &str) -> Vec<Vec<String>> {
    log.split('\x1e')
        .map(|rec| {
            rec.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
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
    fn name_only_log_is_split_per_commit() {
        let log = "\x1e\n\nsrc/a.rs\nsrc/b.rs\n\x1e\n\nREADME.md\n\x1e\n\n";
        assert_eq!(
            parse_name_only(log),
            vec![vec!["src/a.rs", "src/b.rs"], vec!["README.md"]]
        );
    }
}
