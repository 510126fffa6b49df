//! The context stage: reads the task's repository with codemap (tree-sitter
//! analysis, cached per blob), ranks the files and symbols the request is about,
//! assembles a token-budgeted, secret-free prompt, fills the envelope's
//! `context` and forwards the task to generate or agent by its strategy.
//!
//! Caching (see the README's context-worker section): per-file analyses by blob id
//! in memory, on disk under `CONTEXT_CACHE_DIR` (kept under
//! `CONTEXT_CACHE_MAX_BYTES`, least recently used first) and in Redis
//! (`<CONTEXTEN_PREFIX>:codemap:<blob>-<language>-v<n>-r<n>`); finished whole-repository
//! maps by git tree id in memory and in Redis (`<prefix>:codemap:map-<tree>-…`), so
//! a replica that meets a tree another one analysed parses nothing. Redis entries
//! expire `CONTEXT_CACHE_TTL_SECS` (maps: `CONTEXT_MAP_TTL_SECS`) after they are
//! written and are sealed with
//! `CACHE_ENCRYPTION_KEY` when set. A Redis failure is logged and the task goes on
//! with memory and disk.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CONTEXT_CACHE_DIR` | per-file analyses and fetched repositories | `<tmp>/contexten/context-cache` |
//! | `CONTEXT_CACHE_MAX_BYTES` | size budget of `CONTEXT_CACHE_DIR`, checked every 5 minutes; least recently used entries go first, down to 80 % (67108864–17592186044416) | `3221225472` (3 GiB) |
//! | `CONTEXT_CACHE_TTL_SECS` | time to live of the per-file analyses in Redis (60–7776000) | `604800` (7 days) |
//! | `CONTEXT_MAP_TTL_SECS` | time to live of the whole-repository maps in Redis (60–7776000) | `86400` (1 day) |
//! | `CACHE_ENCRYPTION_KEY` | AES-256-GCM key for the Redis entries: 32 bytes as 64 hex chars or base64 | unset (plain) |
//! | `CONTEXT_TOP_K` | ranked files kept (1–100) | `10` |
//! | `CONTEXT_PROMPT_BUDGET_TOKENS` | prompt budget (256–200000) | `6000` |
//! | `LLM_MODEL` | picks the tokenizer (o200k for gpt-4o/4.1/o-series/gpt-5, else cl100k) | `gpt-4.1` |
//! | `CONTEXTEN_ALLOW_LOCAL_REPOS` | accept local paths and `file://` URLs | `0` |
//! | `GITHUB_TOKEN` | fetches private GitHub repositories (never logged, never in a URL); or `GITHUB_TOKEN_FILE`, re-read when it changes | unset |
//! | `CONTEXT_GIT_TIMEOUT_SECS` | bound of each git process (fetch, rev-parse, ls-tree, cat-file); it is killed with its helpers after (1–3600) | `120` |
//! | `CONTEXT_MAX_FILES` | files read per repository; beyond it the analysis is partial and says so (1–1000000) | `50000` |
//! | `CONTEXT_MAX_TOTAL_BYTES` | bytes read per repository, all files together; beyond it the analysis is partial and says so (1048576–17179869184) | `268435456` (256 MiB) |
//! | `CONTEXT_MEMORY_BUDGET_BYTES` | memory the analyses in flight and the maps kept in memory may hold together, by codemap's estimate (4 bytes per source byte + 4 KiB per file + 64 MiB); a repository over it is analysed in part, most valuable files first, and the answer says "analysed N of M files". Set it to about 60–70 % of the container's memory limit (67108864–1099511627776) | `1073741824` (1 GiB) |
//! | `CONTEXT_HISTORY_DEPTH` | commits of history fetched with each repository and read for the ranking (the files of past commits whose messages read like the request, files that change together, how often and how recently each changed); `0` fetches the tip alone and ranks from the tree only (0–5000) | `200` |
//! | `GITHUB_API_URL` | GitHub API base, asked for a pull request's base branch when a comment's payload lacks it | `https://api.github.com` |
//!
//! History: with `CONTEXT_HISTORY_DEPTH` above 0, each remote fetch brings
//! that many commits (a bounded shallow fetch, under the same URL, address and
//! timeout rules as the tip alone) and the ranking uses codemap's similar past
//! commits, co-change, churn and recency statistics over them
//! (`CodeMap::query_history`; `shared/codemap/eval/README.md` measures the
//! history levers at +5.1 points of R@10 on its test set; a local git
//! repository is read in place, up to that depth); the table is built once per
//! commit and kept in this process's memory. A plain directory, or a history
//! with no commit beyond its shallow boundary, is ranked from the tree alone,
//! as is a task whose history cannot be read (logged);
//! `context.extra.history` is `true` when the history was used.
//!
//! The context records the commit it read in `context.extra.commit`. A
//! pull request task (see [`pull`]) ranks the files the PR changes first and
//! puts the PR's diff against its base in the prompt, within half the budget;
//! `context.extra.pull_request` describes what was compared.
//!
//! Files are chosen from git's listing by size before any is read (a file over
//! codemap's 1 MiB per-file cap is skipped as `oversize`), parsed languages
//! first, then path order; then, when their estimate is over
//! `CONTEXT_MEMORY_BUDGET_BYTES`, source before tests before other text,
//! smaller files first (left out as `memory_budget`). A task whose analysis
//! cannot get room in the budget within two minutes (others hold it) is
//! retried as `memory_busy`. A partial analysis leads the context's summary with
//! "analysed N of M files (K skipped: …)" and is described in
//! `context.extra.snapshot`.

mod pull;
mod store;

pub use pull::{PullRequest, PullsApi};
pub use store::SealedStore;

use contexten_broker::Outcome;
use contexten_broker::service::WorkerConfig;
use contexten_cache::{DiskBudget, EncryptionKey, Sealer, budget};
use contexten_codemap::{
    AnalysisStore, CACHE_ANALYSIS_DIR, CACHE_GIT_DIR, CoChange, CodemapError, ESTIMATE_FIXED,
    Engine, EngineConfig, EngineStats, GitReason as Reason, GitToken, Hints, Query, RankParams,
    RankedFile, RedisStore, RepoSource, Resolve,
};
use contexten_config::{ConfigError, Env, ExposeSecret, SecretSource};
use contexten_envelope::Reason as FleetReason;
use contexten_envelope::{ContextItem, Stage, TaskContext, TaskEnvelope};
use contexten_telemetry::metric;
use contexten_trust::outbound::{OutboundGuard, Purpose};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The context worker's settings.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub worker: WorkerConfig,
    pub cache_dir: PathBuf,
    pub top_k: usize,
    pub budget_tokens: usize,
    pub model: String,
    pub allow_local: bool,
    /// `CONTEXT_CACHE_TTL_SECS`: per-file analyses in Redis expire this long after
    /// they are written.
    pub cache_ttl: Duration,
    /// `CONTEXT_MAP_TTL_SECS`: whole-repository maps in Redis (one per commit, a
    /// few MB for a 2,000-file repository) expire this long after they are written.
    pub map_ttl: Duration,
    /// `CACHE_ENCRYPTION_KEY`: seals the Redis entries; `None` stores them plain.
    pub encryption_key: Option<EncryptionKey>,
    /// `CONTEXT_CACHE_MAX_BYTES`: size budget of `cache_dir`.
    pub cache_max_bytes: u64,
    /// `CONTEXT_GIT_TIMEOUT_SECS`: bound of each git process (1–3600, default 120).
    pub git_timeout: Duration,
    /// `CONTEXT_MAX_FILES`: files read per repository (1–1000000, default 50000).
    pub max_files: usize,
    /// `CONTEXT_MAX_TOTAL_BYTES`: bytes read per repository (1 MiB–16 GiB,
    /// default 256 MiB).
    pub max_total_bytes: u64,
    /// `CONTEXT_MEMORY_BUDGET_BYTES`: memory analyses and kept maps may hold
    /// together by codemap's estimate (64 MiB–1 TiB, default 1 GiB).
    pub memory_budget: u64,
    /// The outbound guard (`CONTEXTEN_OUTBOUND_ALLOW`, `CONTEXTEN_ALLOW_LOCAL_REPOS`,
    /// `CONTEXTEN_GIT_ALLOW_SSH`): a remote repository is fetched only from the
    /// addresses it accepted (README "Security model").
    pub outbound: OutboundGuard,
    /// `GITHUB_API_URL` (default `https://api.github.com`): where a pull
    /// request's base branch is asked for.
    pub github_api_url: String,
    /// `GITHUB_TOKEN` or `GITHUB_TOKEN_FILE` (re-read when the file changes):
    /// private GitHub repositories and the pulls API.
    pub github_token: Option<SecretSource>,
    /// `CONTEXT_HISTORY_DEPTH`: commits of history fetched and read for
    /// co-change ranking (0–5000, default 200; 0 turns it off).
    pub history_depth: u32,
}

