//! The engine: acquires a repository, analyses each file once per blob id
//! (memory → disk → optional shared store) and builds the [`CodeMap`]; a git
//! tree's finished map is kept in memory and, with a shared store, written there
//! for the other replicas ([`crate::snapshot`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use contexten_git::{Limits, Policy, Repo, RepoCache, Resolve, UrlKind};

use rayon::prelude::*;
use serde::Serialize;

use crate::bm25::TermTable;
use crate::cache::{self, AnalysisStore, DiskStore};
use crate::cochange::CoChange;
use crate::codemap::{CodeMap, FileEntry, NameIds, lexical_terms};
use crate::error::CodemapError;
use crate::filter::{self, DEFAULT_MAX_FILE_BYTES, SkipReason};
use crate::lang::Language;
use crate::memory::{MemoryPool, Reservation};
use crate::parse::{self, ANALYSER_VERSION, FileAnalysis};
use crate::redact::{self, REDACTION_VERSION, RedactionCounts};
use crate::source::{self, Budget, GitToken, RepoSource, Snapshot, SourceFile};

mod pull;
mod stored;

pub use pull::{MAX_PULL_DIFF_BYTES, PULL_HISTORY_DEPTH, PullChanges};

/// Default of [`EngineConfig::max_stored_map_bytes`].
pub const DEFAULT_MAX_STORED_MAP_BYTES: usize = 16 << 20;

/// Progress of an analysis: files done out of total.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Files analysed so far.
    pub done: usize,
    /// Files to analyse.
    pub total: usize,
}

/// Called from worker threads as files are analysed (a CLI draws a progress bar).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Under `cache_dir`: one file per analysed blob (a disk hit refreshes its
/// modification time, so a size budget can go least recently used first).
pub const CACHE_ANALYSIS_DIR: &str = "analysis";
/// Under `cache_dir`: one bare repository per fetched URL (each fetch refreshes it).
pub const CACHE_GIT_DIR: &str = "git";
/// `git log` output [`Engine::history`] reads at most (200 commits of 20
/// paths take about 250 KiB); past it, the commits read so far count.
const MAX_HISTORY_LOG_BYTES: u64 = 8 << 20;

/// Engine settings; the worker fills them from its environment at start.
#[derive(Clone)]
pub struct EngineConfig {
    /// Disk cache of analyses and git clones; `None` keeps analyses in memory only
    /// and clones under the system temp directory.
    pub cache_dir: Option<PathBuf>,
    /// Accept local paths and `file://` URLs (`CONTEXTEN_ALLOW_LOCAL_REPOS`).
    pub allow_local: bool,
    /// Files above this size are skipped (decided from git's listing or the
    /// file's metadata, before it is read).
    pub max_file_bytes: u64,
    /// At most this many files are read; beyond it the snapshot is partial
    /// (`too_many_files`), parsed languages kept first, then path order.
    pub max_files: usize,
    /// At most this many bytes are read, all files together; beyond it the
    /// snapshot is partial (`total_size_cap`).
    pub max_total_bytes: u64,
    /// Bound of every git process (fetch, rev-parse, ls-tree, cat-file); the
    /// process and its helpers are killed when it is exceeded.
    pub git_timeout: Duration,
    /// Token for private GitHub repositories (`GITHUB_TOKEN`).
    pub github_token: Option<GitToken>,
    /// In-memory cache capacity, in files.
    pub memory_entries: u64,
    /// Extra shared store (Redis) consulted after the disk; it also holds finished
    /// whole-repository maps by git tree id.
    pub shared_store: Option<Arc<dyn AnalysisStore>>,
    /// A whole-repository map larger than this (compressed) is not written to the
    /// shared store (logged); replicas then rebuild it from per-file entries.
    pub max_stored_map_bytes: usize,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Memory that analyses in flight and the maps kept in memory may hold
    /// together, by [`crate::file_estimate`] (`CONTEXT_MEMORY_BUDGET_BYTES` in
    /// the context worker); a repository that does not fit is analysed in
    /// part. `None`: unbounded, and analyses are kept in memory by count
    /// (`memory_entries`) instead.
    pub memory_budget: Option<u64>,
    /// How long an analysis waits for others to give back budget before it
    /// fails with [`CodemapError::MemoryBusy`].
    pub memory_wait: Duration,
    /// Interned terms and names kept before the tables start anew
    /// ([`MAX_INTERNED`]).
    pub max_interned: usize,
    /// Commits of history each remote fetch brings and [`Engine::history`]
    /// reads for co-change statistics (`CONTEXT_HISTORY_DEPTH` in the context
    /// worker); 0 fetches the tip alone and reads no history.
    pub history_depth: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            allow_local: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: contexten_git::DEFAULT_MAX_FILES,
            max_total_bytes: contexten_git::DEFAULT_MAX_TOTAL_BYTES,
            git_timeout: contexten_git::DEFAULT_TIMEOUT,
            github_token: None,
            memory_entries: 200_000,
            shared_store: None,
            max_stored_map_bytes: DEFAULT_MAX_STORED_MAP_BYTES,
            progress: None,
            memory_budget: None,
            memory_wait: Duration::from_secs(120),
            max_interned: MAX_INTERNED,
            history_depth: 0,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("cache_dir", &self.cache_dir)
            .field("allow_local", &self.allow_local)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_files", &self.max_files)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("git_timeout", &self.git_timeout)
            .field("github_token", &self.github_token)
            .field("memory_entries", &self.memory_entries)
            .field("shared_store", &self.shared_store)
            .field("max_stored_map_bytes", &self.max_stored_map_bytes)
            .field("memory_budget", &self.memory_budget)
            .field("memory_wait", &self.memory_wait)
            .field("max_interned", &self.max_interned)
            .field("history_depth", &self.history_depth)
            .finish_non_exhaustive()
    }
}

