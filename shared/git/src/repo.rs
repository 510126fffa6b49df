//! Reading one repository: resolve a ref, list a tree with sizes, read blobs
//! with `cat-file --batch` after their sizes were checked.

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::check::{self, UrlKind};
use crate::error::GitError;
use crate::policy::Policy;
use crate::run::{self, Invocation, SMALL_OUTPUT};
use crate::select::{Limits, Selector, Skipped};

/// A repository on disk (a cache repository, or a local one when allowed).
#[derive(Debug, Clone)]
pub struct Repo {
    git_dir: PathBuf,
    policy: Policy,
}

/// A resolved revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Commit id (hex).
    pub commit: String,
    /// Its tree id (hex).
    pub tree: String,
}

/// A regular file of a tree (symlinks and submodules are never listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Repository-relative path.
    pub path: String,
    /// Blob id (hex).
    pub id: String,
    /// Size in bytes, from the tree listing.
    pub size: u64,
}

/// The files chosen from a tree.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Chosen files, most valuable first.
    pub entries: Vec<TreeEntry>,
    /// Regular files in the tree.
    pub listed: usize,
    /// Left out by the caps.
    pub skipped: Skipped,
}

/// One object asked of [`Repo::read_blobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blob {
    /// The content.
    Data(Vec<u8>),
    /// Over the blob cap: its size; the content was not kept.
    Oversize(u64),
    /// No such object.
    Missing,
    /// A tree or commit, not a file.
    NotBlob,
}

/// One commit of [`Repo::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCommit {
    /// The full message (subject and body), trimmed.
    pub message: String,
    /// The paths it touched.
    pub paths: Vec<String>,
}

/// What changed between two commits ([`Repo::changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Paths added, modified or deleted, in git's order.
    pub files: Vec<String>,
    /// The unified diff, at most the asked-for bytes.
    pub patch: String,
    /// Whether the patch was cut at that size.
    pub truncated: bool,
}

/// Whether `path` is itself a git directory (a bare repository: `HEAD` and
/// `objects/`), so it is read as git at a ref, not as a working tree.
pub fn is_git_dir(path: &Path) -> bool {
    path.join("HEAD").is_file() && path.join("objects").is_dir()
}

impl Repo {
    pub(crate) fn at(git_dir: PathBuf, policy: Policy) -> Self {
        Repo { git_dir, policy }
    }

    /// A repository on this machine (`path/.git`, or `path` when bare); refused
    /// unless the policy allows local repositories.
    pub fn open_local(url_or_path: &str, policy: &Policy) -> Result<Self, GitError> {
        let path = match check::classify_url(url_or_path)? {
            UrlKind::Local(path) => path,
            UrlKind::Remote => return Err(GitError::RefusedUrl("not a local repository")),
        };
        if !policy.allow_local {
            return Err(GitError::RefusedUrl("local repositories are not allowed"));
        }
        let dot_git = path.join(".git");
        let git_dir = if dot_git.is_dir() { dot_git } else { path };
        Ok(Repo::at(git_dir, policy.clone()))
    }

