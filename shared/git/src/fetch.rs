//! Shallow fetches into a cache folder: one bare repository per URL, one ref
//! per (URL, ref) under `refs/contexten/`, and a file lock per repository.
//!
//! Why the lock: two shallow fetches into one repository race on git's
//! `shallow.lock` (the loser dies with "Unable to create shallow.lock"), in this
//! process or another sharing the folder. `flock` covers both and is released
//! by the kernel if the holder dies. Each (URL, ref) fetches into its own ref
//! instead of the shared `FETCH_HEAD`, and is resolved under the lock, so a
//! task always reads the commit its own fetch brought.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::check::{self, UrlKind};
use crate::error::GitError;
use crate::policy::{Policy, Remote};
use crate::repo::{Repo, Resolved};
use crate::run::{self, Invocation, SMALL_OUTPUT};

/// The lock file inside each cache repository (git ignores unknown files).
const LOCK_FILE: &str = "contexten-fetch.lock";
/// How often a waiting fetch tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Remote repositories fetched under one folder; cheap to clone.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
    policy: Policy,
    /// Commits of history [`fetch`](Self::fetch) brings (at least 1).
    depth: u32,
}

/// A fetched revision and the repository holding it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The cache repository (read blobs from it).
    pub repo: Repo,
    /// What the ref pointed at when fetched.
    pub resolved: Resolved,
}

impl RepoCache {
    /// A cache under `root` (created on first fetch).
    pub fn new(root: PathBuf, policy: Policy) -> Self {
        RepoCache {
            root,
            policy,
            depth: 1,
        }
    }

    /// The same cache, with [`fetch`](Self::fetch) bringing the last `depth`
    /// commits of history (0 and 1 both mean the tip alone). Every fetch of a
    /// repository should use one depth: a shallower fetch of the same ref
    /// cuts the history a deeper one brought, and the next deeper one fetches
    /// it again.
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = depth.max(1);
        self
    }

    /// Commits of history [`fetch`](Self::fetch) brings.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The policy fetches and reads run under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The cache repository of `url`.
    pub fn dir_of(&self, url: &str) -> PathBuf {
        self.root.join(format!("{}.git", short_hash(&[url])))
    }

    /// Reopens a repository this cache fetched into (a snapshot kept by
    /// folder); anything outside the cache folder is refused.
    pub fn open(&self, git_dir: &Path) -> Result<Repo, GitError> {
        let inside = git_dir.starts_with(&self.root)
            && git_dir
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !inside {
            return Err(GitError::RefusedUrl("not a repository of this cache"));
        }
        Ok(Repo::at(git_dir.to_path_buf(), self.policy.clone()))
    }

    /// Fetches `reference` (`HEAD` when `None`) of `url` with the cache's depth
    /// ([`with_depth`](Self::with_depth), 1 unless set) and resolves it. The ref and URL are checked before any git process runs;
    /// each git process, and the wait for another fetch of the same
    /// repository, is bounded by the policy's timeout.
    pub fn fetch(
        &self,
        url: &str,
        reference: Option<&str>,
        remote: &Remote,
    ) -> Result<Fetched, GitError> {
        self.fetch_with_depth(url, reference, remote, self.depth)
    }

    /// [`fetch`](Self::fetch) with the last `depth` commits of history (at
    /// least 1), so a common ancestor with another fetched ref can be found.
    pub fn fetch_with_depth(
        &self,
        url: &str,
        reference: Option<&str>,
        remote: &Remote,
        depth: u32,
    ) -> Result<Fetched, GitError> {
        let depth = format!("--depth={}", depth.max(1));
        let reference = check::check_ref(reference.unwrap_or("HEAD"))?;
        if let UrlKind::Local(_) = check::classify_url(url)?
            && !self.policy.allow_local
        {
            return Err(GitError::RefusedUrl("local repositories are not allowed"));
        }
        let dir = self.dir_of(url);
        std::fs::create_dir_all(&dir).map_err(|e| GitError::io("cache", e))?;
        let _lock = lock(&dir, self.policy.timeout)?;
        let repo = Repo::at(dir, self.policy.clone());
        if !repo.git_dir().join("HEAD").exists() {
            repo.small("init", &["init", "--bare", "--quiet"])?;
        }
        let dest = format!("refs/contexten/{}", short_hash(&[url, reference]));
        let args: Vec<OsString> = [
            "fetch",
            "--quiet",
            &depth,
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--",
            url,
            &format!("+{reference}:{dest}"),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let fetch = Invocation {
            policy: &self.policy,
            git_dir: repo.git_dir(),
            remote: Some(remote),
            command: "fetch",
            args,
        };
        run::output(&fetch, SMALL_OUTPUT)?;
        let resolved = repo.resolve(Some(&dest))?;
        Ok(Fetched { repo, resolved })
    }
}

/// 24 hex digits of SHA-256 over the parts (NUL-separated).
fn short_hash(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Takes the repository's fetch lock, waiting at most `timeout`; released
/// when the file is dropped.
fn lock(dir: &Path, timeout: Duration) -> Result<File, GitError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| GitError::io("cache", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::WOULDBLOCK | Errno::INTR) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(GitError::Timeout {
                    command: "fetch",
                    after: timeout,
                    stderr: Default::default(),
                });
            }
            Err(e) => return Err(GitError::io("cache", e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_excludes_a_second_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path(), Duration::from_secs(1)).unwrap();
        let started = Instant::now();
        let waited = lock(dir.path(), Duration::from_millis(100));
        assert!(matches!(waited, Err(GitError::Timeout { .. })));
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(held);
        assert!(lock(dir.path(), Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn names_are_stable_hashes() {
        assert_eq!(short_hash(&["a"]), short_hash(&["a"]));
        assert_ne!(short_hash(&["a", "b"]), short_hash(&["ab"]));
        assert_eq!(short_hash(&["a"]).len(), 24);
    }
}
