//! Repository acquisition: a local directory, or a git URL + ref fetched shallowly
//! into a cache folder and read from the object database by blob id.
//!
//! Blob ids are git's (`sha1("blob <len>\0" + content)`); for working directories
//! we compute the same hash from the bytes on disk, so a file that is unchanged
//! between a checkout and a commit shares its cache entry.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CodemapError;
use crate::filter::{self, SkipReason};

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
    /// Parses a CLI argument: an existing directory or anything URL-like.
    pub fn parse(repo: &str, reference: Option<&str>) -> Self {
        let is_url = repo.contains("://") || repo.starts_with("git@");
        if !is_url && reference.is_none() {
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
#[derive(Clone, Default)]
pub struct GitToken(String);

impl GitToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// From `GITHUB_TOKEN`, if set and non-empty (start-up only).
    pub fn from_env() -> Option<Self> {
        std::env::var("GITHUB_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Self)
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
    /// Raw bytes (before redaction); `None` when a working-directory file is
    /// unchanged since the last analysis (read again only on a cache miss).
    pub bytes: Option<Arc<[u8]>>,
    /// Where a working-directory file lives.
    pub origin: Option<PathBuf>,
}

/// The files of one revision, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Commit id for git sources.
    pub commit: Option<String>,
    /// Tree id for git sources (the key of a whole-repo map).
    pub tree: Option<String>,
    /// Files in path order.
    pub files: Vec<SourceFile>,
    /// Skipped files by reason.
    pub skipped: BTreeMap<String, usize>,
}

impl Snapshot {
    pub(crate) fn skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason.as_str().to_owned()).or_default() += 1;
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
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    let remote = url.contains("://") || (url.contains('@') && url.contains(':'));
    (!remote).then(|| PathBuf::from(url))
}

/// Options for reading a git source.
pub(crate) struct GitOptions<'a> {
    pub cache_dir: &'a Path,
    pub token: Option<&'a GitToken>,
}

/// A resolved git revision.
pub(crate) struct GitRevision {
    pub git_dir: PathBuf,
    pub commit: String,
    pub tree: String,
}

/// Resolves the ref, fetching it shallowly first when the URL is remote.
pub(crate) fn resolve_git(
    url: &str,
    reference: Option<&str>,
    opts: &GitOptions<'_>,
) -> Result<GitRevision, CodemapError> {
    let (git_dir, rev) = match local_git_path(url) {
        Some(p) => {
            let dot_git = p.join(".git");
            let dir = if dot_git.exists() { dot_git } else { p };
            (dir, reference.unwrap_or("HEAD").to_owned())
        }
        None => (fetch_remote(url, reference, opts)?, "FETCH_HEAD".to_owned()),
    };
    let commit = git(
        &git_dir,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
        None,
    )?;
    let commit = commit.trim().to_owned();
    let tree = git(
        &git_dir,
        &["rev-parse", &format!("{commit}^{{tree}}")],
        None,
    )?
    .trim()
    .to_owned();
    Ok(GitRevision {
        git_dir,
        commit,
        tree,
    })
}

/// Lists and reads the files of a resolved revision.
pub(crate) fn read_git(rev: &GitRevision, max_file_bytes: u64) -> Result<Snapshot, CodemapError> {
    let git_dir = &rev.git_dir;
    let commit = &rev.commit;
    let mut snap = Snapshot {
        commit: Some(commit.clone()),
        tree: Some(rev.tree.clone()),
        ..Snapshot::default()
    };
    let listing = git(git_dir, &["ls-tree", "-r", "-l", "-z", commit], None)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for entry in listing.split('\0').filter(|e| !e.is_empty()) {
        // "<mode> <type> <id> <size>\t<path>"
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        let mut f = meta.split_whitespace();
        let (mode, kind, id, size) = (f.next(), f.next(), f.next(), f.next());
        if kind != Some("blob") || mode == Some("120000") {
            continue;
        }
        if let Some(reason) = filter::skip_by_path(path) {
            snap.skip(reason);
            continue;
        }
        let size: u64 = size.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if size > max_file_bytes {
            snap.skip(SkipReason::Oversize);
            continue;
        }
        if let Some(id) = id {
            wanted.push((path.to_owned(), id.to_owned()));
        }
    }
    let blobs = cat_blobs(git_dir, wanted.iter().map(|(_, id)| id.as_str()))?;
    for ((path, id), bytes) in wanted.into_iter().zip(blobs) {
        if let Some(reason) = filter::skip_by_content(&bytes, max_file_bytes) {
            snap.skip(reason);
            continue;
        }
        snap.files.push(SourceFile {
            path,
            blob_id: id,
            bytes: Some(bytes.into()),
            origin: None,
        });
    }
    snap.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(snap)
}

fn fetch_remote(
    url: &str,
    reference: Option<&str>,
    opts: &GitOptions<'_>,
) -> Result<PathBuf, CodemapError> {
    let dir = opts
        .cache_dir
        .join(crate::CACHE_GIT_DIR)
        .join(format!("{}.git", &blob_id(url.as_bytes())[..16]));
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(&dir).map_err(|e| CodemapError::io(&dir, e))?;
        git(&dir, &["init", "--bare", "--quiet"], None)?;
    }
    let refspec = reference.unwrap_or("HEAD");
    let auth = opts
        .token
        .filter(|_| url.starts_with("https://github.com/"))
        .map(|t| {
            let basic = base64(format!("x-access-token:{}", t.0).as_bytes());
            format!("Authorization: Basic {basic}")
        });
    git(
        &dir,
        &[
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            url,
            refspec,
        ],
        auth.as_deref(),
    )?;
    Ok(dir)
}

/// Runs git; an auth header goes through `GIT_CONFIG_*` so it is in neither argv
/// (visible in `ps`) nor the URL, and error messages never include it.
fn git(git_dir: &Path, args: &[&str], auth_header: Option<&str>) -> Result<String, CodemapError> {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir).args(args);
    cmd.env("GIT_TERMINAL_PROMPT", "0").stdin(Stdio::null());
    if let Some(h) = auth_header {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", h);
    }
    let out = cmd
        .output()
        .map_err(|e| CodemapError::io(Path::new("git"), e))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr.truncate(2000);
        return Err(CodemapError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads blobs with one `git cat-file --batch`; a writer thread avoids pipe deadlock.
pub(crate) fn cat_blobs<'a>(
    git_dir: &Path,
    ids: impl Iterator<Item = &'a str>,
) -> Result<Vec<Vec<u8>>, CodemapError> {
    let input: String = ids.map(|id| format!("{id}\n")).collect();
    let n = input.lines().count();
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CodemapError::io(Path::new("git"), e))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| CodemapError::git("cat-file", "no stdin"))?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CodemapError::git("cat-file", "no stdout"))?;
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    let mut out = Vec::with_capacity(n);
    let mut header = String::new();
    for _ in 0..n {
        header.clear();
        r.read_line(&mut header)
            .map_err(|e| CodemapError::io(git_dir, e))?;
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CodemapError::git("cat-file", header.trim()))?;
        let mut buf = vec![0u8; size + 1];
        r.read_exact(&mut buf)
            .map_err(|e| CodemapError::io(git_dir, e))?;
        buf.pop();
        out.push(buf);
    }
    let _ = writer.join();
    let _ = child.wait();
    Ok(out)
}

/// Lists a working directory, honouring `.gitignore` (also outside git repos).
pub(crate) fn list_local(
    root: &Path,
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
    let mut out = Vec::new();
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
        out.push((rel, entry.into_path(), meta));
    }
    Ok(out)
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
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
    fn base64_pads() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
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
}
