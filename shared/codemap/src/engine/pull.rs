//! A pull request's changes: the files its head changes against where it
//! branched off its base, and their diff, read with git from the same
//! repository the head was analysed from.
//!
//! GitHub shows a PR's diff against the merge base of head and base (a
//! three-dot diff), so that is what is computed: both refs are fetched with
//! [`PULL_HISTORY_DEPTH`] commits of history and `git merge-base` finds the
//! fork point. A PR branched off longer ago than that (or unrelated
//! histories) is compared with the base's tip instead, which then also shows
//! the base's newer commits reversed; [`PullChanges::against_merge_base`]
//! says which was used. Sensitive and generated files are left out of the
//! diff, and what remains is redacted like every other repository text.

use contexten_git::{Remote, Repo, Resolve, UrlKind};

use super::Engine;
use crate::error::CodemapError;
use crate::filter;
use crate::redact::{self, RedactionCounts};
use crate::source::RepoSource;

/// Commits of history fetched on each side to find the merge base.
pub const PULL_HISTORY_DEPTH: u32 = 200;
/// The diff read from git at most (it is cut further to the token budget).
pub const MAX_PULL_DIFF_BYTES: u64 = 512 << 10;

/// What a pull request changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullChanges {
    /// The commit the head was compared with (the merge base, or the base's tip).
    pub base_commit: String,
    /// Whether `base_commit` is the merge base (else the base's tip).
    pub against_merge_base: bool,
    /// Changed paths, in git's order (sensitive ones included by name only).
    pub files: Vec<String>,
    /// The redacted unified diff of the files that may be read.
    pub diff: String,
    /// Whether the diff was cut at [`MAX_PULL_DIFF_BYTES`].
    pub truncated: bool,
    /// Secrets removed from the diff, by kind.
    pub redactions: RedactionCounts,
}

impl Engine {
    /// The changes of `head` (a commit of `src`, as analysed) against
    /// `base_ref` of the same repository, fetched with `pins` like the head.
    pub fn pull_request_changes(
        &self,
        src: &RepoSource,
        head: &str,
        base_ref: &str,
        pins: Vec<Resolve>,
    ) -> Result<PullChanges, CodemapError> {
        let RepoSource::Git { url, reference } = src else {
            return Err(CodemapError::NotFound(
                "a pull request needs a git source".into(),
            ));
        };
        if src.is_local() && !self.config.allow_local {
            return Err(CodemapError::LocalRepoRefused);
        }
        let (repo, base) = match contexten_git::classify_url(url)? {
            UrlKind::Local(_) => {
                let repo = Repo::open_local(url, &self.git)?;
                let base = repo.resolve(Some(base_ref))?.commit;
                (repo, base)
            }
            UrlKind::Remote => {
                let cache = self.repo_cache();
                let remote = Remote {
                    auth: self
                        .config
                        .github_token
                        .as_ref()
                        .and_then(|t| t.header_for(url)),
                    resolve: pins,
                };
                // Deepen the head's history, then bring the base's.
                cache.fetch_with_depth(url, reference.as_deref(), &remote, PULL_HISTORY_DEPTH)?;
                let fetched =
                    cache.fetch_with_depth(url, Some(base_ref), &remote, PULL_HISTORY_DEPTH)?;
                (fetched.repo, fetched.resolved.commit)
            }
        };
        let merge_base = repo.merge_base(&base, head)?;
        let against_merge_base = merge_base.is_some();
        let base_commit = merge_base.unwrap_or(base);
        let changes = repo.changes(&base_commit, head, MAX_PULL_DIFF_BYTES)?;
        let mut redactions = RedactionCounts::new();
        let diff = readable_sections(&changes.patch, &changes.files);
        let diff = redact::redact_string(diff, &mut redactions);
        Ok(PullChanges {
            base_commit,
            against_merge_base,
            files: changes.files,
            diff,
            truncated: changes.truncated,
            redactions,
        })
    }
}

/// The patch without the sections of files codemap never reads (sensitive,
/// generated, vendored, binary) or cannot attribute to a changed path (a
/// quoted name): such a section is replaced by one line naming the file.
fn readable_sections(patch: &str, files: &[String]) -> String {
    let mut out = String::with_capacity(patch.len());
    let mut keep = true;
    for line in patch.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("diff --git ") {
            let header = header.trim_end();
            let path = files
                .iter()
                .filter(|f| header.ends_with(&format!(" b/{f}")))
                .max_by_key(|f| f.len());
            keep = path.is_some_and(|p| filter::skip_by_path(p).is_none());
            if !keep {
                let name = path.map_or("a file", String::as_str);
                out.push_str(&format!("(diff of {name} left out)\n"));
            }
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@e"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn a_pull_request_is_compared_with_where_it_branched_not_the_moved_base() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.py"), "def a():\n    return 1\n").unwrap();
        git(root, &["init", "-q", "-b", "main"]);
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "a"]);
        git(root, &["checkout", "-qb", "feature"]);
        std::fs::write(root.join("b.py"), "def b():\n    return 2\n").unwrap();
        std::fs::write(root.join(".env"), "TOKEN=x\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "b"]);
        let head = git(root, &["rev-parse", "HEAD"]);
        git(root, &["checkout", "-q", "main"]);
        std::fs::write(root.join("c.py"), "def c():\n    return 3\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "c"]);
        let engine = Engine::new(crate::EngineConfig {
            allow_local: true,
            ..crate::EngineConfig::default()
        });
        let src = RepoSource::Git {
            url: format!("file://{}", root.display()),
            reference: Some("feature".into()),
        };
        let changes = engine
            .pull_request_changes(&src, &head, "refs/heads/main", Vec::new())
            .unwrap();
        assert!(changes.against_merge_base);
        assert_eq!(
            changes.files,
            [".env", "b.py"],
            "c.py is the base's own change"
        );
        assert!(changes.diff.contains("+def b():"), "{}", changes.diff);
        assert!(!changes.diff.contains("TOKEN"), "{}", changes.diff);
        assert!(!changes.diff.contains("def c"), "{}", changes.diff);
    }

    #[test]
    fn sensitive_and_unattributable_sections_are_left_out() {
        let patch = "diff --git a/src/a.rs b/src/a.rs\n+fn a() {}\ndiff --git a/.env b/.env\n+TOKEN=x\ndiff --git \"a/q\\tx\" \"b/q\\tx\"\n+y\ndiff --git a/b.py b/b.py\n+def b(): pass\n";
        let files = ["src/a.rs", ".env", "q\tx", "b.py"].map(String::from);
        let kept = readable_sections(patch, &files);
        assert!(
            kept.contains("+fn a() {}") && kept.contains("+def b(): pass"),
            "{kept}"
        );
        assert!(!kept.contains("TOKEN"), "{kept}");
        assert!(kept.contains("(diff of .env left out)"), "{kept}");
        assert!(!kept.contains("+y"), "{kept}");
    }
}