/// Counters of work done, for tests, metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Files parsed with tree-sitter (cache misses).
    pub files_parsed: u64,
    /// Files whose analysis came from memory.
    pub files_reused_memory: u64,
    /// Files whose analysis came from disk or the shared store.
    pub files_reused_store: u64,
    /// Analyses answered by a cached whole-repository map (same git tree).
    pub maps_reused: u64,
    /// Analyses answered by a whole-repository map from the shared store (another
    /// replica's, or this one's before a restart): no file parsed or listed.
    pub maps_reused_shared: u64,
    /// Whole-repository maps written to the shared store.
    pub maps_stored: u64,
}

#[derive(Debug)]
struct CachedFile {
    analysis: Arc<FileAnalysis>,
    names: Arc<NameIds>,
    lexical: Arc<Vec<(u32, f32)>>,
    content: Arc<str>,
    redactions: Arc<RedactionCounts>,
    /// The [`Tables`] generation its ids belong to.
    generation: u64,
}

impl CachedFile {
    /// The map's entry for a file with this cached analysis.
    fn entry(&self, path: String, language: Language, blob_id: String) -> FileEntry {
        FileEntry {
            path,
            language,
            blob_id,
            content: self.content.clone(),
            redactions: self.redactions.clone(),
            analysis: self.analysis.clone(),
            lexical: self.lexical.clone(),
            names: self.names.clone(),
        }
    }
}

/// Strings interned by an engine since its tables were last replaced: past
/// this many terms and names together (about 75 bytes each) the next analysis
/// starts new, empty tables, so an engine that meets many repositories does
/// not keep every identifier it ever saw.
pub const MAX_INTERNED: usize = 1_000_000;

/// One generation of interned terms and names; an analysis uses one
/// throughout, and a cached file is reused only by analyses of its generation.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub terms: Arc<TermTable>,
    pub names: Arc<TermTable>,
    pub generation: u64,
}

impl Tables {
    fn new(generation: u64) -> Self {
        Self {
            terms: Arc::new(TermTable::default()),
            names: Arc::new(TermTable::default()),
            generation,
        }
    }
}

/// An in-memory analysis: owned by the cache, or (with a memory budget) only
/// referred to, alive while a map that holds it is, so that what the cache
/// keeps is always counted in some map's reservation.
#[derive(Debug, Clone)]
enum Held {
    Strong(Arc<CachedFile>),
    Weak(Weak<CachedFile>),
}

impl Held {
    fn get(&self) -> Option<Arc<CachedFile>> {
        match self {
            Self::Strong(c) => Some(c.clone()),
            Self::Weak(w) => w.upgrade(),
        }
    }
}

#[derive(Debug, Clone)]
struct LocalStat {
    len: u64,
    modified: Option<SystemTime>,
    blob_id: String,
}