    /// The git directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    pub(crate) fn invocation(&self, command: &'static str, args: &[&str]) -> Invocation<'_> {
        Invocation {
            policy: &self.policy,
            git_dir: &self.git_dir,
            remote: None,
            command,
            args: args.iter().map(OsString::from).collect(),
        }
    }

    /// Runs a small command; its trimmed stdout.
    pub(crate) fn small(&self, command: &'static str, args: &[&str]) -> Result<String, GitError> {
        let out = run::output(&self.invocation(command, args), SMALL_OUTPUT)?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The commit and tree of `reference` (`HEAD` when `None`).
    pub fn resolve(&self, reference: Option<&str>) -> Result<Resolved, GitError> {
        let reference = check::check_ref(reference.unwrap_or("HEAD"))?;
        let rev_parse = |rev: String| {
            self.small(
                "rev-parse",
                &["rev-parse", "--verify", "--end-of-options", &rev],
            )
        };
        let commit = rev_parse(format!("{reference}^{{commit}}"))?;
        let tree = rev_parse(format!("{commit}^{{tree}}"))?;
        Ok(Resolved { commit, tree })
    }

    /// The best common ancestor of two commits; `None` when the history at
    /// hand has none (a shallow fetch that does not reach back to it).
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, GitError> {
        let (a, b) = (check::check_ref(a)?, check::check_ref(b)?);
        match self.small("merge-base", &["merge-base", "--end-of-options", a, b]) {
            Ok(id) if !id.is_empty() => Ok(Some(id)),
            Ok(_) | Err(GitError::Failed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The files changed from `base` to `head` and their unified diff, cut
    /// after `max_patch_bytes` (git is stopped there, not drained). No
    /// external diff drivers or text conversions run.
    pub fn changes(
        &self,
        base: &str,
        head: &str,
        max_patch_bytes: u64,
    ) -> Result<Changes, GitError> {
        let (base, head) = (check::check_ref(base)?, check::check_ref(head)?);
        let diff = |extra: &[&'static str]| {
            let mut args = vec!["diff", "--no-color", "--no-ext-diff", "--no-textconv"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--end-of-options", base, head, "--"]);
            args
        };
        let names = run::output(
            &self.invocation("diff", &diff(&["--name-only", "-z"])),
            SMALL_OUTPUT,
        )?;
        let files = names
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let (patch, truncated) = run::stream(&self.invocation("diff", &diff(&[])), None, |out| {
            let mut buf = Vec::new();
            out.take(max_patch_bytes + 1)
                .read_to_end(&mut buf)
                .map_err(|e| GitError::io("diff", e))?;
            let truncated = buf.len() as u64 > max_patch_bytes;
            buf.truncate(usize::try_from(max_patch_bytes).unwrap_or(usize::MAX));
            Ok((String::from_utf8_lossy(&buf).into_owned(), truncated))
        })?;
        Ok(Changes {
            files,
            patch,
            truncated,
        })
    }

    /// The paths each of the last `max_commits` non-merge commits reachable
    /// from `commit` touched, newest first: [`Repo::history`] without the
    /// messages.
    pub fn changed_paths(
        &self,
        commit: &str,
        max_commits: u32,
        max_bytes: u64,
    ) -> Result<Vec<Vec<String>>, GitError> {
        Ok(self
            .history(commit, max_commits, max_bytes)?
            .into_iter()
            .map(|c| c.paths)
            .collect())
    }

    /// The last `max_commits` non-merge commits reachable from `commit`,
    /// newest first, each with its message and the paths it touched (renames
    /// as a deletion and an addition); fewer when the history at hand is
    /// shallower. Commits without a parent are left out: a root commit, or the
    /// boundary of a shallow fetch, lists every file as added, which says
    /// nothing about which files change together. git's output is read up to
    /// `max_bytes`: past it, the commits read so far are returned (the last,
    /// cut one left out), so a huge history costs a bounded read. No diff
    /// drivers or text conversions run.
    pub fn history(
        &self,
        commit: &str,
        max_commits: u32,
        max_bytes: u64,
    ) -> Result<Vec<LoggedCommit>, GitError> {
        let commit = check::check_ref(commit)?;
        if max_commits == 0 {
            return Ok(Vec::new());
        }
        let count = format!("--max-count={max_commits}");
        let args = [
            "log",
            "--no-merges",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--name-only",
            "-z",
            "--format=%x1e%P%x1f%B",
            &count,
            "--end-of-options",
            commit,
            "--",
        ];
        run::stream(&self.invocation("log", &args), None, |out| {
            let mut buf = Vec::new();
            out.take(max_bytes + 1)
                .read_to_end(&mut buf)
                .map_err(|e| GitError::io("log", e))?;
            let cut = buf.len() as u64 > max_bytes;
            let mut commits = parse_log(&buf);
            if cut {
                commits.pop();
            }
            Ok(commits)
        })
    }

    /// Streams the regular files of `commit`'s tree to `each` (`ls-tree -r -l -z`).
    pub fn list_tree(&self, commit: &str, mut each: impl FnMut(TreeEntry)) -> Result<(), GitError> {
        let commit = check::check_ref(commit)?;
        let args = [
            "ls-tree",
            "-r",
            "-l",
            "-z",
            "--full-tree",
            "--end-of-options",
            commit,
        ];
        run::stream(&self.invocation("ls-tree", &args), None, |out| {
            let mut record = Vec::new();
            loop {
                record.clear();
                let n = out
                    .read_until(0, &mut record)
                    .map_err(|e| GitError::io("ls-tree", e))?;
                if n == 0 {
                    return Ok(());
                }
                if let Some(entry) = parse_entry(&record) {
                    each(entry);
                }
            }
        })
    }

    /// Chooses the files of `commit` within `limits`, from sizes alone. `rank`
    /// returns `None` to leave a file out (the caller counts why), else its
    /// value (smaller is better; path order breaks ties).
    pub fn select<R: Ord>(
        &self,
        commit: &str,
        limits: &Limits,
        mut rank: impl FnMut(&TreeEntry) -> Option<R>,
    ) -> Result<Selection, GitError> {
        let mut selector = Selector::new(*limits);
        let mut listed = 0;
        self.list_tree(commit, |entry| {
            listed += 1;
            if let Some(r) = rank(&entry) {
                selector.offer((r, entry.path.clone()), entry.size, entry);
            }
        })?;
        let (entries, skipped) = selector.finish();
        Ok(Selection {
            entries,
            listed,
            skipped,
        })
    }

    /// Reads objects (`<id>` or `<rev>:<path>`) with one `cat-file --batch`, in
    /// order. The size in each header is checked before the content is read:
    /// a blob over `limits.max_blob_bytes` is passed over (drained through a
    /// small buffer, or git stopped when it is the last), and going over
    /// `limits.max_total_bytes` stops git with [`GitError::TooLarge`].
    pub fn read_blobs<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a str>,
        limits: &Limits,
    ) -> Result<Vec<Blob>, GitError> {
        let mut blobs = Vec::new();
        self.each_blob(objects, limits, |blob| blobs.push(blob))?;
        Ok(blobs)
    }

    /// [`Repo::read_blobs`], handing each object to `each` as it is read, so
    /// a caller that turns blobs into something else never holds them all
    /// twice.
    pub fn each_blob<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a str>,
        limits: &Limits,
        mut each: impl FnMut(Blob),
    ) -> Result<(), GitError> {
        let mut input = Vec::new();
        let mut count = 0;
        for object in objects {
            if object.is_empty() || object.contains(['\n', '\r', '\0']) || object.starts_with('-') {
                return Err(GitError::RefusedPath(object.chars().take(100).collect()));
            }
            input.extend_from_slice(object.as_bytes());
            input.push(b'\n');
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let inv = self.invocation("cat-file", &["cat-file", "--batch"]);
        run::stream(&inv, Some(input), |out| {
            let io = |e| GitError::io("cat-file", e);
            let mut total = 0u64;
            let mut header = String::new();
            for i in 0..count {
                header.clear();
                out.read_line(&mut header).map_err(io)?;
                let Some((kind, size)) = parse_header(&header) else {
                    // `<object> missing` (or `ambiguous`).
                    each(Blob::Missing);
                    continue;
                };
                let last = i + 1 == count;
                if kind != "blob" || size > limits.max_blob_bytes {
                    if last {
                        // Nothing more is wanted: git is stopped, not drained.
                        each(skipped(kind, size));
                        return Ok(());
                    }
                    let drained = std::io::copy(&mut out.take(size + 1), &mut std::io::sink());
                    drained.map_err(io)?;
                    each(skipped(kind, size));
                    continue;
                }
                total += size;
                if total > limits.max_total_bytes {
                    return Err(GitError::TooLarge {
                        command: "cat-file",
                        limit: limits.max_total_bytes,
                    });
                }
                // The size is known to be under the cap before this allocation.
                let mut data = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
                out.read_exact(&mut data).map_err(io)?;
                let mut newline = [0u8; 1];
                out.read_exact(&mut newline).map_err(io)?;
                each(Blob::Data(data));
            }
            Ok(())
        })
    }

    /// One file of `rev`, `None` when it does not exist, is not a file or is
    /// over `max_bytes`.
    pub fn read_file(
        &self,
        rev: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let object = format!("{}:{}", check::check_ref(rev)?, check::check_path(path)?);
        let limits = Limits {
            max_files: 1,
            max_total_bytes: max_bytes,
            max_blob_bytes: max_bytes,
        };
        let blob = self.read_blobs([object.as_str()], &limits)?.pop();
        Ok(match blob {
            Some(Blob::Data(data)) => Some(data),
            _ => None,
        })
    }
}

fn skipped(kind: &str, size: u64) -> Blob {
    if kind == "blob" {
        Blob::Oversize(size)
    } else {
        Blob::NotBlob
    }
}

/// `<id> <type> <size>\n` → (type, size).
fn parse_header(header: &str) -> Option<(&str, u64)> {
    let mut fields = header.split_whitespace();
    let (_id, kind, size) = (fields.next()?, fields.next()?, fields.next()?);
    Some((kind, size.parse().ok()?))
}

/// `log --name-only -z --format=%x1e%P` output: each commit starts with a
/// `\x1e<parents>` record; its paths follow, NUL-terminated (the first after
/// a newline). Commits without parents are dropped.
fn parse_log(out: &[u8]) -> Vec<LoggedCommit> {
    let mut commits: Vec<(bool, LoggedCommit)> = Vec::new();
    for record in out.split(|b| *b == 0) {
        if let Some(header) = record.strip_prefix(b"\x1e") {
            let split = header.iter().position(|b| *b == 0x1f);
            let (parents, message) = match split {
                Some(i) => (&header[..i], &header[i + 1..]),
                None => (header, &b""[..]),
            };
            commits.push((
                !parents.trim_ascii().is_empty(),
                LoggedCommit {
                    message: String::from_utf8_lossy(message.trim_ascii()).into_owned(),
                    paths: Vec::new(),
                },
            ));
            continue;
        }
        let path = record.strip_prefix(b"\n").unwrap_or(record);
        if let (Some((_, current)), false) = (commits.last_mut(), path.is_empty()) {
            current
                .paths
                .push(String::from_utf8_lossy(path).into_owned());
        }
    }
    commits
        .into_iter()
        .filter_map(|(has_parent, c)| has_parent.then_some(c))
        .collect()
}

/// `<mode> SP <type> SP <id> SP <size>\t<path>\0` → a regular file's entry.
fn parse_entry(record: &[u8]) -> Option<TreeEntry> {
    let record = record.strip_suffix(&[0]).unwrap_or(record);
    let tab = record.iter().position(|&b| b == b'\t')?;
    let meta = std::str::from_utf8(&record[..tab]).ok()?;
    let path = String::from_utf8_lossy(&record[tab + 1..]).into_owned();
    let mut fields = meta.split_whitespace();
    let (mode, kind, id, size) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    // 100644 / 100755 only: 120000 is a symlink, 160000 a submodule.
    if kind != "blob" || !mode.starts_with("100") {
        return None;
    }
    Some(TreeEntry {
        path,
        id: id.to_owned(),
        size: size.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_entries_are_regular_files_only() {
        let file = parse_entry(b"100644 blob abc       12\tsrc/a b.rs\0").unwrap();
        assert_eq!(
            file,
            TreeEntry {
                path: "src/a b.rs".into(),
                id: "abc".into(),
                size: 12
            }
        );
        assert!(parse_entry(b"120000 blob abc 3\tlink\0").is_none());
        assert!(parse_entry(b"160000 commit abc -\tsub\0").is_none());
        assert!(parse_entry(b"040000 tree abc -\tdir\0").is_none());
    }

    #[test]
    fn a_bare_repository_is_a_git_dir_and_a_working_tree_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("r.git");
        let work = dir.path().join("w");
        for (args, at) in [
            (["init", "--bare", "-q"], &bare),
            (["init", "-q", "."], &work),
        ] {
            std::fs::create_dir_all(at).unwrap();
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(at)
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        assert!(is_git_dir(&bare));
        assert!(!is_git_dir(&work), "a working tree is read through .git");
        assert!(is_git_dir(&work.join(".git")));
        std::fs::write(dir.path().join("HEAD"), "notes").unwrap();
        assert!(
            !is_git_dir(dir.path()),
            "a HEAD file alone is not a repository"
        );
    }

    #[test]
    fn log_records_are_split_into_commits_and_paths() {
        let out = b"\x1eab12\x1fFix a\n\nBecause.\n\0\na.py\0b c.py\0\x1ecd34\x1f\0\x1eef56\0\nd.rs\0\x1e\x1fRoot\0\nroot.rs\0";
        let logged = parse_log(out);
        assert_eq!(
            logged.iter().map(|c| c.paths.clone()).collect::<Vec<_>>(),
            vec![
                vec!["a.py".to_owned(), "b c.py".to_owned()],
                vec![],
                vec!["d.rs".to_owned()]
            ],
            "the parentless commit is left out"
        );
        assert_eq!(logged[0].message, "Fix a\n\nBecause.");
        assert_eq!(logged[1].message, "");
        assert_eq!(logged[2].message, "", "a record without a message");
        assert!(parse_log(b"").is_empty());
    }

    #[test]
    fn batch_headers_give_type_and_size() {
        assert_eq!(parse_header("abc blob 12\n"), Some(("blob", 12)));
        assert_eq!(parse_header("HEAD:x missing\n"), None);
    }
}
