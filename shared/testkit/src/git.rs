//! Git test repositories made with the machine's `git`, with a fixed
//! identity and no signing, so they build the same on any machine.

use std::path::{Path, PathBuf};

/// Runs `git -C <dir> <args>` with a test identity; panics with git's stderr
/// on failure and returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository on branch `main` in a directory of its own (a temporary one,
/// removed on drop, unless made [`at`](Self::at) a given path):
/// `GitRepo::new().file("a.py", "x = 1\n").commit("add a")`.
#[derive(Debug)]
pub struct GitRepo {
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl GitRepo {
    /// An empty repository in a fresh temporary directory.
    pub fn new() -> GitRepo {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let root = temp.path().to_path_buf();
        git(&root, &["init", "-q", "-b", "main"]);
        GitRepo {
            root,
            _temp: Some(temp),
        }
    }

    /// An empty repository at `root` (created if missing), kept after drop.
    pub fn at(root: &Path) -> GitRepo {
        std::fs::create_dir_all(root).expect("the repository's directory");
        git(root, &["init", "-q", "-b", "main"]);
        GitRepo {
            root: root.to_path_buf(),
            _temp: None,
        }
    }

    /// Writes `path` (parents created), to be committed by the next `commit`.
    pub fn file(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let full = self.root.join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
        self
    }

    /// Writes each `(path, content)`.
    pub fn files<C: AsRef<[u8]>>(&self, files: &[(&str, C)]) -> &Self {
        for (path, content) in files {
            self.file(path, content);
        }
        self
    }

    /// Commits everything in the work tree; returns the commit's id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.root, &["add", "-A"]);
        git(
            &self.root,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.root, args)
    }

    /// The id of `HEAD`.
    pub fn head(&self) -> String {
        git(&self.root, &["rev-parse", "HEAD"])
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `file://<path>`
    pub fn file_url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_files_on_main() {
        let repo = GitRepo::new();
        let first = repo.file("src/a.py", "x = 1\n").commit("add a");
        let second = repo.files(&[("b.txt", "b")]).commit("add b");
        assert_ne!(first, second);
        assert_eq!(repo.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");
        assert_eq!(repo.git(&["ls-files"]), "b.txt\nsrc/a.py");
        assert_eq!(repo.git(&["show", "HEAD~1:src/a.py"]), "x = 1");
    }
}