/// Holds the caches; share one per process (it is `Send + Sync`).
pub struct Engine {
    config: EngineConfig,
    /// How git runs (captured at creation: timeout, local repositories, PATH).
    git: Policy,
    memory: moka::sync::Cache<String, Held>,
    /// The memory budget, when there is one.
    pool: Option<Arc<MemoryPool>>,
    maps: moka::sync::Cache<String, Arc<CodeMap>>,
    /// Co-change tables by commit, built once per revision in this process
    /// (cheap to rebuild: one bounded `git log`).
    histories: moka::sync::Cache<String, Arc<CoChange>>,
    disk: Option<DiskStore>,
    local: Mutex<HashMap<PathBuf, LocalStat>>,
    /// Interned terms and names, replaced by empty ones when they grow past
    /// `max_interned` (maps keep the tables they were built with).
    tables: Mutex<Tables>,
    parsed: AtomicU64,
    reused_memory: AtomicU64,
    reused_store: AtomicU64,
    maps_reused: AtomicU64,
    maps_reused_shared: AtomicU64,
    maps_stored: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    /// Creates an engine with empty memory caches.
    pub fn new(config: EngineConfig) -> Self {
        let disk = config
            .cache_dir
            .as_ref()
            .map(|d| DiskStore::new(d.join(CACHE_ANALYSIS_DIR)));
        Self {
            git: Policy::new(config.git_timeout, config.allow_local),
            memory: moka::sync::Cache::new(config.memory_entries),
            maps: moka::sync::Cache::new(16),
            histories: moka::sync::Cache::new(16),
            pool: config.memory_budget.map(MemoryPool::new),
            disk,
            local: Mutex::new(HashMap::new()),
            tables: Mutex::new(Tables::new(0)),
            config,
            parsed: AtomicU64::new(0),
            reused_memory: AtomicU64::new(0),
            reused_store: AtomicU64::new(0),
            maps_reused: AtomicU64::new(0),
            maps_reused_shared: AtomicU64::new(0),
            maps_stored: AtomicU64::new(0),
        }
    }