impl ContextConfig {
    /// Reads the settings (see the crate docs).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default_cache = std::env::temp_dir().join("contexten/context-cache");
        Ok(ContextConfig {
            worker: WorkerConfig::from_env(
                env,
                "context-worker",
                Stage::Context,
                "127.0.0.1:9101",
                8,
            )?,
            cache_dir: env
                .raw("CONTEXT_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or(default_cache),
            top_k: env.ranged("CONTEXT_TOP_K", 10usize, 1, 100)?,
            budget_tokens: env.ranged("CONTEXT_PROMPT_BUDGET_TOKENS", 6000usize, 256, 200_000)?,
            model: env.string("LLM_MODEL", "gpt-4.1"),
            allow_local: env.flag("CONTEXTEN_ALLOW_LOCAL_REPOS", false)?,
            cache_ttl: Duration::from_secs(env.ranged(
                "CONTEXT_CACHE_TTL_SECS",
                DEFAULT_CACHE_TTL_SECS,
                60,
                90 * 86_400,
            )?),
            map_ttl: Duration::from_secs(env.ranged(
                "CONTEXT_MAP_TTL_SECS",
                DEFAULT_MAP_TTL_SECS,
                60,
                90 * 86_400,
            )?),
            encryption_key: EncryptionKey::from_env(env)?,
            cache_max_bytes: budget::max_bytes_from_env(env, "CONTEXT_CACHE_MAX_BYTES")?,
            git_timeout: Duration::from_secs(env.ranged(
                "CONTEXT_GIT_TIMEOUT_SECS",
                120,
                1,
                3600,
            )?),
            max_files: env.ranged("CONTEXT_MAX_FILES", DEFAULT_MAX_FILES, 1, 1_000_000)?,
            outbound: OutboundGuard::from_env(env)?,
            github_token: env.secret_source("GITHUB_TOKEN")?,
            github_api_url: env
                .url(
                    "GITHUB_API_URL",
                    "https://api.github.com",
                    &["http", "https"],
                )?
                .to_string(),
            max_total_bytes: env.ranged(
                "CONTEXT_MAX_TOTAL_BYTES",
                DEFAULT_MAX_TOTAL_BYTES,
                1 << 20,
                16 << 30,
            )?,
            memory_budget: env.ranged(
                "CONTEXT_MEMORY_BUDGET_BYTES",
                DEFAULT_MEMORY_BUDGET_BYTES,
                ESTIMATE_FIXED,
                1 << 40,
            )?,
            history_depth: env.ranged(
                "CONTEXT_HISTORY_DEPTH",
                DEFAULT_HISTORY_DEPTH,
                0,
                MAX_HISTORY_DEPTH,
            )?,
        })
    }

    /// The size budget of `cache_dir`: the engine's per-file analyses and
    /// fetched repositories (kept by [`DiskBudget::keep_pruned`]).
    pub fn disk_budget(&self) -> DiskBudget {
        DiskBudget::new(self.cache_max_bytes, budget::IN_USE_WINDOW)
            .files_under(self.cache_dir.join(CACHE_ANALYSIS_DIR))
            .dirs_in(self.cache_dir.join(CACHE_GIT_DIR))
    }

    /// The engine these settings describe: disk cache under `cache_dir`,
    /// shared store in Redis under the fleet's prefix, `GITHUB_TOKEN` read anew
    /// for each fetch.
    pub fn engine(&self) -> Engine {
        Engine::new(EngineConfig {
            cache_dir: Some(self.cache_dir.clone()),
            allow_local: self.allow_local,
            git_timeout: self.git_timeout,
            max_files: self.max_files,
            max_total_bytes: self.max_total_bytes,
            memory_budget: Some(self.memory_budget),
            github_token: self.github_token.clone().map(|source| {
                GitToken::dynamic(move || source.current().expose_secret().to_owned())
            }),
            shared_store: self.shared_store(),
            history_depth: self.history_depth,
            ..EngineConfig::default()
        })
    }

    /// The shared analysis cache on the cache Redis (`REDIS_URL`, found through
    /// `REDIS_SENTINELS` when they are set; never the records one: analyses
    /// are recomputed when evicted); `None` (logged) only
    /// if the client cannot be built, which `REDIS_URL`'s validation rules out.
    fn shared_store(&self) -> Option<Arc<dyn AnalysisStore>> {
        let names = self.worker.names();
        let settings = &self.worker.redis;
        let url = settings.url.expose_secret();
        let redis = RedisStore::new(url, names.prefix(), self.cache_ttl).map(|r| {
            let r = r.with_map_ttl(self.map_ttl);
            if settings.sentinels.is_empty() {
                r
            } else {
                r.through_sentinels(&settings.sentinels, &settings.sentinel_master)
            }
        });
        match redis {
            Ok(redis) => {
                let sealer = Sealer::new(self.encryption_key.as_ref());
                Some(Arc::new(SealedStore::new(redis, sealer)))
            }
            Err(error) => {
                tracing::warn!(%error, "no Redis analysis cache; using memory and disk only");
                None
            }
        }
    }
}

/// Default of `CONTEXT_CACHE_TTL_SECS`: a week keeps the blobs of active
/// repositories warm across deploys and weekends.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 7 * 86_400;

/// Default of `CONTEXT_MAP_TTL_SECS`: the tasks about one commit arrive within
/// hours, and every push to a large repository adds a map of a few MB.
pub const DEFAULT_MAP_TTL_SECS: u64 = 86_400;

/// Default of `CONTEXT_MAX_FILES`: several times a large service's source
/// tree; a monorepo beyond it is analysed in part rather than exhausting memory.
pub const DEFAULT_MAX_FILES: usize = 50_000;

/// Default of `CONTEXT_MAX_TOTAL_BYTES` (256 MiB): the contents are held in
/// memory while they are analysed.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;

/// Default of `CONTEXT_HISTORY_DEPTH`: the window codemap's evaluation
/// measured the co-change lever on (`shared/codemap/eval/README.md`); fetching it costs a
/// few hundred commits' objects once per repository and ref.
pub const DEFAULT_HISTORY_DEPTH: u32 = 200;

/// Most `CONTEXT_HISTORY_DEPTH`: older co-changes say little about today's
/// code, and the fetch and the log read grow with the depth.
pub const MAX_HISTORY_DEPTH: u32 = 5000;

