//! The policy in force, reloaded when `CONTEXTEN_POLICY_FILE` changes, the same
//! way ingest reloads its API token file: poll the content every
//! [`RELOAD_INTERVAL`] (a Kubernetes secret or config map is replaced by a
//! symlink swap, which file-change notifications miss) and swap the parsed
//! policy in whole.

use super::{Decision, Policy, PolicyError, RepoId, Scope};
use contexten_config::Env;
use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The variable naming the policy file.
pub const POLICY_FILE_VAR: &str = "CONTEXTEN_POLICY_FILE";

/// How often the policy file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// What the file looked like when last read, to notice changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Snapshot {
    Missing,
    Content(Vec<u8>),
    Unreadable(ErrorKind),
}

/// What [`PolicyStore::reload_if_changed`] did.
#[derive(Debug)]
pub enum Reload {
    /// Nothing changed (or there is no file to watch).
    Unchanged,
    /// A new valid policy is in force.
    Loaded,
    /// The file is gone: no policy (the safe default) is in force.
    Removed,
    /// The file changed but cannot be used; the previous policy stays.
    Kept(PolicyError),
}

/// The current policy, shared by every request (cheap to clone).
#[derive(Debug, Clone)]
pub struct PolicyStore {
    current: Arc<RwLock<Arc<Policy>>>,
    path: Option<PathBuf>,
    seen: Arc<Mutex<Snapshot>>,
}

impl PolicyStore {
    /// Loads the file named by `CONTEXTEN_POLICY_FILE` (unset: no policy).
    pub fn from_env(env: &Env) -> Result<Self, PolicyError> {
        PolicyStore::load(env.raw(POLICY_FILE_VAR).map(|p| PathBuf::from(p.trim())))
    }

    /// Loads `path` at start. An unreadable or invalid file stops the start; a
    /// missing one means no policy, like a file removed later (logged as a warning).
    pub fn load(path: Option<PathBuf>) -> Result<Self, PolicyError> {
        let Some(path) = path else {
            return Ok(PolicyStore::fixed(Policy::none()));
        };
        let snapshot = read(&path);
        let policy = match &snapshot {
            Snapshot::Missing => {
                tracing::warn!(path = %path.display(), "policy file not found; only GitHub events' own repositories may be read");
                Policy::none()
            }
            Snapshot::Content(bytes) => parse(bytes, &path)?,
            Snapshot::Unreadable(_) => return Err(read_error(&path)),
        };
        Ok(PolicyStore {
            current: Arc::new(RwLock::new(Arc::new(policy))),
            path: Some(path),
            seen: Arc::new(Mutex::new(snapshot)),
        })
    }

    /// A store holding `policy` for good, for tests and for no file.
    pub fn fixed(policy: Policy) -> Self {
        PolicyStore {
            current: Arc::new(RwLock::new(Arc::new(policy))),
            path: None,
            seen: Arc::new(Mutex::new(Snapshot::Missing)),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(policy) => Arc::clone(&policy),
            // A writer panicked mid-swap: the safe default rather than a guess.
            Err(_) => Arc::new(Policy::none()),
        }
    }

    /// [`Policy::decide`] with the policy in force.
    pub fn decide(&self, scope: &Scope<'_>, repo: &RepoId) -> Decision {
        self.current().decide(scope, repo)
    }

    /// Re-reads the file and acts on a change (see [`Reload`]). Each change is
    /// acted on once, so a broken file is reported once, not every poll.
    pub fn reload_if_changed(&self) -> Reload {
        let Some(path) = &self.path else {
            return Reload::Unchanged;
        };
        let now = read(path);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return Reload::Unchanged;
            };
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now.clone();
        }
        let (policy, outcome) = match now {
            Snapshot::Missing => (Policy::none(), Reload::Removed),
            Snapshot::Unreadable(_) => return Reload::Kept(read_error(path)),
            Snapshot::Content(bytes) => match parse(&bytes, path) {
                Ok(policy) => (policy, Reload::Loaded),
                Err(error) => return Reload::Kept(error),
            },
        };
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(policy);
        }
        outcome
    }

    /// Reloads on change every [`RELOAD_INTERVAL`] until `shutdown` completes.
    pub async fn watch(self, shutdown: impl Future<Output = ()>) {
        self.watch_every(RELOAD_INTERVAL, shutdown).await;
    }

    async fn watch_every(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        if self.path.is_none() {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.reload_if_changed() {
                Reload::Unchanged => {}
                Reload::Loaded => tracing::info!("repository policy reloaded"),
                Reload::Removed => tracing::warn!(
                    "policy file removed; only GitHub events' own repositories may be read until it returns"
                ),
                Reload::Kept(error) => {
                    tracing::error!(%error, "repository policy not reloaded; keeping the previous policy")
                }
            }
        }
    }
}

