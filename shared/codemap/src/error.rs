//! The crate's error type.

use std::path::Path;

/// What can go wrong while acquiring or analysing a repository.
#[derive(Debug, thiserror::Error)]
pub enum CodemapError {
    /// A local path or `file://` URL was given while local repositories are not allowed.
    #[error(
        "local repositories are not allowed (set CONTEXTEN_ALLOW_LOCAL_REPOS=1 to accept them)"
    )]
    LocalRepoRefused,
    /// The repository path does not exist or is not a directory.
    #[error("repository not found: {0}")]
    NotFound(String),
    /// Reading a git repository failed. The message is git's short reason
    /// (`timeout`, `not_found`, `refused_ref`, ...), never git's output; that
    /// is in [`contexten_git::GitError::stderr`], for logs.
    #[error(transparent)]
    Git(#[from] contexten_git::GitError),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cache store failed.
    #[error("analysis cache error: {0}")]
    Cache(String),
    /// A shared store is not being tried for a while after it failed.
    #[error("analysis cache paused after a failure")]
    CachePaused,
    /// Other analyses held the memory budget for longer than the engine waits
    /// for it (retry later).
    #[error("memory budget busy: {needed} bytes needed, {budget} budgeted")]
    MemoryBusy {
        /// Estimate of this analysis.
        needed: u64,
        /// The engine's budget.
        budget: u64,
    },
}

impl CodemapError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
