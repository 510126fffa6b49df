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
    /// A git command failed.
    #[error("git {command} failed: {stderr}")]
    Git {
        /// The git subcommand.
        command: String,
        /// Its (truncated) error output.
        stderr: String,
    },
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
}

impl CodemapError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn git(command: &str, stderr: &str) -> Self {
        Self::Git {
            command: command.to_owned(),
            stderr: stderr.to_owned(),
        }
    }
}
