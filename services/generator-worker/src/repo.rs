//! Read-only access to a task's repository snapshot: a local path or `file://`
//! URL (only with `CONTEXTEN_ALLOW_LOCAL_REPOS=1`, so a request can never read
//! the worker's disk), or a remote repository fetched shallowly with the `git`
//! CLI into a cache directory and read with `git show <commit>:<path>`.

use base64::Engine as _;
use contexten_config::{ExposeSecret, Secret};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fetched commit is reused for the same URL and ref.
const FETCH_REUSE: Duration = Duration::from_secs(60);
/// Files larger than this are not read into prompts.
const MAX_FILE_BYTES: usize = 1 << 20;

/// Why a repository cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    #[error("local repositories are disabled (set CONTEXTEN_ALLOW_LOCAL_REPOS=1 to allow them)")]
    LocalNotAllowed,
    #[error("unsupported repository URL {0:?}")]
    BadUrl(String),
    #[error("unsafe ref {0:?}")]
    BadRef(String),
    #[error("unsafe path {0:?}")]
    BadPath(String),
    #[error("git {what} failed: {detail}")]
    Git { what: &'static str, detail: String },
    #[error("reading {path}: {detail}")]
    Io { path: String, detail: String },
}

/// Whether `path` is a plain relative path that stays inside the repository.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('-')
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// (URL, ref) of a fetch.
type FetchKey = (String, String);

/// Opens snapshots; cheap to clone.
#[derive(Clone)]
pub struct RepoReader {
    allow_local: bool,
    cache_dir: PathBuf,
    git_timeout: Duration,
    /// `Authorization` header for fetches from github.com (`GITHUB_TOKEN`).
    github_auth: Option<Secret>,
    /// URLs that get the header (github.com; a fake host in tests).
    github_prefix: String,
    fetched: Arc<Mutex<HashMap<FetchKey, (String, Instant)>>>,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for RepoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoReader")
            .field("allow_local", &self.allow_local)
            .field("cache_dir", &self.cache_dir)
            .field("github_token", &self.github_auth.as_ref().map(|_| "***"))
            .finish()
    }
}

/// One repository at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// A directory on this machine; with a ref, files are read from that ref.
    Local {
        root: PathBuf,
        reference: Option<String>,
    },
    /// A bare cache repository and the fetched commit.
    Git { dir: PathBuf, commit: String },
}

impl RepoReader {
    /// A reader; remote fetches go under `cache_dir`.
    pub fn new(allow_local: bool, cache_dir: PathBuf, git_timeout: Duration) -> Self {
        RepoReader {
            allow_local,
            cache_dir,
            git_timeout,
            github_auth: None,
            github_prefix: "https://github.com/".into(),
            fetched: Arc::default(),
            locks: Arc::default(),
        }
    }

    /// Fetches private repositories from github.com with `token` (the same
    /// `GITHUB_TOKEN` the context worker uses); other hosts never see it.
    pub fn with_github_token(mut self, token: Option<&Secret>) -> Self {
        self.github_auth = token.map(github_auth_header);
        self
    }

    /// Opens the snapshot of `url` at `reference` (default branch when `None`).
    pub async fn open(&self, url: &str, reference: Option<&str>) -> Result<Snapshot, RepoError> {
        if let Some(r) = reference
            && (r.starts_with('-') || r.contains(char::is_whitespace) || r.contains(".."))
        {
            return Err(RepoError::BadRef(r.to_owned()));
        }
        let local = url
            .strip_prefix("file://")
            .or_else(|| (url.starts_with('/') || url.starts_with('.')).then_some(url));
        if let Some(path) = local {
            if !self.allow_local {
                return Err(RepoError::LocalNotAllowed);
            }
            return Ok(Snapshot::Local {
                root: PathBuf::from(path),
                reference: reference.map(str::to_owned),
            });
        }
        let allowed = ["https://", "http://", "ssh://", "git://"];
        if !allowed.iter().any(|s| url.starts_with(s)) && !url.starts_with("git@") {
            return Err(RepoError::BadUrl(url.to_owned()));
        }
        self.fetch(url, reference.unwrap_or("HEAD")).await
    }