    /// Work counters since creation.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            files_parsed: self.parsed.load(Ordering::Relaxed),
            files_reused_memory: self.reused_memory.load(Ordering::Relaxed),
            files_reused_store: self.reused_store.load(Ordering::Relaxed),
            maps_reused: self.maps_reused.load(Ordering::Relaxed),
            maps_reused_shared: self.maps_reused_shared.load(Ordering::Relaxed),
            maps_stored: self.maps_stored.load(Ordering::Relaxed),
        }
    }

    /// Drops the in-memory analyses and maps (disk and shared stores stay).
    pub fn clear_memory(&self) {
        self.memory.invalidate_all();
        self.maps.invalidate_all();
    }

    /// Acquires and analyses a repository.
    pub fn analyse(&self, src: &RepoSource) -> Result<Arc<CodeMap>, CodemapError> {
        self.analyse_pinned(src, Vec::new())
    }

    /// [`analyse`](Self::analyse), with git connecting only to `pins` (the
    /// addresses the caller's outbound check accepted) for a remote source.
    pub fn analyse_pinned(
        &self,
        src: &RepoSource,
        pins: Vec<Resolve>,
    ) -> Result<Arc<CodeMap>, CodemapError> {
        self.analyse_revision(src, pins).map(|(map, _)| map)
    }

    /// [`analyse_pinned`](Self::analyse_pinned), also giving the commit that
    /// was read for a git source: a map is shared by every commit with the
    /// same tree, so its own [`CodeMap::commit`] may name another one.
    pub fn analyse_revision(
        &self,
        src: &RepoSource,
        pins: Vec<Resolve>,
    ) -> Result<(Arc<CodeMap>, Option<String>), CodemapError> {
        if src.is_local() && !self.config.allow_local {
            return Err(CodemapError::LocalRepoRefused);
        }
        let t = std::time::Instant::now();
        let tables = self.tables();
        let mut snap = match src {
            RepoSource::Local(root) => self.read_local(root)?,
            RepoSource::Git { url, reference } => {
                let cache = self.repo_cache();
                let token = self.config.github_token.as_ref();
                let rev = source::resolve_git(url, reference.as_deref(), &cache, token, pins)?;
                if let Some(map) = self.maps.get(&rev.tree) {
                    self.maps_reused.fetch_add(1, Ordering::Relaxed);
                    return Ok((map, Some(rev.commit)));
                }
                if let Some(map) = self.load_map(&rev, &tables)? {
                    self.maps_reused_shared.fetch_add(1, Ordering::Relaxed);
                    self.maps.insert(rev.tree, map.clone());
                    return Ok((map, Some(rev.commit)));
                }
                // Read on a parsing thread: the texts become the map's
                // contents, and the allocator serves each thread from its own
                // arena, so text read here is memory the parsing threads reuse
                // and count once (the stdlib from git peaks at 2.97x its
                // source instead of 3.13x, eval/README.md).
                rayon::scope(|_| {
                    self.with_budget(|budget| source::read_git(&rev, &self.limits(), budget))
                })?
            }
        };
        let read_ms = t.elapsed().as_secs_f64() * 1e3;
        let tree = snap.tree.clone();
        let commit = snap.commit.clone();
        let t = std::time::Instant::now();
        let reservation = snap.reservation.take();
        let mut map = self.build(snap, &tables);
        map.reservation = reservation;
        if let RepoSource::Local(root) = src {
            self.remember_blob_ids(root, &map);
        }
        let map = Arc::new(map);
        tracing::debug!(read_ms, build_ms = t.elapsed().as_secs_f64() * 1e3, stats = ?self.stats(), "repository analysed");
        if let Some(t) = tree {
            // A partial map depends on the caps, which its store key does not
            // name: it stays in this replica's memory only.
            if !source::is_partial(map.skipped()) {
                self.store_map(&t, &map);
            }
            self.maps.insert(t, map.clone());
        }
        Ok((map, commit))
    }

    /// Where remote repositories are fetched to.
    pub(crate) fn repo_cache(&self) -> RepoCache {
        let clones = self
            .config
            .cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("contexten-codemap"));
        RepoCache::new(clones.join(CACHE_GIT_DIR), self.git.clone())
            .with_depth(self.config.history_depth)
    }

    /// Co-change statistics over the last [`EngineConfig::history_depth`]
    /// commits up to `commit` (as [`analyse_revision`](Self::analyse_revision)
    /// gave it for `src`), read from the repository that call fetched, without
    /// fetching again. `None` when the depth is 0, `src` is a plain directory,
    /// or the history at hand has no usable commit (a depth-1 fetch). Built
    /// once per commit and kept in memory.
    pub fn history(
        &self,
        src: &RepoSource,
        commit: &str,
    ) -> Result<Option<Arc<CoChange>>, CodemapError> {
        let depth = self.config.history_depth;
        let RepoSource::Git { url, .. } = src else {
            return Ok(None);
        };
        if depth == 0 {
            return Ok(None);
        }
        if src.is_local() && !self.config.allow_local {
            return Err(CodemapError::LocalRepoRefused);
        }
        if let Some(known) = self.histories.get(commit) {
            return Ok((!known.is_empty()).then_some(known));
        }
        let repo = match contexten_git::classify_url(url)? {
            UrlKind::Local(_) => Repo::open_local(url, &self.git)?,
            UrlKind::Remote => {
                let cache = self.repo_cache();
                cache.open(&cache.dir_of(url))?
            }
        };
        let logged = repo.history(commit, depth, MAX_HISTORY_LOG_BYTES)?;
        let commits: Vec<(&str, &[String])> = logged
            .iter()
            .map(|c| (c.message.as_str(), c.paths.as_slice()))
            .collect();
        let table = Arc::new(CoChange::from_history(&commits));
        self.histories.insert(commit.to_owned(), table.clone());
        Ok((!table.is_empty()).then_some(table))
    }

    /// The read caps of [`EngineConfig`].
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_files: self.config.max_files,
            max_total_bytes: self.config.max_total_bytes,
            max_blob_bytes: self.config.max_file_bytes,
        }
    }

    /// Builds a map from an already-read snapshot.
    pub(crate) fn build(&self, mut snap: Snapshot, tables: &Tables) -> CodeMap {
        let total = snap.files.len();
        let done = AtomicUsize::new(0);
        let mut files = std::mem::take(&mut snap.files);
        // Largest first, so no big file is left for one thread at the end while
        // the others idle (the map sorts files by path afterwards).
        files.sort_by_key(|f| std::cmp::Reverse(f.size));
        let results: Vec<Result<FileEntry, SkipReason>> = files
            .into_par_iter()
            .map(|f| {
                let r = self.analyse_file(f, tables);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(p) = &self.config.progress {
                    if d % 64 == 0 || d == total {
                        p(Progress { done: d, total });
                    }
                }
                r
            })
            .collect();
        let mut files = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(f) => files.push(f),
                Err(reason) => snap.skip(reason),
            }
        }
        CodeMap::build(
            files,
            snap.commit,
            snap.skipped,
            tables.terms.clone(),
            tables.names.clone(),
        )
    }

    /// The current tables, new ones first if they have grown past
    /// [`EngineConfig::max_interned`].
    fn tables(&self) -> Tables {
        let mut t = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.terms.len() + t.names.len() > self.config.max_interned {
            tracing::info!(
                terms = t.terms.len(),
                names = t.names.len(),
                "interned strings pruned"
            );
            *t = Tables::new(t.generation + 1);
            // Their entries hold ids of the old tables.
            self.memory.invalidate_all();
            self.maps.invalidate_all();
        }
        t.clone()
    }

    fn analyse_file(&self, mut f: SourceFile, tables: &Tables) -> Result<FileEntry, SkipReason> {
        let language = Language::from_path(&f.path);
        let mut fresh = None;
        if f.text.is_none() && f.blob_id.is_empty() {
            // A working-directory file read only now (see `read_local`).
            let path = f.origin.as_ref().ok_or(SkipReason::Binary)?;
            let b = std::fs::read(path).map_err(|_| SkipReason::Binary)?;
            if let Some(reason) = filter::skip_by_content(&b, self.config.max_file_bytes) {
                return Err(reason);
            }
            f.blob_id = source::blob_id(&b);
            fresh = Some(utf8(b)?);
        }
        let mut key = file_key(&f.blob_id, language);
        let cached = if let Some(c) = self.cached(&key, tables.generation) {
            self.reused_memory.fetch_add(1, Ordering::Relaxed);
            c
        } else {
            let text = match f.text.take().or(fresh) {
                Some(t) => t,
                None => {
                    // Evicted from memory: read again (and re-key, in case it changed).
                    let path = f.origin.as_ref().ok_or(SkipReason::Binary)?;
                    let b = std::fs::read(path).map_err(|_| SkipReason::Binary)?;
                    f.blob_id = source::blob_id(&b);
                    key = file_key(&f.blob_id, language);
                    utf8(b)?
                }
            };
            let mut counts = RedactionCounts::new();
            // Most files have no secret: their content is the buffer they were
            // read into. A copy made here, on a parsing thread, would not reuse
            // the memory the reader's thread frees (peak memory, eval/README.md).
            let content: Arc<str> = match redact::redact(&text, &mut counts) {
                std::borrow::Cow::Borrowed(_) => text.clone(),
                std::borrow::Cow::Owned(masked) => Arc::from(masked),
            };
            drop(text);
            // Nothing keeps the analysis: its content terms and references go
            // from the content to their ids without a string each.
            let (analysis, drafts) = match self.load(&key) {
                Some(a) => {
                    self.reused_store.fetch_add(1, Ordering::Relaxed);
                    (a, None)
                }
                None if !self.keeps_analyses() => {
                    self.parsed.fetch_add(1, Ordering::Relaxed);
                    let (a, refs) = parse::analyse_lean(&content, language);
                    (a, Some(refs))
                }
                None => {
                    self.parsed.fetch_add(1, Ordering::Relaxed);
                    let a = parse::analyse(&content, language);
                    self.save(&key, &a);
                    (a, None)
                }
            };
            let mut lexical = if drafts.is_some() {
                parse::with_content_terms(&content, |content_terms| {
                    lexical_terms(&analysis, content_terms, &tables.terms)
                })
            } else {
                let content_terms = analysis.terms.iter().map(|(t, c)| (t.as_str(), *c));
                lexical_terms(&analysis, content_terms, &tables.terms)
            };
            lexical.shrink_to_fit();
            let lexical = Arc::new(lexical);
            let names = Arc::new(match &drafts {
                Some(refs) => NameIds::with_refs(&analysis, refs, &tables.names),
                None => NameIds::new(&analysis, &tables.names),
            });
            drop(drafts);
            // The term strings now live as ids in `lexical`, the references
            // in `names`; the stores keep them.
            let mut analysis = analysis;
            compact(&mut analysis);
            let c = Arc::new(CachedFile {
                names,
                lexical,
                analysis: Arc::new(analysis),
                content,
                redactions: Arc::new(counts),
                generation: tables.generation,
            });
            self.keep(key, &c);
            c
        };
        Ok(cached.entry(f.path, language, f.blob_id))
    }

    /// A file's analysis from memory, made with tables of `generation`.
    fn cached(&self, key: &str, generation: u64) -> Option<Arc<CachedFile>> {
        self.memory
            .get(key)
            .and_then(|h| h.get())
            .filter(|c| c.generation == generation)
    }

    /// Keeps a file's analysis in memory: owned without a budget, referred to
    /// with one (the map that holds it has it in its reservation).
    fn keep(&self, key: String, c: &Arc<CachedFile>) {
        let held = if self.pool.is_some() {
            Held::Weak(Arc::downgrade(c))
        } else {
            Held::Strong(c.clone())
        };
        self.memory.insert(key, held);
    }

    /// The budget as the readers apply it, when there is one.
    fn with_budget<R>(&self, read: impl FnOnce(Option<&Budget<'_>>) -> R) -> R {
        let Some(pool) = &self.pool else {
            return read(None);
        };
        let reserve = |bytes: u64| self.reserve(pool, bytes);
        read(Some(&Budget {
            bytes: pool.budget(),
            reserve: &reserve,
        }))
    }

    /// Reserves `bytes` of the budget, dropping the cached maps if they hold
    /// the room, then waiting up to `memory_wait` for analyses in flight.
    pub(crate) fn reserve(
        &self,
        pool: &Arc<MemoryPool>,
        bytes: u64,
    ) -> Result<Reservation, CodemapError> {
        pool.reserve(bytes, self.config.memory_wait, || {
            self.maps.invalidate_all();
            self.maps.run_pending_tasks();
        })
        .ok_or(CodemapError::MemoryBusy {
            needed: bytes,
            budget: pool.budget(),
        })
    }

    fn stores(&self) -> impl Iterator<Item = &dyn AnalysisStore> {
        self.disk
            .iter()
            .map(|d| d as &dyn AnalysisStore)
            .chain(self.config.shared_store.iter().map(|s| s.as_ref()))
    }

    fn load(&self, key: &str) -> Option<FileAnalysis> {
        for store in self.stores() {
            match store.get(key) {
                Ok(Some(bytes)) => match cache::unpack_analysis(&bytes) {
                    Ok(a) => return Some(a),
                    Err(e) => tracing::warn!(error = %e, "discarding unreadable cached analysis"),
                },
                Ok(None) => {}
                Err(e) => store_failed(&e, "read"),
            }
        }
        None
    }

    /// Whether a disk or shared store keeps the files' analyses.
    fn keeps_analyses(&self) -> bool {
        self.disk.is_some() || self.config.shared_store.is_some()
    }

    fn save(&self, key: &str, a: &FileAnalysis) {
        // Serialising costs ~4 % of a cold analysis: only when something keeps it.
        // (Packing costs no more than it saves in writing: a stdlib analysis with a
        // disk cache took the same CPU time, and 12.6 MB of disk instead of 55.6.)
        if !self.keeps_analyses() {
            return;
        }
        let bytes = match cache::pack_analysis(a) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "analysis not cached"),
        };
        for store in self.stores() {
            if let Err(e) = store.put(key, &bytes) {
                store_failed(&e, "write");
            }
        }
    }

    /// The blob ids of a working directory's files read during the analysis,
    /// so that unchanged ones are not read next time.
    fn remember_blob_ids(&self, root: &std::path::Path, map: &CodeMap) {
        let Ok(mut m) = self.local.lock() else {
            return;
        };
        for f in map.files() {
            if let Some(s) = m.get_mut(&root.join(&f.path)) {
                if s.blob_id.is_empty() {
                    s.blob_id.clone_from(&f.blob_id);
                }
            }
        }
    }

    /// Lists a working directory; its files are read as they are analysed,
    /// and unchanged ones (same size and mtime as last time) not at all.
    fn read_local(&self, root: &std::path::Path) -> Result<Snapshot, CodemapError> {
        let mut snap = Snapshot::default();
        let listed =
            self.with_budget(|budget| source::list_local(root, &self.limits(), budget, &mut snap))?;
        let previous = self.local.lock().map(|m| m.clone()).unwrap_or_default();
        let max = self.config.max_file_bytes;
        // Unchanged files (same size and mtime) are not read: their blob id is known
        // and their analysis and content are in memory.
        type Read = (
            String,
            PathBuf,
            Result<(LocalStat, Option<Arc<str>>), SkipReason>,
        );
        let read: Vec<Read> = listed
            .into_par_iter()
            .map(|(rel, abs, meta)| {
                let modified = meta.modified().ok();
                if let Some(p) = previous.get(&abs) {
                    if p.len == meta.len() && p.modified == modified && modified.is_some() {
                        return (rel, abs, Ok((p.clone(), None)));
                    }
                }
                if meta.len() > max {
                    return (rel, abs, Err(SkipReason::Oversize));
                }
                // Read when it is analysed, not now: a whole tree's bytes read
                // up front were all held at once before the first file was
                // analysed (as much again as the contents the map keeps). Its
                // blob id is known then (`analyse_file`).
                let stat = LocalStat {
                    len: meta.len(),
                    modified,
                    blob_id: String::new(),
                };
                (rel, abs, Ok((stat, None)))
            })
            .collect();
        let mut next = HashMap::with_capacity(read.len());
        for (rel, abs, r) in read {
            match r {
                Ok((stat, text)) => {
                    snap.files.push(SourceFile {
                        path: rel,
                        blob_id: stat.blob_id.clone(),
                        text,
                        origin: Some(abs.clone()),
                        size: stat.len,
                    });
                    next.insert(abs, stat);
                }
                Err(reason) => snap.skip(reason),
            }
        }
        if let Ok(mut m) = self.local.lock() {
            // Keep other roots' entries; replace this root's. Bounded: past
            // `max_files` entries the other roots are forgotten (they are
            // only read again in full next time).
            m.retain(|k, _| !k.starts_with(root));
            if m.len() + next.len() > self.config.max_files {
                m.clear();
            }
            m.extend(next);
        }
        Ok(snap)
    }
}

