//! Read-only access to a task's repository snapshot: a local path or `file://`
//! URL (only with `CONTEXTEN_ALLOW_LOCAL_REPOS=1`, so a request can never read
//! the worker's disk), or a remote repository fetched shallowly into a cache
//! directory. Every git process runs through `contexten-git` (checked refs,
//! URLs and paths, minimal environment, `GENERATOR_GIT_TIMEOUT_SECS` on each
//! process); its blocking calls run on tokio's blocking pool.

use contexten_config::{ExposeSecret, SecretSource};
use contexten_git::{
    AuthHeader, GitError, Policy, Reason, Remote, Repo, RepoCache, Resolve, UrlKind,
};
use contexten_trust::outbound::{OutboundGuard, Purpose};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fetched commit is reused for the same URL and ref.
const FETCH_REUSE: Duration = Duration::from_secs(60);
/// Files larger than this are not read into prompts (checked before reading).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a repository cannot be read. The messages never carry git's output
/// (they can reach an answer); that is logged where the error is made.
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
    #[error("git {what} failed: {reason}")]
    Git { what: &'static str, reason: Reason },
    #[error("reading {path}: {detail}")]
    Io { path: String, detail: String },
    /// The outbound guard refused the URL (its sentence names the host and why).
    #[error("{0}")]
    Refused(String),
}

impl RepoError {
    /// From contexten-git's error; git's stderr is logged here and dropped.
    fn from_git(error: GitError, url: &str) -> Self {
        let reason = error.reason();
        match error {
            GitError::RefusedRef(r) => RepoError::BadRef(r),
            GitError::RefusedUrl(_) => RepoError::BadUrl(url.to_owned()),
            GitError::RefusedPath(p) => RepoError::BadPath(p),
            GitError::Timeout { command, .. }
            | GitError::Failed { command, .. }
            | GitError::TooLarge { command, .. }
            | GitError::Io { command, .. } => {
                let stderr = error.stderr().unwrap_or("");
                tracing::warn!(command, %reason, stderr, "git failed");
                RepoError::Git {
                    what: command,
                    reason,
                }
            }
        }
    }
}

/// Whether `path` is a plain relative path that stays inside the repository:
/// contexten-git's rule for every path given to git (no leading `/` or `-`, no
/// `..` or empty segment, no control character), for working files and diffs too.
pub fn is_safe_relative(path: &str) -> bool {
    contexten_git::check_path(path).is_ok()
}

/// (URL, ref) of a fetch.
type FetchKey = (String, String);

/// Opens snapshots; cheap to clone.
#[derive(Clone)]
pub struct RepoReader {
    allow_local: bool,
    /// Fetched repositories; its file lock serialises fetches of one
    /// repository across tasks and replicas sharing the folder.
    cache: RepoCache,
    cache_dir: PathBuf,
    /// `Authorization` header for fetches from github.com (`GITHUB_TOKEN`).
    github_token: Option<SecretSource>,
    /// URLs that get the header (github.com; a fake host in tests).
    github_prefix: String,
    fetched: Arc<Mutex<HashMap<FetchKey, (String, Instant)>>>,
    outbound: OutboundGuard,
}