    /// Fetches `reference` of `url` with depth 1 into the URL's cache repository.
    pub async fn fetch(&self, url: &str, reference: &str) -> Result<Snapshot, RepoError> {
        let cache_key = (url.to_owned(), reference.to_owned());
        let name = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        let dir = self.cache_dir.join(format!("{name}.git"));
        if let Ok(fetched) = self.fetched.lock()
            && let Some((commit, at)) = fetched.get(&cache_key)
            && at.elapsed() < FETCH_REUSE
        {
            return Ok(Snapshot::Git {
                dir,
                commit: commit.clone(),
            });
        }
        // One fetch at a time per cache repository: FETCH_HEAD is shared.
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(dir.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if !dir.join("HEAD").exists() {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| RepoError::Io {
                    path: dir.display().to_string(),
                    detail: e.to_string(),
                })?;
            self.git(&dir, "init", &["init", "--bare", "-q", "."])
                .await?;
        }
        let auth = self
            .github_auth
            .as_ref()
            .filter(|_| url.starts_with(&self.github_prefix));
        run_git(
            &dir,
            "fetch",
            &[
                "fetch",
                "-q",
                "--depth",
                "1",
                "--no-tags",
                "--",
                url,
                reference,
            ],
            self.git_timeout,
            auth,
        )
        .await?;
        let commit = self
            .git(
                &dir,
                "rev-parse",
                &["rev-parse", "--verify", "FETCH_HEAD^{commit}"],
            )
            .await?;
        let commit = String::from_utf8_lossy(&commit).trim().to_owned();
        if let Ok(mut fetched) = self.fetched.lock() {
            fetched.insert(cache_key, (commit.clone(), Instant::now()));
        }
        Ok(Snapshot::Git { dir, commit })
    }

    async fn git(
        &self,
        dir: &Path,
        what: &'static str,
        args: &[&str],
    ) -> Result<Vec<u8>, RepoError> {
        run_git(dir, what, args, self.git_timeout, None).await
    }