/// Default of `CONTEXT_MEMORY_BUDGET_BYTES` (1 GiB): about two thirds of the
/// chart's 1.5 GiB container limit, the rest for the process itself, the
/// tokenizers and the estimate's error (README "Context worker memory").
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 1 << 30;

/// The handler: the engine (shared caches) and the ranking settings.
#[derive(Clone)]
pub struct ContextHandler {
    engine: Arc<Engine>,
    /// Engine counters already turned into metrics (tasks run concurrently, so
    /// each reports the difference to what was reported before it).
    reported: Arc<Mutex<EngineStats>>,
    top_k: usize,
    budget_tokens: usize,
    model: String,
    outbound: OutboundGuard,
    pulls: Option<PullsApi>,
}

impl ContextHandler {
    /// A handler over `engine`.
    pub fn new(engine: Engine, cfg: &ContextConfig) -> Self {
        ContextHandler {
            engine: Arc::new(engine),
            reported: Arc::default(),
            top_k: cfg.top_k,
            budget_tokens: cfg.budget_tokens,
            model: cfg.model.clone(),
            outbound: cfg.outbound.clone(),
            pulls: None,
        }
    }

    /// Asks `pulls` for a pull request's base when the event did not carry it
    /// (without it, the repository's default branch is the base).
    pub fn with_pulls_api(mut self, pulls: PullsApi) -> Self {
        self.pulls = Some(pulls);
        self
    }

    /// The engine's work counters (files parsed, maps reused from Redis, ...).
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Counts the engine's cache work since the last report in
    /// `contexten_cache_requests_total`: `codemap_file` (memory / store hits, parsed
    /// files as store misses) and `codemap_map` (memory / redis hits).
    fn report_cache(&self) {
        let now = self.engine.stats();
        let Ok(mut last) = self.reported.lock() else {
            return;
        };
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let batches = [
            (
                "codemap_file",
                "memory",
                true,
                d(now.files_reused_memory, last.files_reused_memory),
            ),
            (
                "codemap_file",
                "store",
                true,
                d(now.files_reused_store, last.files_reused_store),
            ),
            (
                "codemap_file",
                "store",
                false,
                d(now.files_parsed, last.files_parsed),
            ),
            (
                "codemap_map",
                "memory",
                true,
                d(now.maps_reused, last.maps_reused),
            ),
            (
                "codemap_map",
                "redis",
                true,
                d(now.maps_reused_shared, last.maps_reused_shared),
            ),
        ];
        for (cache, layer, hit, n) in batches {
            if n > 0 {
                metric::cache_requests(cache, layer, hit, n);
            }
        }
        *last = now;
    }

    /// The outbound guard's verdict on a remote repository: the addresses git
    /// may connect to, or the outcome of a refusal (a name that does not
    /// resolve is retried; anything else is dead-lettered with its reason, and
    /// nothing connects). Local sources are governed by `allow_local` instead.
    async fn pins_for(&self, source: &RepoSource) -> Result<Vec<Resolve>, Outcome> {
        let RepoSource::Git { url, .. } = source else {
            return Ok(Vec::new());
        };
        if source.is_local() {
            return Ok(Vec::new());
        }
        let checked = match self.outbound.check(url, Purpose::Git).await {
            Ok(checked) => checked,
            Err(refusal) if refusal.is_transient() => {
                return Err(Outcome::retry(
                    Duration::ZERO,
                    FleetReason::from_code(refusal.reason()),
                    refusal.message,
                ));
            }
            Err(refusal) => {
                tracing::warn!(host = ?refusal.host, reason = refusal.reason(), "repository URL refused");
                return Err(Outcome::dead(
                    FleetReason::from_code(refusal.reason()),
                    refusal.message,
                ));
            }
        };
        match checked.git_pin() {
            None => Ok(Vec::new()),
            Some((host, port, addrs)) => Resolve::new(host, port, addrs)
                .map(|pin| vec![pin])
                .map_err(|e| Outcome::dead(FleetReason::OutboundRefused, e.to_string())),
        }
    }

    /// Fills the envelope's context and forwards it by strategy.
    pub async fn handle(&self, mut envelope: TaskEnvelope) -> Outcome {
        let next = envelope.strategy.next_after(Stage::Context);
        let Some(repository) = envelope.request.repository.clone() else {
            // Nothing to read: the next stage works from the request alone.
            return Outcome::forward(next, envelope);
        };
        let source = source_of(&repository.url, repository.reference.as_deref());
        let pins = match self.pins_for(&source).await {
            Ok(pins) => pins,
            Err(outcome) => return outcome,
        };
        let pull = PullRequest::of(&envelope);
        let base = match &pull {
            Some(pull) => pull::base_ref(&envelope, pull, self.pulls.as_ref()).await,
            None => None,
        };
        let handler = self.clone();
        let request = envelope.request.clone();
        let work = tokio::task::spawn_blocking(move || {
            let analysed = handler.engine.analyse_revision(&source, pins.clone());
            handler.report_cache();
            let (map, commit) = analysed?;
            let commit = commit.or_else(|| map.commit().map(str::to_owned));
            let changes = match (&pull, &base, &commit) {
                (Some(pull), Some((base, from)), Some(head)) => handler
                    .pull_changes(&source, head, base, pins)
                    .map(|changes| (pull.clone(), base.clone(), *from, changes)),
                _ => None,
            };
            let mut paths = request.hints.paths.clone();
            if let Some((_, _, _, changes)) = &changes {
                let readable = changes.files.iter().filter(|f| map.find_file(f).is_some());
                for file in readable.take(handler.top_k) {
                    if !paths.contains(file) {
                        paths.push(file.clone());
                    }
                }
            }
            let mut symbols = request.hints.symbols.clone();
            symbols.extend(pull::commented_symbol(&map, &request));
            let query = Query {
                text: request.text.clone(),
                hints: Hints {
                    paths,
                    symbols,
                    traces: Vec::new(),
                },
                top_k: handler.top_k,
            };
            let history = commit.as_deref().and_then(|c| handler.history(&source, c));
            let mut ranked = map.query_history(&query, &RankParams::default(), history.as_deref());
            let used_history = history.is_some();
            let mut budget = handler.budget_tokens;
            let mut diff = None;
            if let (Some((pull, base, from, changes)), Some(head)) = (&changes, &commit) {
                ranked = pull::changed_first(ranked, &changes.files, pull.number);
                let (text, tokens) =
                    pull::diff_section(changes, pull.number, head, budget / 2, &handler.model);
                budget -= tokens;
                diff = Some((text, tokens, pull::describe(pull, base, *from, changes)));
            }
            let mut prompt = map.assemble_prompt(&request.text, &ranked, budget, &handler.model);
            if let Some((text, tokens, _)) = &diff {
                prompt.text = format!("{text}{}", prompt.text);
                prompt.tokens += tokens;
            }
            if let Some((_, _, _, changes)) = &changes {
                for (kind, n) in &changes.redactions {
                    *prompt.redactions.entry(kind.clone()).or_default() += n;
                }
            }
            let coverage = Coverage::of(map.len(), map.skipped());
            let summary = coverage.lead(map.summary_text());
            let pull_json = diff.map(|(_, _, json)| json);
            let answer = (ranked, prompt, summary, coverage, commit, pull_json);
            Ok::<_, CodemapError>((answer, used_history))
        });
        match work.await {
            Ok(Ok(((ranked, prompt, summary, coverage, commit, pull_json), used_history))) => {
                let mut extra = contexten_envelope::Extra::new();
                if used_history {
                    extra.insert("history".into(), true.into());
                }
                if coverage.partial {
                    extra.insert("snapshot".into(), coverage.json());
                }
                if let Some(commit) = commit {
                    extra.insert("commit".into(), commit.into());
                }
                if let Some(pull_json) = pull_json {
                    extra.insert("pull_request".into(), pull_json);
                }
                envelope.context = Some(TaskContext {
                    items: ranked.iter().map(context_item).collect(),
                    prompt: prompt.text,
                    prompt_tokens: prompt.tokens as u32,
                    redactions: prompt
                        .redactions
                        .into_iter()
                        .map(|(kind, n)| (kind, n as u32))
                        .collect(),
                    summary: Some(summary),
                    extra,
                });
                Outcome::forward(next, envelope)
            }
            Ok(Err(error)) => outcome_of(error),
            Err(join) => Outcome::retry(
                Duration::ZERO,
                FleetReason::AnalysisPanicked,
                join.to_string(),
            ),
        }
    }
}