/// Drops what a map keeps elsewhere (terms in the lexical index, references
/// in [`NameIds`]) and the vectors' spare capacity.
pub(crate) fn compact(a: &mut FileAnalysis) {
    a.terms = Vec::new();
    a.refs = Vec::new();
    a.symbols.shrink_to_fit();
    for s in &mut a.symbols {
        s.signature.shrink_to_fit();
        s.doc.shrink_to_fit();
    }
    a.imports.shrink_to_fit();
}

/// The store key of one file's analysis: the analysis is of the *redacted*
/// content, so new redaction rules must miss entries made under the old ones.
fn file_key(blob_id: &str, language: Language) -> String {
    format!(
        "{blob_id}-{}-v{ANALYSER_VERSION}-r{REDACTION_VERSION}",
        language.name()
    )
}

/// Logs a failed store call: a warning, or a debug line while the store pauses
/// after a failure it already reported (an analysis makes thousands of calls).
fn store_failed(e: &CodemapError, op: &'static str) {
    if matches!(e, CodemapError::CachePaused) {
        tracing::debug!(op, "analysis store skipped");
    } else {
        tracing::warn!(error = %e, op, "analysis store failed; going on without it");
    }
}

/// Bytes read from a file as shared text (one copy, into the `Arc`); not
/// UTF-8 is a skip.
fn utf8(bytes: Vec<u8>) -> Result<Arc<str>, SkipReason> {
    String::from_utf8(bytes)
        .map(Arc::from)
        .map_err(|_| SkipReason::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_key_changes_with_the_analyser_and_the_redaction_rules() {
        let key = file_key("3b18e512dba79e4c8300dd08aeb37f8e728b8dad", Language::Rust);
        assert!(
            key.starts_with("3b18e512dba79e4c8300dd08aeb37f8e728b8dad-"),
            "{key}"
        );
        assert!(key.contains(&format!("-v{ANALYSER_VERSION}")), "{key}");
        assert!(key.ends_with(&format!("-r{REDACTION_VERSION}")), "{key}");
        assert_ne!(
            key,
            file_key("3b18e512dba79e4c8300dd08aeb37f8e728b8dad", Language::Python)
        );
    }
}
