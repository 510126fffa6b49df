//! Hardened git for untrusted repositories (see README "Security model"): the
//! one way the context worker (through codemap) and the generator worker run
//! git.
//!
//! Every git process
//! - gets its inputs checked first: refs against git's ref-name rules
//!   ([`check_ref`]: `--upload-pack=…` never reaches git), URLs by kind
//!   ([`classify_url`]: no `ext::`, no unknown schemes, local only when
//!   allowed), paths as plain relative paths; `--` / `--end-of-options` stand
//!   before URLs and revisions;
//! - runs in an empty environment plus an allow-list (PATH, `HOME=/nonexistent`,
//!   `LANG=C`, no prompts, no system or global config) and a fixed
//!   configuration through `GIT_CONFIG_COUNT` (no hooks, submodules,
//!   redirects, credential helpers or transports beyond https/http/ssh/git, and
//!   `file` only when local repositories are allowed); an [`AuthHeader`] and
//!   [`Resolve`] pins travel the same way, never in argv;
//! - is bounded by [`Policy::timeout`]: it runs in its own process group and a
//!   watchdog kills the group (git and its helpers) when the time is up,
//!   giving [`GitError::Timeout`].
//!
//! Reading is size-first: [`Repo::select`] decides from `ls-tree -l` sizes
//! which files fit the [`Limits`] (blob size, file count, total bytes; what
//! does not fit is counted in [`Skipped`]), and only then [`Repo::read_blobs`]
//! reads them with `cat-file --batch`, checking each header's size again.
//!
//! Fetches ([`RepoCache::fetch`]) go shallowly (the tip, or the last
//! [`RepoCache::with_depth`] commits, whose changed paths
//! [`Repo::changed_paths`] lists) into one bare repository per
//! URL, into a ref of their own, under a per-repository file lock, so
//! concurrent fetches (threads or processes) neither fail nor read each
//! other's commit.
//!
//! Errors carry a stable [`Reason`]; git's stderr is only in
//! [`GitError::stderr`], for logs. The API is blocking (codemap runs inside
//! `spawn_blocking`; async callers wrap calls in `tokio::task::spawn_blocking`).

mod check;
mod error;
mod fetch;
mod policy;
mod repo;
mod run;
mod select;

pub use check::{UrlKind, check_path, check_ref, classify_url};
pub use error::{GitError, Reason, Stderr};
pub use fetch::{Fetched, RepoCache};
pub use policy::{AuthHeader, DEFAULT_TIMEOUT, Policy, Remote, Resolve, SAFE_HOME};
pub use repo::{Blob, Changes, LoggedCommit, Repo, Resolved, Selection, TreeEntry, is_git_dir};
pub use select::{
    DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_FILES, DEFAULT_MAX_TOTAL_BYTES, Limits, Selector, Skipped,
};