impl std::fmt::Debug for RepoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoReader")
            .field("allow_local", &self.allow_local)
            .field("cache_dir", &self.cache_dir)
            .field("github_token", &self.github_token.as_ref().map(|_| "***"))
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
    /// A reader; remote fetches go under `cache_dir`, every git process is
    /// bounded by `git_timeout`.
    pub fn new(allow_local: bool, cache_dir: PathBuf, git_timeout: Duration) -> Self {
        let policy = Policy::new(git_timeout, allow_local);
        RepoReader {
            allow_local,
            cache: RepoCache::new(cache_dir.clone(), policy),
            cache_dir,
            github_token: None,
            github_prefix: "https://github.com/".into(),
            fetched: Arc::default(),
            outbound: OutboundGuard::default().allow_loopback(allow_local),
        }
    }

    /// Judges remote URLs with `guard` before fetching (default: the guard
    /// without an allow-list, loopback allowed only with local repositories).
    pub fn with_outbound(mut self, guard: OutboundGuard) -> Self {
        self.outbound = guard;
        self
    }

    /// Fetches private repositories from github.com with `token` (the same
    /// `GITHUB_TOKEN` the context worker uses); other hosts never see it.
    pub fn with_github_token(mut self, token: Option<SecretSource>) -> Self {
        // Read at each fetch: a rotated `GITHUB_TOKEN_FILE` needs no restart.
        self.github_token = token;
        self
    }

    /// Opens the snapshot of `url` at `reference` (default branch when `None`).
    /// The ref and URL are checked before any git process runs.
    pub async fn open(&self, url: &str, reference: Option<&str>) -> Result<Snapshot, RepoError> {
        if let Some(r) = reference {
            contexten_git::check_ref(r).map_err(|e| RepoError::from_git(e, url))?;
        }
        match contexten_git::classify_url(url) {
            Ok(UrlKind::Local(root)) => {
                // A bare word (`owner/repo`) is not taken for a relative path.
                let explicit = url.starts_with("file://") || url.starts_with(['/', '.']);
                if !explicit {
                    return Err(RepoError::BadUrl(url.to_owned()));
                }
                if !self.allow_local {
                    return Err(RepoError::LocalNotAllowed);
                }
                // A bare repository has no working files: it is read at a ref.
                let reference = match reference {
                    None if contexten_git::is_git_dir(&root) => Some("HEAD"),
                    given => given,
                };
                Ok(Snapshot::Local {
                    root,
                    reference: reference.map(str::to_owned),
                })
            }
            Ok(UrlKind::Remote) => self.fetch(url, reference.unwrap_or("HEAD")).await,
            Err(_) => Err(RepoError::BadUrl(url.to_owned())),
        }
    }

    /// Fetches `reference` of `url` with depth 1 into the URL's cache repository.
    pub async fn fetch(&self, url: &str, reference: &str) -> Result<Snapshot, RepoError> {
        contexten_git::check_ref(reference).map_err(|e| RepoError::from_git(e, url))?;
        let cache_key = (url.to_owned(), reference.to_owned());
        if let Ok(fetched) = self.fetched.lock()
            && let Some((commit, at)) = fetched.get(&cache_key)
            && at.elapsed() < FETCH_REUSE
        {
            return Ok(Snapshot::Git {
                dir: self.cache.dir_of(url),
                commit: commit.clone(),
            });
        }
        let resolve = self.pins_for(url).await?;
        let remote = Remote {
            auth: self
                .github_token
                .as_ref()
                .filter(|_| url.starts_with(&self.github_prefix))
                .map(|t| AuthHeader::github_token(t.current().expose_secret())),
            resolve,
        };
        let cache = self.cache.clone();
        let (owned_url, owned_ref) = cache_key.clone();
        let fetched = blocking(url, move || {
            cache.fetch(&owned_url, Some(&owned_ref), &remote)
        })
        .await?;
        let commit = fetched.resolved.commit;
        if let Ok(mut cached) = self.fetched.lock() {
            // Entries past their reuse window go, so the map holds only the
            // repositories of the last minute.
            cached.retain(|_, (_, at)| at.elapsed() < FETCH_REUSE);
            cached.insert(cache_key, (commit.clone(), Instant::now()));
        }
        Ok(Snapshot::Git {
            dir: fetched.repo.git_dir().to_path_buf(),
            commit,
        })
    }

    /// A remote URL is fetched only from addresses the outbound guard accepted
    /// (README "Security model"): git is pinned to them and follows no
    /// redirect. A local one (`file://`) is governed by `allow_local` instead.
    async fn pins_for(&self, url: &str) -> Result<Vec<Resolve>, RepoError> {
        if matches!(contexten_git::classify_url(url), Ok(UrlKind::Local(_))) {
            return Ok(Vec::new());
        }
        let checked = self
            .outbound
            .check(url, Purpose::Git)
            .await
            .map_err(|refusal| RepoError::Refused(refusal.message))?;
        match checked.git_pin() {
            Some((host, port, addrs)) => Resolve::new(host, port, addrs)
                .map(|pin| vec![pin])
                .map_err(|e| RepoError::from_git(e, url)),
            None => Ok(Vec::new()),
        }
    }

    /// Reads `path` from `snapshot`; `Ok(None)` when the file does not exist,
    /// is over 1 MiB (known before reading) or is binary.
    pub async fn read(&self, snapshot: &Snapshot, path: &str) -> Result<Option<String>, RepoError> {
        if !is_safe_relative(path) {
            return Err(RepoError::BadPath(path.to_owned()));
        }
        let bytes = match snapshot {
            Snapshot::Local {
                root,
                reference: None,
            } => read_local_file(root, path).await?,
            Snapshot::Local {
                root,
                reference: Some(reference),
            } => {
                let root = root
                    .to_str()
                    .ok_or_else(|| RepoError::BadPath(path.into()))?;
                let repo = Repo::open_local(root, self.cache.policy())
                    .map_err(|e| RepoError::from_git(e, root))?;
                show(repo, reference, path).await?
            }
            Snapshot::Git { dir, commit } => {
                let repo = self
                    .cache
                    .open(dir)
                    .map_err(|e| RepoError::from_git(e, &dir.display().to_string()))?;
                show(repo, commit, path).await?
            }
        };
        Ok(bytes
            .filter(|b| !b.contains(&0))
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// A working-directory file, its size checked before it is read; symlinks
/// must not lead outside the repository.
async fn read_local_file(root: &Path, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
    let (Ok(real), Ok(real_root)) = (
        tokio::fs::canonicalize(root.join(path)).await,
        tokio::fs::canonicalize(root).await,
    ) else {
        return Ok(None);
    };
    if !real.starts_with(&real_root) {
        return Err(RepoError::BadPath(path.to_owned()));
    }
    let io = |e: std::io::Error| RepoError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    match tokio::fs::metadata(&real).await {
        Ok(meta) if !meta.is_file() || meta.len() > MAX_FILE_BYTES => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    match tokio::fs::read(&real).await {
        Ok(bytes) if bytes.len() as u64 <= MAX_FILE_BYTES => Ok(Some(bytes)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// `path` at `rev` (`cat-file --batch`, size checked from its header).
async fn show(repo: Repo, rev: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
    let (rev, path) = (rev.to_owned(), path.to_owned());
    let url = repo.git_dir().display().to_string();
    blocking(&url, move || repo.read_file(&rev, &path, MAX_FILE_BYTES)).await
}

/// Runs a blocking contexten-git call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    url: &str,
    call: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, RepoError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(|e| RepoError::from_git(e, url)),
        Err(join) => Err(RepoError::Io {
            path: "git".into(),
            detail: join.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

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

    #[tokio::test]
    async fn a_bare_file_repository_is_read_at_head_or_the_given_ref() {
        let work = repo_with("app.py", "def serve():\n    return 1\n").await;
        let bare = tempfile::tempdir().unwrap();
        let path = bare.path().join("r.git");
        sh(
            bare.path(),
            &[
                "clone",
                "-q",
                "--bare",
                "--",
                work.path().to_str().unwrap(),
                "r.git",
            ],
        )
        .await;
        let cache = tempfile::tempdir().unwrap();
        let reader = RepoReader::new(true, cache.path().into(), Duration::from_secs(20));
        let url = format!("file://{}", path.display());
        for reference in [None, Some("main")] {
            let snapshot = reader.open(&url, reference).await.unwrap();
            assert!(
                matches!(
                    &snapshot,
                    Snapshot::Local {
                        reference: Some(_),
                        ..
                    }
                ),
                "{snapshot:?}"
            );
            let text = reader.read(&snapshot, "app.py").await.unwrap();
            assert_eq!(
                text.as_deref(),
                Some("def serve():\n    return 1\n"),
                "{reference:?}"
            );
        }
    }

    /// A TCP server on 127.0.0.1 that accepts connections and never answers.
    /// The guard with the test's loopback fakes allow-listed by address.
    fn loopback_allowed() -> OutboundGuard {
        OutboundGuard::new("127.0.0.1".parse().unwrap())
    }

    #[tokio::test]
    async fn a_loopback_url_is_refused_without_connecting_unless_allow_listed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cache = tempfile::tempdir().unwrap();
        let reader = RepoReader::new(false, cache.path().into(), Duration::from_secs(5));
        for url in [
            format!("http://127.0.0.1:{port}/repo.git"),
            format!("http://localhost:{port}/repo.git"),
            format!("https://127.0.0.1:{port}/repo.git"),
        ] {
            let error = reader.open(&url, Some("main")).await.unwrap_err();
            assert!(matches!(error, RepoError::Refused(_)), "{url}: {error:?}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "the refused listener saw a connection");
    }

    async fn silent_git_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/repo.git", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        });
        (url, held)
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
        let token = contexten_config::Secret::from(["ghp", "_", "generatorfetchtoken"].concat());
        let cache = tempfile::tempdir().unwrap();
        let reader = || {
            RepoReader::new(false, cache.path().into(), Duration::from_secs(20))
                .with_github_token(Some(token.clone().into()))
                .with_outbound(loopback_allowed())
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
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "-rf",
            "a\0b",
            "a//b",
            "a\nb",
        ] {
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
            open.read(&at_ref, "./a.py").await.unwrap().as_deref(),
            Some("x = 1\n")
        );
        assert_eq!(
            open.open(&url, Some("--upload-pack=x")).await,
            Err(RepoError::BadRef("--upload-pack=x".into()))
        );
        assert_eq!(
            open.open("octo/repo", None).await,
            Err(RepoError::BadUrl("octo/repo".into()))
        );
    }

    #[tokio::test]
    async fn an_option_as_ref_never_runs_a_command() {
        let repo = repo_with("a.py", "x = 1\n").await;
        let scratch = tempfile::tempdir().unwrap();
        let marker = scratch.path().join("pwned");
        let evil = format!("--upload-pack=touch {}", marker.display());
        let reader = RepoReader::new(true, scratch.path().join("cache"), Duration::from_secs(10));
        let (silent, _held) = silent_git_server().await;
        for url in [format!("file://{}", repo.path().display()), silent] {
            assert!(
                matches!(
                    reader.open(&url, Some(&evil)).await,
                    Err(RepoError::BadRef(_))
                ),
                "{url}"
            );
            assert!(matches!(
                reader.fetch(&url, &evil).await,
                Err(RepoError::BadRef(_))
            ));
        }
        assert!(!marker.exists(), "git ran the injected command");
    }

    #[tokio::test]
    async fn a_git_server_that_never_answers_times_out_the_fetch() {
        let (silent, _held) = silent_git_server().await;
        let cache = tempfile::tempdir().unwrap();
        let reader = RepoReader::new(false, cache.path().into(), Duration::from_secs(2))
            .with_outbound(loopback_allowed());
        let started = Instant::now();
        let error = reader.open(&silent, Some("main")).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            error,
            RepoError::Git {
                what: "fetch",
                reason: Reason::Timeout
            }
        );
        assert_eq!(error.to_string(), "git fetch failed: timeout");
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn remote_repositories_are_fetched_shallowly_and_read_by_size_first() {
        let repo = repo_with("lib.rs", "pub fn one() {}\n").await;
        std::fs::write(repo.path().join("big.txt"), "x\n".repeat(1 << 20)).unwrap();
        sh(repo.path(), &["add", "."]).await;
        sh(repo.path(), &["commit", "-q", "-m", "big"]).await;
        let cache = tempfile::tempdir().unwrap();
        // The fetch path itself, with a file:// remote (the file protocol needs
        // local repositories allowed).
        let reader = RepoReader::new(true, cache.path().into(), Duration::from_secs(20));
        let url = format!("file://{}", repo.path().display());
        let snapshot = reader.fetch(&url, "main").await.unwrap();
        assert!(matches!(snapshot, Snapshot::Git { .. }));
        assert_eq!(
            reader.read(&snapshot, "lib.rs").await.unwrap().as_deref(),
            Some("pub fn one() {}\n")
        );
        assert_eq!(reader.read(&snapshot, "nope.rs").await.unwrap(), None);
        assert_eq!(
            reader.read(&snapshot, "big.txt").await.unwrap(),
            None,
            "2 MiB is over the 1 MiB cap"
        );
        assert!(matches!(
            reader.fetch(&url, "no-such-branch").await,
            Err(RepoError::Git { what: "fetch", .. })
        ));
        assert!(matches!(
            reader.open("ftp://example.com/r", None).await,
            Err(RepoError::BadUrl(_))
        ));
        // Without the flag, file:// is refused before git runs.
        let closed = RepoReader::new(false, cache.path().into(), Duration::from_secs(20));
        assert!(matches!(
            closed.fetch(&url, "main").await,
            Err(RepoError::BadUrl(_))
        ));
    }
}
