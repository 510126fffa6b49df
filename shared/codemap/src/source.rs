//! Repository acquisition: a local directory, or a git URL + ref (fetched
//! shallowly into a cache folder, or read in place when local) read through
//! contexten-git: sizes first, then the chosen blobs by id.
//!
//! Blob ids are git's (`sha1("blob <len>\0" + content)`); for working directories
//! we compute the same hash from the bytes on disk, so a file that is unchanged
//! between a checkout and a commit shares its cache entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contexten_git::{
    AuthHeader, Blob, Limits, Remote, Repo, RepoCache, Resolve, Selector, Skipped, UrlKind,
};
use serde::{Deserialize, Serialize};

use crate::error::CodemapError;
use crate::filter::{self, SkipReason};
use crate::lang::Language;
use crate::memory::{self, Reservation};

/// Where a repository comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoSource {
    /// A directory on this machine (needs `allow_local`).
    Local(PathBuf),
    /// A git URL (https, ssh, or a local path / `file://` when `allow_local`) and a ref.
    Git {
        /// Clone URL.
        url: String,
        /// Branch, tag or commit; the remote's HEAD when `None`.
        reference: Option<String>,
    },
}

impl RepoSource {
    /// Parses a CLI argument: an existing directory or anything URL-like. A
    /// bare repository (a directory holding `HEAD` and `objects/`) is git,
    /// read at `reference` (HEAD when `None`), never listed as files.
    pub fn parse(repo: &str, reference: Option<&str>) -> Self {
        let is_url = repo.contains("://") || repo.starts_with("git@");
        if !is_url && reference.is_none() && !contexten_git::is_git_dir(Path::new(repo)) {
            Self::Local(PathBuf::from(repo))
        } else {
            Self::Git {
                url: repo.to_owned(),
                reference: reference.map(str::to_owned),
            }
        }
    }

    /// Whether this source reads the local disk.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Git { url, .. } => local_git_path(url).is_some(),
        }
    }
}

/// Token used for private GitHub repositories; never logged or put in a URL.
/// Read anew for each fetch, so a rotated secret file (`GITHUB_TOKEN_FILE`) is
/// picked up without a restart.
#[derive(Clone)]
pub struct GitToken(Arc<dyn Fn() -> String + Send + Sync>);

impl GitToken {
    /// A fixed token.
    pub fn new(token: impl Into<String>) -> Self {
        let token = token.into();
        Self(Arc::new(move || token.clone()))
    }

    /// A token read by `current` at each fetch.
    pub fn dynamic(current: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(current))
    }

    /// From `GITHUB_TOKEN`, if set and non-empty (start-up only).
    pub fn from_env() -> Option<Self> {
        std::env::var("GITHUB_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Self::new)
    }
}

impl std::fmt::Debug for GitToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitToken(***)")
    }
}

/// One readable file of a snapshot.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Repository-relative path with `/` separators.
    pub path: String,
    /// Git blob id (hex).
    pub blob_id: String,
    /// Contents before redaction (checked UTF-8); `None` when a
    /// working-directory file is read only when it is analysed. When no
    /// secret is masked, the map's content is this very buffer, not a copy.
    pub text: Option<Arc<str>>,
    /// Where a working-directory file lives.
    pub origin: Option<PathBuf>,
    /// Its size (to schedule the largest first), known before it is read.
    pub size: u64,
}

/// The files of one revision, and what was skipped.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Commit id for git sources.
    pub commit: Option<String>,
    /// Tree id for git sources (the key of a whole-repo map).
    pub tree: Option<String>,
    /// Files in path order.
    pub files: Vec<SourceFile>,
    /// Skipped files by reason.
    pub skipped: BTreeMap<String, usize>,
    /// The memory budget's bytes held for this snapshot's analysis (moved into
    /// its map).
    pub(crate) reservation: Option<Reservation>,
}

impl Snapshot {
    pub(crate) fn skip(&mut self, reason: SkipReason) {
        self.skip_n(reason, 1);
    }

    pub(crate) fn skip_n(&mut self, reason: SkipReason, n: usize) {
        if n > 0 {
            *self.skipped.entry(reason.as_str().to_owned()).or_default() += n;
        }
    }
}