impl ContextHandler {
    /// The co-change table of `commit`'s history; `None` when there is none
    /// (depth 0, a plain directory, a depth-1 history) or it cannot be read
    /// (logged): the tree alone still ranks.
    fn history(&self, source: &RepoSource, commit: &str) -> Option<Arc<CoChange>> {
        let started = std::time::Instant::now();
        match self.engine.history(source, commit) {
            Ok(history) => {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::debug!(commit, ms, used = history.is_some(), "history read");
                history
            }
            Err(error) => {
                let stderr = match &error {
                    CodemapError::Git(git) => git.stderr().unwrap_or(""),
                    _ => "",
                };
                tracing::warn!(%error, stderr, commit, "history not read; ranking from the tree alone");
                None
            }
        }
    }

    /// The PR's changes against `base`; `None` (logged) when they cannot be
    /// read: the head's context is still worth answering with.
    fn pull_changes(
        &self,
        source: &RepoSource,
        head: &str,
        base: &str,
        pins: Vec<Resolve>,
    ) -> Option<contexten_codemap::PullChanges> {
        match self.engine.pull_request_changes(source, head, base, pins) {
            Ok(changes) => Some(changes),
            Err(error) => {
                let stderr = match &error {
                    CodemapError::Git(git) => git.stderr().unwrap_or(""),
                    _ => "",
                };
                tracing::warn!(%error, stderr, base, "pull request changes not read");
                None
            }
        }
    }
}

impl contexten_broker::Handler for ContextHandler {
    fn handle(&self, envelope: TaskEnvelope) -> impl std::future::Future<Output = Outcome> + Send {
        ContextHandler::handle(self, envelope)
    }
}

/// A `file://` URL of a plain directory (no git history) is read as a local
/// path; codemap's own parsing treats every URL as a git repository. A
/// working tree (`.git` inside) or a bare repository (`HEAD` and `objects/`)
/// is git, read at the event's ref (HEAD when none).
fn source_of(url: &str, reference: Option<&str>) -> RepoSource {
    if let Some(path) = url.strip_prefix("file://") {
        let path = std::path::Path::new(path);
        let is_git = path.join(".git").exists() || contexten_git::is_git_dir(path);
        if path.is_dir() && !is_git {
            return RepoSource::Local(path.to_path_buf());
        }
    }
    RepoSource::parse(url, reference)
}

fn context_item(file: &RankedFile) -> ContextItem {
    ContextItem {
        path: file.path.clone(),
        score: f64::from(file.score),
        symbols: file.symbols.iter().map(|s| s.name.clone()).collect(),
        reasons: file.reasons.clone(),
    }
}

/// How much of the repository an analysis covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Coverage {
    analysed: usize,
    skipped: BTreeMap<String, usize>,
    /// Whether the file or total cap left files out.
    partial: bool,
}

impl Coverage {
    fn of(analysed: usize, skipped: &BTreeMap<String, usize>) -> Self {
        Coverage {
            analysed,
            skipped: skipped.clone(),
            partial: contexten_codemap::is_partial(skipped),
        }
    }

    /// The summary, led by a coverage line when the analysis is partial, so
    /// whoever reads the answer knows it is about part of the repository.
    fn lead(&self, summary: &str) -> String {
        if !self.partial {
            return summary.to_owned();
        }
        let skipped: usize = self.skipped.values().sum();
        let reasons: Vec<String> = self
            .skipped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        format!(
            "Partial snapshot: analysed {} of {} files ({skipped} skipped: {}).\n{summary}",
            self.analysed,
            self.analysed + skipped,
            reasons.join(", ")
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "partial": self.partial,
            "analysed": self.analysed,
            "files": self.analysed + self.skipped.values().sum::<usize>(),
            "skipped": self.skipped,
        })
    }
}

