//! Contexten's context engine: tree-sitter code intelligence that finds what a
//! request is about and packs it into a token-budgeted prompt.
//!
//! Place in the flow: `services/context-worker` (and its `query` / `summary` /
//! `prompt` CLI subcommands) calls [`Engine::analyse`] on the task's repository,
//! then [`CodeMap::query`] with the request and [`assemble_prompt`], and puts the
//! ranked items, the prompt, its token count and the redaction counts into the
//! envelope's context.
//!
//! Main types:
//! - [`Engine`] / [`EngineConfig`]: acquisition ([`RepoSource`]: local path or git
//!   URL + ref, shallow fetch through `contexten-git` with its timeout, blob ids;
//!   files chosen by size under the file, total and per-file caps before any is
//!   read, a capped snapshot counted as partial), per-file analysis cached by
//!   (blob id, [`ANALYSER_VERSION`], redaction rules) in memory → disk → a shared
//!   [`AnalysisStore`] (Redis with the `redis` feature), so a new commit re-parses
//!   only changed files; a git tree's finished map is kept in memory and in the
//!   shared store (compressed, keyed by tree id), so another replica answers the
//!   same commit without listing or parsing anything.
//! - [`CodeMap`]: files, definitions with signatures and docs, imports, the
//!   cross-file reference graph; [`CodeMap::summary`], [`CodeMap::file_summary`],
//!   [`CodeMap::symbol_summary`].
//! - [`Query`] → [`RankedFile`]s: BM25 over code-aware terms fused with
//!   personalised PageRank and explicit mentions (paths, symbols, stack frames,
//!   error messages), each result with its [`ScoreComponents`] and reasons.
//! - [`AssembledPrompt`]: summary, skeletons and bodies filled by binary search
//!   under a tiktoken budget; the request always fits.
//! - [`PullChanges`] ([`Engine::pull_request_changes`]): the files a pull
//!   request's head changes against the merge base with its base ref, and the
//!   diff (sensitive files left out, the rest redacted);
//!   [`Engine::analyse_revision`] gives the commit a map was read at. A bare
//!   repository (`HEAD` + `objects/`) is always read as git.
//!
//! Memory: with [`EngineConfig::memory_budget`] an analysis and the maps the
//! engine keeps never hold more than the budget by [`file_estimate`]; a
//! repository that does not fit is analysed in part (most valuable files
//! first, the rest counted as `memory_budget`, so [`is_partial`] is true).
//!
//! Secrets are redacted from file contents before anything is parsed, cached or
//! returned ([`redact`]); `.env*`, key and certificate files are never read.

mod bm25;
mod cache;
mod cochange;
mod codemap;
mod engine;
mod error;
mod filter;
mod graph;
mod lang;
mod memory;
mod parse;
mod prompt;
mod query;
/// Secret redaction lives with the other trust boundaries (contexten-trust);
/// re-exported so the analysis and its callers name one module.
pub use contexten_trust::redact;
mod request;
mod snapshot;
mod source;
mod summary;
mod tokens;

#[cfg(feature = "redis")]
pub use cache::RedisStore;
pub use cache::{AnalysisStore, DiskStore};
pub use cochange::{CoChange, PastCommit};
pub use codemap::{CodeMap, FileEntry, SymbolId};
/// git's errors as [`CodemapError::Git`] carries them.
pub use contexten_git::{GitError, Reason as GitReason, Resolve};
pub use engine::{
    CACHE_ANALYSIS_DIR, CACHE_GIT_DIR, DEFAULT_MAX_STORED_MAP_BYTES, Engine, EngineConfig,
    EngineStats, MAX_INTERNED, MAX_PULL_DIFF_BYTES, PULL_HISTORY_DEPTH, Progress, ProgressFn,
    PullChanges,
};
pub use error::CodemapError;
pub use filter::{DEFAULT_MAX_FILE_BYTES, SkipReason};
pub use lang::Language;
pub use memory::{ESTIMATE_FIXED, ESTIMATE_PER_FILE, ESTIMATE_PER_SOURCE_BYTE, file_estimate};
pub use parse::{ANALYSER_VERSION, FileAnalysis, ImportRef, RefSite, SymbolDef, SymbolKind};
pub use prompt::{AssembledPrompt, IncludedItem, ItemKind, assemble_prompt, tokenizer_for};
pub use query::{
    Hints, Query, RERANK_DEPTH, RERANK_FEATURES, RankParams, RankedFile, RankedSymbol,
    ScoreComponents, baseline_rank, code_aware_rank,
};
pub use request::Request;
pub use source::{GitToken, RepoSource, blob_id, is_partial};
pub use summary::{
    CentralSymbol, CodebaseSummary, DirCount, FileSummary, LanguageCount, SymbolInfo,
    SymbolSummary, Usage,
};
pub use tokens::{code_terms, plain_terms};