    /// Reads `path` from `snapshot`; `Ok(None)` when the file does not exist.
    pub async fn read(&self, snapshot: &Snapshot, path: &str) -> Result<Option<String>, RepoError> {
        if !is_safe_relative(path) {
            return Err(RepoError::BadPath(path.to_owned()));
        }
        let bytes = match snapshot {
            Snapshot::Local {
                root,
                reference: None,
            } => {
                let full = root.join(path);
                // Symlinks must not lead outside the repository.
                let (Ok(real), Ok(real_root)) = (
                    tokio::fs::canonicalize(&full).await,
                    tokio::fs::canonicalize(root).await,
                ) else {
                    return Ok(None);
                };
                if !real.starts_with(&real_root) {
                    return Err(RepoError::BadPath(path.to_owned()));
                }
                match tokio::fs::read(&real).await {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Ok(None),
                    Err(e) => {
                        return Err(RepoError::Io {
                            path: path.to_owned(),
                            detail: e.to_string(),
                        });
                    }
                }
            }
            Snapshot::Local {
                root,
                reference: Some(reference),
            } => match self.show(root, reference, path).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
            Snapshot::Git { dir, commit } => match self.show(dir, commit, path).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
        };
        if bytes.len() > MAX_FILE_BYTES || bytes.contains(&0) {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn show(&self, dir: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let object = format!("{rev}:{path}");
        match self
            .git(dir, "show", &["show", "--no-color", &object])
            .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(RepoError::Git { detail, .. })
                if detail.contains("does not exist")
                    || detail.contains("exists on disk, but not in") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs git in `dir` without prompts, bounded by `timeout`.
/// The `http.extraHeader` value GitHub accepts for a token over HTTPS.
fn github_auth_header(token: &Secret) -> Secret {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("x-access-token:{}", token.expose_secret()));
    Secret::from(format!("Authorization: Basic {basic}"))
}

/// Runs git; an auth header goes through `GIT_CONFIG_*` so it is in neither
/// argv (visible in `ps`) nor the URL, and git's messages never include it.
async fn run_git(
    dir: &Path,
    what: &'static str,
    args: &[&str],
    timeout: Duration,
    auth: Option<&Secret>,
) -> Result<Vec<u8>, RepoError> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(header) = auth {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", header.expose_secret());
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| RepoError::Git {
            what,
            detail: format!("timed out after {timeout:?}"),
        })?
        .map_err(|e| RepoError::Git {
            what,
            detail: e.to_string(),
        })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        let detail: String = String::from_utf8_lossy(&output.stderr)
            .chars()
            .take(300)
            .collect();
        Err(RepoError::Git {
            what,
            detail: detail.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sh(dir: &Path, args: &[&str]) {
        let status = tokio::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .await
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    async fn repo_with(file: &str, content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        sh(dir.path(), &["init", "-q", "-b", "main"]).await;
        std::fs::write(dir.path().join(file), content).unwrap();
        sh(dir.path(), &["add", "."]).await;
        sh(dir.path(), &["commit", "-q", "-m", "one"]).await;
        dir
    }

    /// The Authorization headers a fake git host received for one fetch.
    async fn auth_sent_by(reader: RepoReader, server: &wiremock::MockServer) -> Vec<String> {
        let url = format!("{}/octo/private.git", server.uri());
        let fetched = reader.fetch(&url, "main").await;
        assert!(fetched.is_err(), "the fake host serves no repository");
        let requests = server.received_requests().await.unwrap();
        assert!(!requests.is_empty(), "git asked the fake host");
        requests
            .iter()
            .filter_map(|r| r.headers.get("authorization"))
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_github_token_goes_to_github_only_and_never_into_messages() {
        let token = Secret::from(["ghp", "_", "generatorfetchtoken"].concat());
        let cache = tempfile::tempdir().unwrap();
        let reader = || {
            RepoReader::new(false, cache.path().into(), Duration::from_secs(20))
                .with_github_token(Some(&token))
        };

        // Standing in for github.com: the token is sent as GitHub expects.
        let github = wiremock::MockServer::start().await;
        let mut for_github = reader();
        for_github.github_prefix = github.uri();
        let sent = auth_sent_by(for_github.clone(), &github).await;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose_secret()));
        assert_eq!(sent.first(), Some(&format!("Basic {expected}")), "{sent:?}");
        // Neither an error nor the reader's Debug form shows it.
        let error = for_github
            .fetch(&format!("{}/octo/private.git", github.uri()), "main")
            .await
            .unwrap_err()
            .to_string();
        for shown in [error, format!("{for_github:?}")] {
            assert!(!shown.contains(token.expose_secret()), "{shown}");
            assert!(!shown.contains(&expected), "{shown}");
        }

        // Any other host never sees it.
        let elsewhere = wiremock::MockServer::start().await;
        assert_eq!(
            auth_sent_by(reader(), &elsewhere).await,
            Vec::<String>::new()
        );
    }

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(is_safe_relative("src/lib.rs"));
        assert!(is_safe_relative("./a.py"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "-rf", "a\0b"] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn local_paths_need_the_flag_and_stay_inside_the_root() {
        let repo = repo_with("a.py", "x = 1\n").await;
        let url = format!("file://{}", repo.path().display());
        let cache = tempfile::tempdir().unwrap();
        let closed = RepoReader::new(false, cache.path().into(), Duration::from_secs(10));
        assert_eq!(
            closed.open(&url, None).await,
            Err(RepoError::LocalNotAllowed)
        );
        let open = RepoReader::new(true, cache.path().into(), Duration::from_secs(10));
        let snapshot = open.open(&url, None).await.unwrap();
        assert_eq!(
            open.read(&snapshot, "a.py").await.unwrap().as_deref(),
            Some("x = 1\n")
        );
        assert_eq!(open.read(&snapshot, "absent.py").await.unwrap(), None);
        assert!(open.read(&snapshot, "../a.py").await.is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", repo.path().join("link")).unwrap();
            assert!(open.read(&snapshot, "link").await.is_err());
        }
        let at_ref = open.open(&url, Some("main")).await.unwrap();
        assert_eq!(
            open.read(&at_ref, "a.py").await.unwrap().as_deref(),
            Some("x = 1\n")
        );
        assert_eq!(
            open.open(&url, Some("--upload-pack=x")).await,
            Err(RepoError::BadRef("--upload-pack=x".into()))
        );
    }

    #[tokio::test]
    async fn remote_repositories_are_fetched_shallowly_and_read_with_git_show() {
        let repo = repo_with("lib.rs", "pub fn one() {}\n").await;
        let cache = tempfile::tempdir().unwrap();
        let reader = RepoReader::new(false, cache.path().into(), Duration::from_secs(20));
        // The fetch path itself, with a file:// remote (local repos stay disabled).
        let url = format!("file://{}", repo.path().display());
        let snapshot = reader.fetch(&url, "main").await.unwrap();
        assert!(matches!(snapshot, Snapshot::Git { .. }));
        assert_eq!(
            reader.read(&snapshot, "lib.rs").await.unwrap().as_deref(),
            Some("pub fn one() {}\n")
        );
        assert_eq!(reader.read(&snapshot, "nope.rs").await.unwrap(), None);
        assert!(matches!(
            reader.fetch(&url, "no-such-branch").await,
            Err(RepoError::Git { what: "fetch", .. })
        ));
        assert!(matches!(
            reader.open("ftp://example.com/r", None).await,
            Err(RepoError::BadUrl(_))
        ));
    }
}