/// Permanent input errors dead-letter (the requester gets a failure answer);
/// a fetch that timed out or failed for another reason is retried. Details
/// are the errors' `Display`, which never carries git's output; that is logged.
fn outcome_of(error: CodemapError) -> Outcome {
    let detail = error.to_string();
    match &error {
        CodemapError::LocalRepoRefused => Outcome::dead(FleetReason::RepositoryRefused, detail),
        CodemapError::NotFound(_) => Outcome::dead(FleetReason::RepositoryNotFound, detail),
        CodemapError::Git(git) => {
            // git's own words go to the log only, never into the outcome.
            let stderr = git.stderr().unwrap_or("");
            tracing::warn!(reason = %git.reason(), stderr, error = %git, "repository unavailable");
            match git.reason() {
                Reason::RefusedRef | Reason::RefusedUrl | Reason::RefusedPath => {
                    Outcome::dead(FleetReason::RepositoryRefused, detail)
                }
                // The failure answer's sentence for it covers "no access" too.
                Reason::NotFound | Reason::Auth => {
                    Outcome::dead(FleetReason::RepositoryNotFound, detail)
                }
                Reason::TooLarge => Outcome::dead(FleetReason::RepositoryTooLarge, detail),
                // A server that did not answer within the timeout is told to
                // the requester now, not after every retry has waited it out
                // again (README "Security model": a stalling repository must
                // not pin the fleet).
                Reason::Timeout => Outcome::dead(FleetReason::RepositoryTimeout, detail),
                Reason::Failed => {
                    Outcome::retry(Duration::ZERO, FleetReason::RepositoryUnavailable, detail)
                }
            }
        }
        // Other analyses hold the memory budget: later, when they are done.
        CodemapError::MemoryBusy { .. } => {
            Outcome::retry(Duration::from_secs(5), FleetReason::MemoryBusy, detail)
        }
        _ => Outcome::retry(Duration::ZERO, FleetReason::RepositoryUnavailable, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{ReplyTarget, RepositoryRef, Request, Source, SourceKind, Strategy};
    use contexten_testkit::{TestPrefix, git, keys_matching, machine_redis_url};

    /// A unique prefix whose Redis keys are deleted on drop (testkit).
    fn test_prefix() -> TestPrefix {
        TestPrefix::new().clean_machine_redis()
    }

    fn redis_url() -> String {
        machine_redis_url()
    }

    fn config(dir: &std::path::Path, allow_local: bool, prefix: &TestPrefix) -> ContextConfig {
        config_with(dir, allow_local, prefix, &[])
    }

    fn config_with(
        dir: &std::path::Path,
        allow_local: bool,
        prefix: &TestPrefix,
        extra: &[(&str, &str)],
    ) -> ContextConfig {
        let cache = dir.join("cache").display().to_string();
        let allow = if allow_local { "1" } else { "0" };
        let url = redis_url();
        let mut pairs = vec![
            ("CONTEXT_CACHE_DIR", cache.as_str()),
            ("CONTEXTEN_ALLOW_LOCAL_REPOS", allow),
            ("CONTEXTEN_PREFIX", prefix.as_str()),
            ("REDIS_URL", url.as_str()),
        ];
        pairs.extend_from_slice(extra);
        ContextConfig::from_env(&Env::from_pairs(pairs)).unwrap()
    }

    fn task(repo: Option<String>, strategy: Strategy, text: &str) -> TaskEnvelope {
        let source = Source {
            kind: SourceKind::API,
            delivery_id: None,
            requested_by: None,
            reply_to: ReplyTarget::None,
            extra: Default::default(),
        };
        let request = Request {
            text: text.into(),
            repository: repo.map(|url| RepositoryRef {
                url,
                reference: None,
            }),
            ..Request::default()
        };
        let mut env = TaskEnvelope::new(source, request);
        env.strategy = strategy;
        env
    }

    fn repo(dir: &std::path::Path) -> String {
        let root = dir.join("repo");
        std::fs::create_dir_all(root.join("billing")).unwrap();
        std::fs::write(root.join("billing/invoice.py"), "def total_with_tax(amount, rate):\n    \"\"\"Invoice total.\"\"\"\n    return amount * (1 + rate)\n").unwrap();
        std::fs::write(root.join("billing/report.py"), "from billing.invoice import total_with_tax\n\ndef monthly_report(rows):\n    return sum(total_with_tax(r.amount, r.rate) for r in rows)\n").unwrap();
        let key = ["AKIA", "Q3ZX7Z2L5V", "NR4WTB"].concat();
        std::fs::write(
            root.join("settings.py"),
            format!("AWS_ACCESS_KEY_ID = \"{key}\"\nREGION = 'eu-west-1'\n"),
        )
        .unwrap();
        std::fs::write(root.join("README.md"), "Billing helpers.\n").unwrap();
        root.display().to_string()
    }

    #[tokio::test]
    async fn the_context_ranks_the_file_the_request_is_about_and_keeps_secrets_out() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), true, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let env = task(
            Some(repo(dir.path())),
            Strategy::Agent,
            "the invoice total_with_tax rounding is wrong; also check settings.py",
        );
        let Outcome::Forward(next) = handler.handle(env).await else {
            panic!("forwarded")
        };
        assert_eq!(
            next[0].stage,
            Stage::Agent,
            "agent strategy goes to the agent"
        );
        let context = next[0].envelope.context.clone().expect("context filled");
        assert_eq!(
            context.items[0].path, "billing/invoice.py",
            "{:?}",
            context.items
        );
        assert!(!context.items[0].reasons.is_empty());
        assert!(context.prompt.contains("total_with_tax"));
        assert!(context.prompt_tokens as usize <= cfg.budget_tokens);
        assert!(
            context.items.iter().any(|i| i.path == "settings.py"),
            "the mentioned file is ranked"
        );
        assert!(context.prompt.contains("settings.py"), "and in the prompt");
        assert!(
            !context
                .prompt
                .contains(&["AKIA", "Q3ZX7Z2L5V", "NR4WTB"].concat()),
            "no secret in the prompt"
        );
        assert!(
            context.prompt.contains("[REDACTED:"),
            "the key was replaced, not dropped silently"
        );
    }

    #[tokio::test]
    async fn local_repositories_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), false, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let env = task(Some(repo(dir.path())), Strategy::Context, "total_with_tax");
        match handler.handle(env).await {
            Outcome::DeadLetter(reason) => assert_eq!(reason.code, "repository_refused"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn without_a_repository_the_task_moves_on_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), true, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let env = task(None, Strategy::Context, "write slugify");
        let Outcome::Forward(next) = handler.handle(env).await else {
            panic!("forwarded")
        };
        assert_eq!(next[0].stage, Stage::Generate);
        assert!(next[0].envelope.context.is_none());
    }

    /// Makes `root` a git repository on `main` with everything in one commit.
    fn commit_all(root: &std::path::Path) {
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        ] {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        }
    }

    /// The repository of [`repo`] as a git commit, read by `file://` URL.
    fn git_repo(dir: &std::path::Path) -> String {
        let root = repo(dir);
        commit_all(std::path::Path::new(&root));
        format!("file://{root}")
    }

    #[tokio::test]
    async fn a_bare_file_repository_is_analysed_from_its_commit_not_its_git_files() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let work = git_repo(dir.path());
        let bare = dir.path().join("bare.git");
        let ok = std::process::Command::new("git")
            .args(["clone", "-q", "--bare", "--"])
            .arg(work.trim_start_matches("file://"))
            .arg(&bare)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let cfg = config(dir.path(), true, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let url = format!("file://{}", bare.display());
        for reference in [None, Some("main")] {
            let mut env = task(Some(url.clone()), Strategy::Context, "total_with_tax");
            if let Some(reference) = reference {
                env = with_reference(env, reference);
            }
            let Outcome::Forward(next) = handler.handle(env).await else {
                panic!("forwarded")
            };
            let context = next[0].envelope.context.clone().expect("context");
            let paths: Vec<&str> = context.items.iter().map(|i| i.path.as_str()).collect();
            assert_eq!(context.items[0].path, "billing/invoice.py", "{paths:?}");
            assert!(
                paths
                    .iter()
                    .all(|p| !p.starts_with("hooks/") && *p != "HEAD" && *p != "config"),
                "{paths:?}"
            );
        }
    }

    /// A bare repository with [`repo`] on `main` and pull request 5 (adding
    /// `late_fee` to a new file) as `refs/pull/5/head`; its URL and the head.
    fn pull_request_repo(dir: &std::path::Path) -> (String, String) {
        let work = git_repo(dir);
        let work = std::path::Path::new(work.trim_start_matches("file://"));
        git(work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(
            work.join("billing/fees.py"),
            "def late_fee(days):\n    \"\"\"Fee for paying late.\"\"\"\n    return 5 * days\n",
        )
        .unwrap();
        git(work, &["add", "."]);
        git(work, &["commit", "-q", "-m", "late fees"]);
        let head = git(work, &["rev-parse", "HEAD"]);
        let bare = dir.join("hello.git");
        git(
            dir,
            &[
                "clone",
                "-q",
                "--bare",
                "--",
                work.to_str().unwrap(),
                "hello.git",
            ],
        );
        git(&bare, &["update-ref", "refs/pull/5/head", &head]);
        git(&bare, &["update-ref", "-d", "refs/heads/feature"]);
        (format!("file://{}", bare.display()), head)
    }

    #[tokio::test]
    async fn a_pull_request_is_read_at_its_head_with_its_changes_first_and_its_diff() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let (url, head) = pull_request_repo(dir.path());
        let github = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .and(wiremock::matchers::path("/repos/octo/hello/pulls/5"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"number": 5, "base": {"ref": "main", "sha": "x"}}),
            ))
            .expect(1)
            .mount(&github)
            .await;
        let cfg = config(dir.path(), true, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg)
            .with_pulls_api(PullsApi::new(&github.uri(), None));
        let mut env = with_reference(
            task(
                Some(url),
                Strategy::Context,
                "explain how invoices are totalled",
            ),
            "refs/pull/5/head",
        );
        env.source.reply_to = ReplyTarget::Github {
            repo: "octo/hello".into(),
            number: 5,
            comment_id: None,
        };
        env.request
            .extra
            .insert("github_pull_request".into(), 5.into());
        env.request
            .extra
            .insert("github_default_branch".into(), "nonexistent".into());
        let Outcome::Forward(next) = handler.handle(env).await else {
            panic!("forwarded")
        };
        let context = next[0].envelope.context.clone().expect("context");
        assert_eq!(
            context.items[0].path, "billing/fees.py",
            "{:?}",
            context.items
        );
        assert_eq!(context.items[0].reasons[0], "changed in pull request #5");
        assert!(
            context.prompt.contains("+def late_fee(days):"),
            "{}",
            context.prompt
        );
        assert!(context.prompt_tokens as usize <= cfg.budget_tokens);
        assert_eq!(context.extra["commit"], head.as_str());
        let pull = &context.extra["pull_request"];
        assert_eq!(pull["base_from"], "api");
        assert_eq!(pull["against_merge_base"], true);
        assert_eq!(
            pull["changed_files"],
            serde_json::json!(["billing/fees.py"])
        );
        github.verify().await;
    }

    #[tokio::test]
    async fn a_second_replica_answers_a_known_commit_from_redis_without_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let url = git_repo(dir.path());
        let text = "the invoice total_with_tax rounding is wrong";
        let replica = |name: &str| {
            let cfg = config(&dir.path().join(name), true, &prefix);
            ContextHandler::new(cfg.engine(), &cfg)
        };
        let (a, b) = (replica("a"), replica("b"));
        let context = |outcome: Outcome| match outcome {
            Outcome::Forward(next) => next[0].envelope.context.clone().expect("context"),
            other => panic!("{other:?}"),
        };
        let first = context(
            a.handle(task(Some(url.clone()), Strategy::Context, text))
                .await,
        );
        assert!(a.stats().files_parsed > 0);
        assert_eq!(a.stats().maps_stored, 1);
        let map_key = keys_matching(&redis_url(), &format!("{}:codemap:map-*", prefix.as_str()))
            .await
            .unwrap()
            .into_iter()
            .next()
            .expect("the map is in Redis under the prefix");
        let mut conn = redis::Client::open(redis_url())
            .and_then(|c| c.get_connection())
            .unwrap();
        let ttl: u64 = redis::cmd("TTL").arg(&map_key).query(&mut conn).unwrap();
        assert!(
            ttl <= DEFAULT_MAP_TTL_SECS && ttl > DEFAULT_MAP_TTL_SECS - 60,
            "{ttl}"
        );

        let second = context(b.handle(task(Some(url), Strategy::Context, text)).await);
        assert_eq!(
            b.stats().files_parsed,
            0,
            "nothing parsed on the second replica"
        );
        assert_eq!(b.stats().maps_reused_shared, 1);
        assert_eq!(
            *b.reported.lock().unwrap(),
            b.stats(),
            "the task's cache work went to the metrics"
        );
        assert_eq!(first.items, second.items);
        assert_eq!(first.prompt, second.prompt);
    }

    #[tokio::test]
    async fn an_unreachable_redis_never_fails_a_task() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let url = git_repo(dir.path());
        let cfg = config_with(
            dir.path(),
            true,
            &prefix,
            &[("REDIS_URL", "redis://127.0.0.1:1")],
        );
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        for _ in 0..2 {
            let env = task(Some(url.clone()), Strategy::Context, "total_with_tax");
            let Outcome::Forward(next) = handler.handle(env).await else {
                panic!("forwarded")
            };
            let context = next[0].envelope.context.clone().expect("context filled");
            assert_eq!(context.items[0].path, "billing/invoice.py");
        }
        assert_eq!(handler.stats().maps_stored, 0);
    }

    #[test]
    fn cache_settings_have_defaults_ranges_and_a_checked_key() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), false, &prefix);
        assert_eq!(cfg.cache_ttl, Duration::from_secs(DEFAULT_CACHE_TTL_SECS));
        assert_eq!(cfg.map_ttl, Duration::from_secs(DEFAULT_MAP_TTL_SECS));
        assert_eq!(cfg.cache_max_bytes, budget::DEFAULT_MAX_BYTES);
        assert!(cfg.encryption_key.is_none());
        for bad in ["1000", "lots", "-1"] {
            let env = Env::from_pairs([("CONTEXT_CACHE_MAX_BYTES", bad)]);
            assert_eq!(
                ContextConfig::from_env(&env).unwrap_err().var,
                "CONTEXT_CACHE_MAX_BYTES"
            );
        }
        let env = Env::from_pairs([("CONTEXT_CACHE_TTL_SECS", "10")]);
        assert_eq!(
            ContextConfig::from_env(&env).unwrap_err().var,
            "CONTEXT_CACHE_TTL_SECS"
        );
        let env = Env::from_pairs([("CACHE_ENCRYPTION_KEY", "short")]);
        let err = ContextConfig::from_env(&env).unwrap_err();
        assert_eq!(
            (err.var.as_str(), err.shown.as_str()),
            ("CACHE_ENCRYPTION_KEY", "****")
        );
        let key = "ab".repeat(32);
        let env = Env::from_pairs([("CACHE_ENCRYPTION_KEY", key.as_str())]);
        assert!(
            ContextConfig::from_env(&env)
                .unwrap()
                .encryption_key
                .is_some()
        );
    }

    #[test]
    fn the_disk_budget_covers_the_engines_cache_and_pruning_only_costs_a_parse() {
        let dir = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("src")).unwrap();
        for i in 0..20 {
            std::fs::write(
                repo.path().join(format!("src/m{i}.rs")),
                format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
            )
            .unwrap();
        }
        let prefix = test_prefix();
        let mut cfg = config(dir.path(), true, &prefix);
        // Memory and disk only, so a miss on disk is a parse.
        let engine = || {
            Engine::new(EngineConfig {
                cache_dir: Some(cfg.cache_dir.clone()),
                allow_local: true,
                ..EngineConfig::default()
            })
        };
        let src = RepoSource::Local(repo.path().to_path_buf());
        let first = engine();
        first.analyse(&src).unwrap();
        assert_eq!(first.stats().files_parsed, 20);
        let fresh = engine();
        fresh.analyse(&src).unwrap();
        assert_eq!(fresh.stats().files_parsed, 0, "served from the disk cache");

        // The worker's budget spares what was used in the last 10 minutes...
        cfg.cache_max_bytes = 1;
        assert_eq!(cfg.disk_budget().prune().unwrap().files_removed, 0);
        // ...while the same entries without that window all go.
        let report = DiskBudget::new(1, Duration::ZERO)
            .files_under(cfg.cache_dir.join(CACHE_ANALYSIS_DIR))
            .dirs_in(cfg.cache_dir.join(CACHE_GIT_DIR))
            .prune()
            .unwrap();
        assert_eq!((report.files_removed, report.bytes_after), (20, 0));
        let after = engine();
        after.analyse(&src).unwrap();
        assert_eq!(
            after.stats().files_parsed,
            20,
            "a pruned entry is parsed again"
        );
    }

    /// A TCP server on 127.0.0.1 that accepts connections and never answers.
    /// A listener that counts the connections it accepts (it must see none).
    fn counting_listener(addr: &str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        std::thread::spawn(move || {
            for _ in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (port, seen)
    }

    /// An HTTP server on 127.0.0.1 that redirects every request to `to`,
    /// counting the requests it answers.
    fn redirecting_server(to: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/repo.git", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn repository_urls_into_loopback_are_refused_without_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), false, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let (port, seen) = counting_listener("127.0.0.1:0");
        for url in [
            format!("http://127.0.0.1:{port}/repo.git"),
            format!("https://localhost:{port}/repo.git"),
            format!("https://[::ffff:127.0.0.1]:{port}/repo.git"),
        ] {
            match handler
                .handle(task(Some(url.clone()), Strategy::Context, "x"))
                .await
            {
                Outcome::DeadLetter(reason) => {
                    assert_eq!(reason.code, "outbound_refused", "{url}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_from_an_allow_listed_server_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        // All of 127/8 is loopback on Linux: 127.0.0.2 stands for an address
        // the allow-list does not name.
        let (port, seen) = counting_listener("127.0.0.2:0");
        let (redirector, asked) = redirecting_server(format!(
            "http://127.0.0.2:{port}/repo.git/info/refs?service=git-upload-pack"
        ));
        let cfg = config_with(
            dir.path(),
            false,
            &prefix,
            &[
                ("CONTEXTEN_OUTBOUND_ALLOW", "127.0.0.1"),
                ("CONTEXT_GIT_TIMEOUT_SECS", "10"),
            ],
        );
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let outcome = handler
            .handle(task(Some(redirector), Strategy::Context, "x"))
            .await;
        assert!(
            matches!(outcome, Outcome::DeadLetter(_) | Outcome::RetryAfter(..)),
            "{outcome:?}"
        );
        assert!(
            asked.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "the allow-listed server was asked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    fn silent_git_server() -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/repo.git", listener.local_addr().unwrap());
        let held = std::thread::spawn(move || {
            let mut streams = Vec::new();
            for stream in listener.incoming().flatten() {
                streams.push(stream);
            }
        });
        (url, held)
    }

    fn with_reference(mut env: TaskEnvelope, reference: &str) -> TaskEnvelope {
        if let Some(repository) = env.request.repository.as_mut() {
            repository.reference = Some(reference.to_owned());
        }
        env
    }

    #[tokio::test]
    async fn a_ref_like_an_option_is_refused_before_git_runs() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config(dir.path(), true, &prefix);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let marker = dir.path().join("pwned");
        let evil = format!("--upload-pack=touch {}", marker.display());
        let (silent, _held) = silent_git_server();
        for url in [git_repo(dir.path()), silent] {
            let env = with_reference(task(Some(url), Strategy::Context, "x"), &evil);
            match handler.handle(env).await {
                Outcome::DeadLetter(reason) => assert_eq!(reason.code, "repository_refused"),
                other => panic!("{other:?}"),
            }
        }
        assert!(!marker.exists(), "git ran the injected command");
    }

    #[tokio::test]
    async fn a_git_server_that_never_answers_fails_its_task_while_another_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        // Local repositories allowed: the silent server is on loopback. The
        // timeout leaves the good repository seconds to be served first even on
        // a loaded machine (at 2 s, a full parallel run once took 2.4 s).
        const GIT_TIMEOUT_SECS: &str = "6";
        let cfg = config_with(
            dir.path(),
            true,
            &prefix,
            &[("CONTEXT_GIT_TIMEOUT_SECS", GIT_TIMEOUT_SECS)],
        );
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let (silent, _held) = silent_git_server();
        let good = git_repo(dir.path());
        let started = std::time::Instant::now();
        let hung = {
            let handler = handler.clone();
            let env = task(Some(silent), Strategy::Context, "total_with_tax");
            tokio::spawn(async move { (handler.handle(env).await, started.elapsed()) })
        };
        let served = handler
            .handle(task(Some(good), Strategy::Context, "total_with_tax"))
            .await;
        let served_after = started.elapsed();
        let Outcome::Forward(next) = served else {
            panic!("{served:?}")
        };
        assert_eq!(
            next[0].envelope.context.as_ref().unwrap().items[0].path,
            "billing/invoice.py"
        );
        let (outcome, failed_after) = hung.await.unwrap();
        assert!(
            served_after < failed_after,
            "{served_after:?} {failed_after:?}"
        );
        // The configured 6 s, plus room for a loaded machine (git's start-up,
        // the kill): far from the 5 × (timeout + backoff) of retrying it.
        assert!(
            failed_after >= Duration::from_secs(6) && failed_after < Duration::from_secs(15),
            "{failed_after:?}"
        );
        match outcome {
            Outcome::DeadLetter(reason) => {
                assert_eq!(reason.code, "repository_timeout");
                assert_eq!(
                    reason.detail, "git fetch timed out after 6s",
                    "no git output"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_repository_over_the_file_cap_gets_a_partial_context_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config_with(dir.path(), true, &prefix, &[("CONTEXT_MAX_FILES", "2")]);
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let env = task(
            Some(git_repo(dir.path())),
            Strategy::Context,
            "total_with_tax",
        );
        let Outcome::Forward(next) = handler.handle(env).await else {
            panic!("forwarded")
        };
        let context = next[0].envelope.context.clone().expect("context");
        let summary = context.summary.unwrap();
        assert!(
            summary.starts_with(
                "Partial snapshot: analysed 2 of 4 files (2 skipped: too_many_files 2)."
            ),
            "{summary}"
        );
        // Parsed languages first, then path order.
        let mut paths: Vec<_> = context.items.iter().map(|i| i.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["billing/invoice.py", "billing/report.py"]);
        assert_eq!(context.extra["snapshot"]["partial"], true);
        assert_eq!(context.extra["snapshot"]["files"], 4);
        assert_eq!(handler.stats().maps_stored, 0, "a partial map stays local");
    }

    #[test]
    fn git_and_cap_settings_have_defaults_and_ranges() {
        let cfg = ContextConfig::from_env(&Env::default()).unwrap();
        assert_eq!(cfg.git_timeout, Duration::from_secs(120));
        assert_eq!(cfg.max_files, DEFAULT_MAX_FILES);
        assert_eq!(cfg.max_total_bytes, 256 << 20);
        for (var, bad) in [
            ("CONTEXT_GIT_TIMEOUT_SECS", "0"),
            ("CONTEXT_GIT_TIMEOUT_SECS", "3601"),
            ("CONTEXT_MAX_FILES", "0"),
            ("CONTEXT_MAX_TOTAL_BYTES", "1000"),
            ("CONTEXT_MEMORY_BUDGET_BYTES", "1000"),
        ] {
            let err = ContextConfig::from_env(&Env::from_pairs([(var, bad)])).unwrap_err();
            assert_eq!(err.var, var);
        }
        assert_eq!(cfg.memory_budget, 1 << 30);
    }

    #[test]
    fn the_history_depth_has_a_default_and_a_range() {
        let cfg = ContextConfig::from_env(&Env::default()).unwrap();
        assert_eq!(cfg.history_depth, DEFAULT_HISTORY_DEPTH);
        assert_eq!(DEFAULT_HISTORY_DEPTH, 200);
        for (good, depth) in [("0", 0), ("1", 1), ("5000", 5000)] {
            let env = Env::from_pairs([("CONTEXT_HISTORY_DEPTH", good)]);
            assert_eq!(ContextConfig::from_env(&env).unwrap().history_depth, depth);
        }
        for bad in ["-1", "5001", "deep", "1.5"] {
            let env = Env::from_pairs([("CONTEXT_HISTORY_DEPTH", bad)]);
            let err = ContextConfig::from_env(&env).unwrap_err();
            assert_eq!(err.var, "CONTEXT_HISTORY_DEPTH", "{bad:?}");
        }
    }

    /// `billing/invoice.py` (what the request names) and `ledger/journal.py`
    /// (no word in common with it) always change together; other files
    /// change alone.
    fn repo_with_cochanges() -> contexten_testkit::GitRepo {
        let repo = contexten_testkit::GitRepo::new();
        for i in 0..6 {
            repo.file(
                &format!("util/helper_{i}.py"),
                format!("def helper_{i}(x):\n    return x + {i}\n"),
            );
        }
        repo.commit("helpers");
        for i in 0..6 {
            repo.files(&[
                ("billing/invoice.py", format!("def total_with_tax(amount, rate):\n    \"\"\"Invoice total.\"\"\"\n    return round(amount * (1 + rate), {i})\n")),
                ("ledger/journal.py", format!("def post_entry(book, entry):\n    book.append(entry)\n    return {i}\n")),
            ])
            .commit("invoice and journal");
            repo.file(
                &format!("util/helper_{i}.py"),
                format!("def helper_{i}(x):\n    return x * {i}\n"),
            )
            .commit("one helper");
        }
        repo
    }

    async fn ranked_with_depth(url: &str, depth: &str) -> (Vec<String>, Option<serde_json::Value>) {
        let dir = tempfile::tempdir().unwrap();
        let prefix = test_prefix();
        let cfg = config_with(
            dir.path(),
            true,
            &prefix,
            &[("CONTEXT_HISTORY_DEPTH", depth)],
        );
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let text = "total_with_tax rounds the invoice total wrongly";
        let env = task(Some(url.to_owned()), Strategy::Context, text);
        let outcome = handler.handle(env).await;
        let Outcome::Forward(next) = outcome else {
            panic!("not forwarded: {outcome:?}");
        };
        let context = next[0].envelope.context.clone().unwrap();
        let paths = context.items.iter().map(|i| i.path.clone()).collect();
        (paths, context.extra.get("history").cloned())
    }

    /// Depth 0 is the tree alone: the request's file first, and nothing in the
    /// tree links the journal to it.
    async fn tree_alone_misses_the_journal(url: &str) {
        let (without, used) = ranked_with_depth(url, "0").await;
        assert_eq!(used, None);
        assert_eq!(
            without.first().map(String::as_str),
            Some("billing/invoice.py")
        );
        assert!(
            !without.contains(&"ledger/journal.py".to_owned()),
            "nothing in the tree links the journal to the request: {without:?}"
        );
    }

    #[tokio::test]
    async fn a_remote_repository_is_fetched_with_the_configured_history_and_ranked_with_it() {
        let repo = repo_with_cochanges();
        let root = repo.path().parent().unwrap().to_path_buf();
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(move |request: &wiremock::Request| {
                contexten_testkit::git_http::respond(&root, request)
            })
            .mount(&server)
            .await;
        let name = repo
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let url = format!("{}/{name}", server.uri());

        // Loopback is allowed only with local repositories (the outbound guard).
        let (with, used) = ranked_with_depth(&url, "200").await;
        assert_eq!(used, Some(serde_json::Value::Bool(true)), "{with:?}");
        assert_eq!(
            with.get(1).map(String::as_str),
            Some("ledger/journal.py"),
            "{with:?}"
        );

        tree_alone_misses_the_journal(&url).await;
    }

    #[tokio::test]
    async fn files_that_always_change_with_the_asked_one_rank_only_with_history() {
        let repo = repo_with_cochanges();
        let url = repo.file_url();

        let (with, used) = ranked_with_depth(&url, "200").await;
        assert_eq!(
            with.first().map(String::as_str),
            Some("billing/invoice.py"),
            "{with:?}"
        );
        assert_eq!(used, Some(serde_json::Value::Bool(true)));
        let journal = with.iter().position(|p| p == "ledger/journal.py");
        assert_eq!(
            journal,
            Some(1),
            "the co-changed file comes second: {with:?}"
        );

        tree_alone_misses_the_journal(&url).await;

        // A repository with one commit has no history to count.
        let single = contexten_testkit::GitRepo::new();
        single
            .file(
                "billing/invoice.py",
                "def total_with_tax(a, r):\n    return a * r\n",
            )
            .commit("one");
        let (alone, used) = ranked_with_depth(&single.file_url(), "200").await;
        assert_eq!(alone, vec!["billing/invoice.py".to_owned()]);
        assert_eq!(used, None);
    }

    /// `core/calc.py` shares no word with the request; only past commits
    /// whose messages read like it say that it is where such bugs were fixed.
    #[tokio::test]
    async fn past_fixes_described_like_the_request_bring_their_files() {
        let repo = contexten_testkit::GitRepo::new();
        for i in 0..8 {
            repo.file(
                &format!("util/helper_{i}.py"),
                format!("def helper_{i}(x):\n    return x + {i}\n"),
            );
        }
        repo.file(
            "billing/invoice.py",
            "def total_with_tax(amount, rate):\n    return amount * (1 + rate)\n",
        );
        repo.file("core/calc.py", "def f(x):\n    return x\n")
            .commit("start");
        for i in 0..3 {
            repo.file("core/calc.py", format!("def f(x):\n    return x + {i}\n"))
                .commit("Fix rounding of discounted prices on credit notes");
            for round in 0..2 {
                for h in 0..8 {
                    repo.file(
                        &format!("util/helper_{h}.py"),
                        format!("def helper_{h}(x):\n    return x * {i} + {round}\n"),
                    );
                }
                repo.commit("Tidy helpers");
            }
        }
        let url = repo.file_url();

        let (with, used) = ranked_with_depth(&url, "200").await;
        assert_eq!(used, Some(serde_json::Value::Bool(true)));
        // Above the helpers, which changed more often and more recently.
        assert_eq!(
            with.get(1).map(String::as_str),
            Some("core/calc.py"),
            "{with:?}"
        );

        let (without, _) = ranked_with_depth(&url, "0").await;
        assert!(
            !without.contains(&"core/calc.py".to_owned()),
            "nothing in the tree links it to the request: {without:?}"
        );
    }

    #[tokio::test]
    async fn a_repository_over_the_memory_budget_gets_a_partial_answer_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("big");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("tests")).unwrap();
        let body = |i: usize| {
            format!(
                "def ledger_total_{i}(rows):\n    \"\"\"Sums ledger rows {i}.\"\"\"\n    return sum(r.amount for r in rows) + {i}\n{}",
                "# padding\n".repeat(40)
            )
        };
        for i in 0..60 {
            std::fs::write(root.join(format!("src/ledger_{i:02}.py")), body(i)).unwrap();
        }
        for i in 0..10 {
            std::fs::write(root.join(format!("tests/test_ledger_{i}.py")), body(i)).unwrap();
        }
        std::fs::write(root.join("README.md"), "# ledger\n").unwrap();
        commit_all(&root);
        // Room for about a dozen of the 71 files.
        let size = body(10).len() as u64;
        let budget = ESTIMATE_FIXED + 12 * contexten_codemap::file_estimate(size);
        let prefix = test_prefix();
        let budget = budget.to_string();
        let cfg = config_with(
            dir.path(),
            true,
            &prefix,
            &[("CONTEXT_MEMORY_BUDGET_BYTES", budget.as_str())],
        );
        let handler = ContextHandler::new(cfg.engine(), &cfg);
        let env = task(
            Some(format!("file://{}", root.display())),
            Strategy::Context,
            "ledger_total_3 returns the wrong sum",
        );
        let Outcome::Forward(next) = handler.handle(env).await else {
            panic!("forwarded, not failed")
        };
        let context = next[0].envelope.context.clone().expect("context");
        let summary = context.summary.unwrap();
        let line = summary.lines().next().unwrap();
        let (analysed, total) = line
            .strip_prefix("Partial snapshot: analysed ")
            .and_then(|rest| rest.split_once(" files"))
            .and_then(|(counts, _)| counts.split_once(" of "))
            .map(|(n, m)| (n.parse::<usize>().unwrap(), m.parse::<usize>().unwrap()))
            .unwrap_or_else(|| panic!("{summary}"));
        assert_eq!(total, 71, "{line}");
        assert!((1..total).contains(&analysed), "{line}");
        assert!(
            line.contains(&format!("memory_budget {}", total - analysed)),
            "{line}"
        );
        // Source before tests and other text.
        assert!(
            context.items.iter().all(|i| i.path.starts_with("src/")),
            "{:?}",
            context.items
        );
        assert_eq!(context.extra["snapshot"]["partial"], true);
        assert_eq!(context.extra["snapshot"]["analysed"], analysed);
    }
}