fn read(path: &Path) -> Snapshot {
    match std::fs::read(path) {
        Ok(bytes) => Snapshot::Content(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => Snapshot::Missing,
        Err(e) => Snapshot::Unreadable(e.kind()),
    }
}

/// Reads again for the full error (the snapshot keeps only its kind).
fn read_error(path: &Path) -> PolicyError {
    let source = std::fs::read(path)
        .err()
        .unwrap_or_else(|| std::io::Error::other("the file changed while being read"));
    PolicyError::Read {
        path: path.display().to_string(),
        source,
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<Policy, PolicyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PolicyError::Entry {
        path: path.display().to_string(),
        entry: "the file".into(),
        reason: "is not UTF-8".into(),
    })?;
    Policy::parse(text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RepoPattern;
    use std::sync::atomic::{AtomicBool, Ordering};

    const SLACK: &str = "[[slack]]\nteam = \"T1\"\nrepositories = [\"acme/api\"]\n";
    /// Bound on waiting for the watcher to notice a change.
    const WATCH_DEADLINE: Duration = Duration::from_secs(5);

    fn slack_may_read_api(store: &PolicyStore) -> bool {
        let scope = Scope::Slack {
            team: "T1",
            channel: Some("C1"),
        };
        store
            .decide(&scope, &RepoId::parse("acme/api").unwrap())
            .is_allowed()
    }

    #[test]
    fn no_file_and_a_missing_file_are_the_safe_default() {
        let unset = PolicyStore::from_env(&Env::default()).unwrap();
        assert_eq!(*unset.current(), Policy::none());
        let dir = tempfile::tempdir().unwrap();
        let missing = PolicyStore::load(Some(dir.path().join("policy.toml"))).unwrap();
        assert_eq!(*missing.current(), Policy::none());
        assert!(!slack_may_read_api(&missing));
        // A token's own list still holds: the operator wrote it in the token file.
        let own = [RepoPattern::parse("acme/*").unwrap()];
        let scope = Scope::Api {
            token: "ci",
            token_repositories: &own,
        };
        assert!(
            missing
                .decide(&scope, &RepoId::parse("acme/x").unwrap())
                .is_allowed()
        );
    }

    #[test]
    fn an_invalid_file_stops_the_start_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[[slack]]\nteam = \"T1\"\nrepos = []\n").unwrap();
        let error = PolicyStore::load(Some(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("repos"), "{error}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let error = PolicyStore::load(Some(path)).unwrap_err().to_string();
        assert!(error.contains("not UTF-8"), "{error}");
    }

    #[test]
    fn changes_deletion_and_breakage_are_handled_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "").unwrap();
        let store = PolicyStore::load(Some(path.clone())).unwrap();
        assert!(!slack_may_read_api(&store));
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

        std::fs::write(&path, SLACK).unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Loaded));
        assert!(slack_may_read_api(&store));

        // Broken: the previous policy stays, and the breakage is reported once.
        std::fs::write(&path, "[[slack]]\nteam = 1\n").unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Kept(_)));
        assert!(slack_may_read_api(&store));
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

        // Removed: back to the safe default, not the old policy.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Removed));
        assert!(!slack_may_read_api(&store));

        std::fs::write(&path, SLACK).unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Loaded));
        assert!(slack_may_read_api(&store));
    }

    #[tokio::test]
    async fn the_watcher_picks_up_a_change_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "").unwrap();
        let store = PolicyStore::load(Some(path.clone())).unwrap();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (store, stop, stopped) = (store.clone(), Arc::clone(&stop), Arc::clone(&stopped));
            tokio::spawn(async move {
                store
                    .watch_every(Duration::from_millis(20), stop.notified())
                    .await;
                stopped.store(true, Ordering::SeqCst);
            })
        };
        std::fs::write(&path, SLACK).unwrap();
        tokio::time::timeout(WATCH_DEADLINE, async {
            while !slack_may_read_api(&store) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watcher did not reload the policy");
        stop.notify_one();
        tokio::time::timeout(WATCH_DEADLINE, watcher)
            .await
            .unwrap()
            .unwrap();
        assert!(stopped.load(Ordering::SeqCst));
    }
}