/// The memory budget as the readers see it: which files fit, then the
/// reservation of their estimate (waiting for room, as the engine decides).
pub(crate) struct Budget<'a> {
    /// Bytes one analysis may use.
    pub bytes: u64,
    /// Reserves the estimate of the chosen files before any is read.
    pub reserve: &'a dyn Fn(u64) -> Result<Reservation, CodemapError>,
}

impl Budget<'_> {
    /// Keeps what fits of `items` (path, size, item), counts the rest as
    /// `memory_budget` and reserves the kept files' estimate.
    pub(crate) fn apply<T>(
        &self,
        items: Vec<(String, u64, T)>,
        snap: &mut Snapshot,
    ) -> Result<Vec<T>, CodemapError> {
        let estimate = memory::ESTIMATE_FIXED
            + items
                .iter()
                .map(|(_, size, _)| memory::file_estimate(*size))
                .sum::<u64>();
        let (kept, left_out) = memory::select(items, self.bytes);
        snap.skip_n(SkipReason::MemoryBudget, left_out);
        snap.reservation = Some((self.reserve)(estimate.min(self.bytes))?);
        Ok(kept)
    }
}

/// Git's blob id of some bytes.
pub fn blob_id(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    // RustCrypto's SHA-1 uses the CPU's SHA extensions where present (several
    // times faster than a portable one; every file of a working tree is hashed).
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// `Some(path)` when a git URL points at this machine.
pub fn local_git_path(url: &str) -> Option<PathBuf> {
    match contexten_git::classify_url(url) {
        Ok(UrlKind::Local(path)) => Some(path),
        // Remote, or refused (the fetch refuses it before running git).
        _ => None,
    }
}

impl GitToken {
    /// The header for `url`: only `https://github.com/` gets the token.
    pub(crate) fn header_for(&self, url: &str) -> Option<AuthHeader> {
        url.starts_with("https://github.com/")
            .then(|| AuthHeader::github_token(&(self.0)()))
    }
}

/// A resolved git revision and the repository holding it.
pub(crate) struct GitRevision {
    pub repo: Repo,
    pub commit: String,
    pub tree: String,
}

/// Resolves the ref: in place for a local repository, after a shallow fetch
/// into `cache` for a remote one. Refs and URLs are checked before git runs.
pub(crate) fn resolve_git(
    url: &str,
    reference: Option<&str>,
    cache: &RepoCache,
    token: Option<&GitToken>,
    pins: Vec<Resolve>,
) -> Result<GitRevision, CodemapError> {
    let (repo, resolved) = match contexten_git::classify_url(url)? {
        UrlKind::Local(_) => {
            let repo = Repo::open_local(url, cache.policy())?;
            let resolved = repo.resolve(reference)?;
            (repo, resolved)
        }
        UrlKind::Remote => {
            let remote = Remote {
                auth: token.and_then(|t| t.header_for(url)),
                resolve: pins,
            };
            let fetched = cache.fetch(url, reference, &remote)?;
            (fetched.repo, fetched.resolved)
        }
    };
    Ok(GitRevision {
        repo,
        commit: resolved.commit,
        tree: resolved.tree,
    })
}

/// How valuable a file is when the caps leave some out: files of a parsed
/// language first, then other text; path order within each.
fn rank(path: &str) -> u8 {
    u8::from(!Language::from_path(path).is_parsed())
}

/// Counts what the caps left out under their reasons' names.
fn record_caps(snap: &mut Snapshot, skipped: &Skipped) {
    for (reason, n) in skipped.counts() {
        if n > 0 {
            *snap.skipped.entry(reason.to_owned()).or_default() += n;
        }
    }
}

/// Lists a resolved revision, chooses its files within `limits` from their
/// sizes, and only then reads the chosen blobs.
pub(crate) fn read_git(
    rev: &GitRevision,
    limits: &Limits,
    budget: Option<&Budget<'_>>,
) -> Result<Snapshot, CodemapError> {
    let mut snap = Snapshot {
        commit: Some(rev.commit.clone()),
        tree: Some(rev.tree.clone()),
        ..Snapshot::default()
    };
    let selection = rev.repo.select(&rev.commit, limits, |entry| {
        match filter::skip_by_path(&entry.path) {
            Some(reason) => {
                snap.skip(reason);
                None
            }
            None => Some(rank(&entry.path)),
        }
    })?;
    record_caps(&mut snap, &selection.skipped);
    let entries = match budget {
        Some(b) => {
            let items = selection
                .entries
                .into_iter()
                .map(|e| (e.path.clone(), e.size, e))
                .collect();
            b.apply(items, &mut snap)?
        }
        None => selection.entries,
    };
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut entries = entries.into_iter();
    // Each blob becomes its file's text as it arrives: the blobs are never all
    // held twice (bytes and text), which was a whole extra copy of the tree
    // at the peak (eval/README.md, peak memory).
    rev.repo
        .each_blob(ids.iter().map(String::as_str), limits, |blob| {
            let Some(entry) = entries.next() else {
                return;
            };
            let bytes = match blob {
                Blob::Data(bytes) => bytes,
                // Sizes were checked from the listing; a blob of another size,
                // or none, is left out like any other unreadable file.
                Blob::Oversize(_) => return snap.skip(SkipReason::Oversize),
                Blob::Missing | Blob::NotBlob => return snap.skip(SkipReason::Binary),
            };
            if let Some(reason) = filter::skip_by_content(&bytes, limits.max_blob_bytes) {
                return snap.skip(reason);
            }
            let Ok(text) = String::from_utf8(bytes) else {
                return snap.skip(SkipReason::NotUtf8);
            };
            snap.files.push(SourceFile {
                path: entry.path,
                blob_id: entry.id,
                size: text.len() as u64,
                text: Some(text.into()),
                origin: None,
            });
        })?;
    snap.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(snap)
}

/// Whether the file, total or memory cap left files out of a snapshot (given its
/// skipped counts, such as [`crate::CodeMap::skipped`]).
pub fn is_partial(skipped: &BTreeMap<String, usize>) -> bool {
    ["too_many_files", "total_size_cap", "memory_budget"]
        .iter()
        .any(|r| skipped.get(*r).is_some_and(|n| *n > 0))
}

/// Lists a working directory, honouring `.gitignore` (also outside git repos),
/// and chooses its files within `limits` by size and [`rank`], like a tree.
pub(crate) fn list_local(
    root: &Path,
    limits: &Limits,
    budget: Option<&Budget<'_>>,
    snap: &mut Snapshot,
) -> Result<Vec<(String, PathBuf, std::fs::Metadata)>, CodemapError> {
    if !root.is_dir() {
        return Err(CodemapError::NotFound(root.display().to_string()));
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .sort_by_file_path(|a, b| a.cmp(b))
        .build();
    let mut selector = Selector::new(*limits);
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        if let Some(reason) = filter::skip_by_path(&rel) {
            snap.skip(reason);
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        selector.offer(
            (rank(&rel), rel.clone()),
            meta.len(),
            (rel, entry.into_path(), meta),
        );
    }
    let (kept, skipped) = selector.finish();
    record_caps(snap, &skipped);
    let mut kept = match budget {
        Some(b) => {
            let items = kept
                .into_iter()
                .map(|k| (k.0.clone(), k.2.len(), k))
                .collect();
            b.apply(items, snap)?
        }
        None => kept,
    };
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn locality_of_urls() {
        assert!(local_git_path("file:///tmp/x").is_some());
        assert!(local_git_path("/tmp/x").is_some());
        assert!(local_git_path("https://github.com/a/b").is_none());
        assert!(local_git_path("git@github.com:a/b.git").is_none());
        assert!(RepoSource::parse("/tmp/x", None).is_local());
    }

    #[test]
    fn token_debug_hides_value() {
        assert_eq!(format!("{:?}", GitToken::new("sekrit")), "GitToken(***)");
    }

    #[test]
    fn the_token_goes_to_github_only() {
        let token = GitToken::new("sekrit");
        assert!(token.header_for("https://github.com/o/r.git").is_some());
        for elsewhere in [
            "https://github.com.evil.example/o/r",
            "http://github.com/o/r",
            "https://gitlab.com/o/r",
        ] {
            assert!(token.header_for(elsewhere).is_none(), "{elsewhere}");
        }
    }

    #[test]
    fn parsed_languages_rank_before_other_text() {
        assert!(rank("src/lib.rs") < rank("README.md"));
        let mut skipped = BTreeMap::new();
        assert!(!is_partial(&skipped));
        skipped.insert("oversize".to_owned(), 3);
        assert!(!is_partial(&skipped));
        skipped.insert("too_many_files".to_owned(), 1);
        assert!(is_partial(&skipped));
    }

    /// A committed repository of `files` on branch `main`.
    fn git_repo(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, bytes).unwrap();
        }
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-qm",
                "x",
            ],
        ] {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        }
        dir
    }

    fn engine(max_files: usize, max_total_bytes: u64) -> crate::Engine {
        crate::Engine::new(crate::EngineConfig {
            allow_local: true,
            max_files,
            max_total_bytes,
            max_file_bytes: 64 << 10,
            ..crate::EngineConfig::default()
        })
    }

    fn at_main(dir: &Path) -> RepoSource {
        RepoSource::Git {
            url: format!("file://{}", dir.display()),
            reference: Some("main".into()),
        }
    }

    #[test]
    fn a_repository_over_the_caps_gives_a_partial_map_with_the_reasons() {
        let mut files: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| {
                (
                    format!("src/m{i:02}.py"),
                    format!("def f{i}():\n    return {i}\n").into_bytes(),
                )
            })
            .collect();
        files.extend((0..3).map(|i| (format!("docs/d{i}.md"), b"notes\n".to_vec())));
        files.push(("src/big.py".into(), vec![b'#'; 2 << 20]));
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        let repo = git_repo(&files);
        let map = engine(5, 1 << 20).analyse(&at_main(repo.path())).unwrap();
        let paths: Vec<&str> = map.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "src/m00.py",
                "src/m01.py",
                "src/m02.py",
                "src/m03.py",
                "src/m04.py"
            ]
        );
        assert_eq!(map.skipped().get("too_many_files"), Some(&10));
        assert_eq!(
            map.skipped().get("oversize"),
            Some(&1),
            "the 2 MiB blob is never read"
        );
        assert!(is_partial(map.skipped()));

        // The total cap: 10 KiB files under 25 KiB, and the same for a working tree.
        let kib: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| (format!("k{i}.py"), b"# line\n".repeat(10 << 7)))
            .collect();
        let kib: Vec<(&str, Vec<u8>)> = kib.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        let repo = git_repo(&kib);
        for src in [
            at_main(repo.path()),
            RepoSource::Local(repo.path().to_path_buf()),
        ] {
            let map = engine(100, 25 << 10).analyse(&src).unwrap();
            assert_eq!(map.len(), 2, "{src:?}");
            assert_eq!(map.skipped().get("total_size_cap"), Some(&2), "{src:?}");
        }
    }

    /// A bare clone of a committed repository.
    fn bare_clone(work: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("git")
            .args(["clone", "-q", "--bare", "--"])
            .arg(work)
            .arg(dir.path().join("r.git"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        dir
    }

    #[test]
    fn a_bare_repository_is_read_at_its_ref_not_listed_as_files() {
        let work = git_repo(&[("src/app.py", b"def serve():\n    return 1\n".to_vec())]);
        let bare = bare_clone(work.path());
        let path = bare.path().join("r.git");
        let as_path = RepoSource::parse(path.to_str().unwrap(), None);
        assert!(
            matches!(
                as_path,
                RepoSource::Git {
                    reference: None,
                    ..
                }
            ),
            "{as_path:?}"
        );
        let by_url = format!("file://{}", path.display());
        for src in [
            as_path,
            RepoSource::parse(&by_url, None),
            RepoSource::parse(&by_url, Some("main")),
        ] {
            let map = engine(100, 1 << 20).analyse(&src).unwrap();
            let paths: Vec<&str> = map.files().iter().map(|f| f.path.as_str()).collect();
            assert_eq!(paths, ["src/app.py"], "{src:?}");
            assert!(map.commit().is_some(), "{src:?}");
        }
    }

    #[test]
    fn an_option_as_ref_is_refused_before_git_runs() {
        let repo = git_repo(&[("a.py", b"x = 1\n".to_vec())]);
        let scratch = tempfile::tempdir().unwrap();
        let marker = scratch.path().join("pwned");
        let evil = format!("--upload-pack=touch {}", marker.display());
        let engine = engine(100, 1 << 20);
        for url in [
            format!("file://{}", repo.path().display()),
            "http://127.0.0.1:9/r.git".into(),
        ] {
            let src = RepoSource::Git {
                url,
                reference: Some(evil.clone()),
            };
            match engine.analyse(&src) {
                Err(CodemapError::Git(e)) => {
                    assert_eq!(e.reason(), contexten_git::Reason::RefusedRef, "{src:?}")
                }
                other => panic!("{src:?}: {other:?}"),
            }
        }
        assert!(!marker.exists());
    }
}
