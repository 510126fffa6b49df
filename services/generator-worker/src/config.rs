//! The generator's settings, read once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `LLM_PROVIDER`, `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL`, `LLM_TIMEOUT_SECS`, `LLM_MAX_TOKENS`, `LLM_TEMPERATURE` | the provider (see `contexten_llm::LlmSettings`) | `openai`, OpenAI, unset, `gpt-4.1`, 60, 4096, 0.1 |
//! | `LLM_MAX_CONCURRENCY` | calls in flight per worker process, 1–256 | `8` |
//! | `LLM_REQUESTS_PER_MIN` | fleet-wide request limit (sliding window), 1–100000 | `60` |
//! | `LLM_TOKENS_PER_MIN` | fleet-wide token budget (prompt estimate + max tokens), 1000–100000000 | `200000` |
//! | `LLM_MAX_RETRIES` | retries of one call on 429/5xx/timeouts, 0–10 | `3` |
//! | `LLM_RETRY_BASE_MS` | first backoff delay (exponential with jitter), 10–60000 | `500` |
//! | `LLM_MAX_INLINE_WAIT_SECS` | longest in-process wait (Retry-After, limiter, open breaker) before rescheduling or falling back, 0–120 | `10` |
//! | `LLM_BREAKER_FAILURES` | consecutive failures that open the breaker, 1–100 | `5` |
//! | `LLM_BREAKER_OPEN_SECS` | how long it stays open before one probe, 1–3600 | `30` |
//! | `GENERATOR_CACHE_DIR` | disk cache directory; `off` disables the disk layer | `<tmp>/contexten/generator-cache` |
//! | `GENERATOR_CACHE_TTL_SECS` | time to live of cached answers, 1–2592000 | `86400` |
//! | `GENERATOR_CACHE_MEMORY_ENTRIES` | answers kept in memory, 1–1000000 | `1000` |
//! | `CACHE_ENCRYPTION_KEY` | AES-256-GCM key for disk and Redis entries: 32 bytes as 64 hex chars or base64 | unset (plain) |
//! | `CONTEXTEN_ALLOW_LOCAL_REPOS` | accept local paths / `file://` repositories | `0` |
//! | `GENERATOR_REPO_CACHE_DIR` | where remote repositories are fetched | `<tmp>/contexten/repos` |
//! | `GENERATOR_GIT_TIMEOUT_SECS` | bound of one git command, 1–3600 | `120` |
//! | `GENERATOR_CACHE_MAX_BYTES` | size budget of the answers on disk and the fetched repositories together, checked every 5 minutes; least recently used go first, down to 80 % (67108864–17592186044416) | `3221225472` (3 GiB) |
//! | `GITHUB_TOKEN` | fetches private GitHub repositories (sent to github.com only, never logged, never in a URL); or `GITHUB_TOKEN_FILE`, re-read at each fetch | unset |
//! | `GENERATOR_CONTEXT_ONLY_SOURCE` | `1`: the context-only answer (no `LLM_API_KEY`) also carries the prompt it would send, file contents included | `0` |

use contexten_cache::{DiskBudget, EncryptionKey, budget};
use contexten_config::{ConfigError, Env, SecretSource};
use contexten_llm::LlmSettings;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the generate handler needs to be built.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub llm: LlmSettings,
    /// `LLM_MAX_CONCURRENCY`.
    pub max_concurrency: usize,
    /// `LLM_REQUESTS_PER_MIN`.
    pub requests_per_min: u32,
    /// `LLM_TOKENS_PER_MIN`.
    pub tokens_per_min: u64,
    /// `LLM_MAX_RETRIES`.
    pub max_retries: u32,
    /// `LLM_RETRY_BASE_MS`.
    pub retry_base: Duration,
    /// `LLM_MAX_INLINE_WAIT_SECS`.
    pub inline_wait: Duration,
    /// `LLM_BREAKER_FAILURES`.
    pub breaker_failures: u32,
    /// `LLM_BREAKER_OPEN_SECS`.
    pub breaker_open: Duration,
    /// `GENERATOR_CACHE_DIR` (`None` = no disk layer).
    pub cache_dir: Option<PathBuf>,
    /// `GENERATOR_CACHE_TTL_SECS`.
    pub cache_ttl: Duration,
    /// `GENERATOR_CACHE_MEMORY_ENTRIES`.
    pub cache_memory_entries: u64,
    /// `CACHE_ENCRYPTION_KEY`.
    pub encryption: Option<EncryptionKey>,
    /// `CONTEXTEN_ALLOW_LOCAL_REPOS`.
    pub allow_local_repos: bool,
    /// The outbound guard for repository URLs (`CONTEXTEN_OUTBOUND_ALLOW`,
    /// `CONTEXTEN_ALLOW_LOCAL_REPOS`, `CONTEXTEN_GIT_ALLOW_SSH`).
    pub outbound: contexten_trust::outbound::OutboundGuard,
    /// `GENERATOR_REPO_CACHE_DIR`.
    pub repo_cache_dir: PathBuf,
    /// `GENERATOR_GIT_TIMEOUT_SECS`.
    pub git_timeout: Duration,
    /// `GITHUB_TOKEN`: fetches private GitHub repositories (never logged).
    pub github_token: Option<SecretSource>,
    /// `GENERATOR_CACHE_MAX_BYTES`: size budget of `cache_dir` + `repo_cache_dir`.
    pub cache_max_bytes: u64,
    /// `GENERATOR_CONTEXT_ONLY_SOURCE`: the context-only answer pastes the prompt
    /// (redacted file contents included) only when an operator turns this on;
    /// the answer goes wherever the request came from.
    pub context_only_source: bool,
}

impl GeneratorConfig {
    /// Reads and validates the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let tmp = std::env::temp_dir().join("contexten");
        let cache_dir = match env.raw("GENERATOR_CACHE_DIR") {
            Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
            Some(v) => Some(PathBuf::from(v.trim())),
            None => Some(tmp.join("generator-cache")),
        };
        let encryption = EncryptionKey::from_env(env)?;
        Ok(GeneratorConfig {
            llm: LlmSettings::from_env(env)?,
            max_concurrency: env.ranged("LLM_MAX_CONCURRENCY", 8, 1, 256)?,
            requests_per_min: env.ranged("LLM_REQUESTS_PER_MIN", 60, 1, 100_000)?,
            tokens_per_min: env.ranged("LLM_TOKENS_PER_MIN", 200_000, 1_000, 100_000_000)?,
            max_retries: env.ranged("LLM_MAX_RETRIES", 3, 0, 10)?,
            retry_base: Duration::from_millis(env.ranged("LLM_RETRY_BASE_MS", 500, 10, 60_000)?),
            inline_wait: Duration::from_secs(env.ranged("LLM_MAX_INLINE_WAIT_SECS", 10, 0, 120)?),
            breaker_failures: env.ranged("LLM_BREAKER_FAILURES", 5, 1, 100)?,
            breaker_open: Duration::from_secs(env.ranged("LLM_BREAKER_OPEN_SECS", 30, 1, 3600)?),
            cache_dir,
            cache_ttl: Duration::from_secs(env.ranged(
                "GENERATOR_CACHE_TTL_SECS",
                86_400,
                1,
                30 * 86_400,
            )?),
            cache_memory_entries: env.ranged(
                "GENERATOR_CACHE_MEMORY_ENTRIES",
                1000,
                1,
                1_000_000,
            )?,
            encryption,
            allow_local_repos: env.flag("CONTEXTEN_ALLOW_LOCAL_REPOS", false)?,
            outbound: contexten_trust::outbound::OutboundGuard::from_env(env)?,
            repo_cache_dir: env
                .raw("GENERATOR_REPO_CACHE_DIR")
                .map_or_else(|| tmp.join("repos"), |v| PathBuf::from(v.trim())),
            git_timeout: Duration::from_secs(env.ranged(
                "GENERATOR_GIT_TIMEOUT_SECS",
                120,
                1,
                3600,
            )?),
            github_token: env.secret_source("GITHUB_TOKEN")?,
            cache_max_bytes: budget::max_bytes_from_env(env, "GENERATOR_CACHE_MAX_BYTES")?,
            context_only_source: env.flag("GENERATOR_CONTEXT_ONLY_SOURCE", false)?,
        })
    }

    /// The size budget of the answers on disk and the fetched repositories
    /// (kept by [`DiskBudget::keep_pruned`]).
    pub fn disk_budget(&self) -> DiskBudget {
        let budget = DiskBudget::new(self.cache_max_bytes, budget::IN_USE_WINDOW)
            .dirs_in(self.repo_cache_dir.clone());
        match &self.cache_dir {
            Some(answers) => budget.files_under(answers.clone()),
            None => budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_credentials() {
        let cfg = GeneratorConfig::from_env(&Env::default()).unwrap();
        assert!(cfg.llm.api_key.is_none());
        assert_eq!(cfg.max_retries, 3);
        assert!(cfg.cache_dir.is_some() && cfg.encryption.is_none());
        assert!(!cfg.allow_local_repos);
        assert!(
            !cfg.context_only_source,
            "no file contents in answers by default"
        );
        let on = Env::from_pairs([("GENERATOR_CONTEXT_ONLY_SOURCE", "1")]);
        assert!(GeneratorConfig::from_env(&on).unwrap().context_only_source);
        let bad = Env::from_pairs([("GENERATOR_CONTEXT_ONLY_SOURCE", "maybe")]);
        assert_eq!(
            GeneratorConfig::from_env(&bad).unwrap_err().var,
            "GENERATOR_CONTEXT_ONLY_SOURCE"
        );
    }

    #[test]
    fn a_bad_key_is_named_but_never_shown() {
        let bad = ["not-", "a-valid-", "key"].concat();
        let err =
            GeneratorConfig::from_env(&Env::from_pairs([("CACHE_ENCRYPTION_KEY", bad.as_str())]))
                .unwrap_err();
        assert_eq!(err.var, "CACHE_ENCRYPTION_KEY");
        assert!(!err.to_string().contains(&bad));
        let off =
            GeneratorConfig::from_env(&Env::from_pairs([("GENERATOR_CACHE_DIR", "off")])).unwrap();
        assert!(off.cache_dir.is_none());
    }

    #[test]
    fn the_disk_budget_covers_answers_and_fetched_repositories() {
        let root = tempfile::tempdir().unwrap();
        let (answers, repos) = (root.path().join("answers"), root.path().join("repos"));
        let env = Env::from_pairs([
            ("GENERATOR_CACHE_DIR", answers.to_str().unwrap()),
            ("GENERATOR_REPO_CACHE_DIR", repos.to_str().unwrap()),
        ]);
        let mut cfg = GeneratorConfig::from_env(&env).unwrap();
        assert_eq!(cfg.cache_max_bytes, budget::DEFAULT_MAX_BYTES);
        let bad = Env::from_pairs([("GENERATOR_CACHE_MAX_BYTES", "4096")]);
        assert_eq!(
            GeneratorConfig::from_env(&bad).unwrap_err().var,
            "GENERATOR_CACHE_MAX_BYTES"
        );
        let day_old = |path: std::path::PathBuf| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![b'x'; 4096]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
                .unwrap();
            path
        };
        let answer = day_old(answers.join("ab/abcdef"));
        let repo = day_old(repos.join("0123.git/FETCH_HEAD"));
        let fresh = repos.join("4567.git/FETCH_HEAD");
        std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
        std::fs::write(&fresh, b"in use").unwrap();
        cfg.cache_max_bytes = 1;
        let report = cfg.disk_budget().prune().unwrap();
        assert_eq!((report.files_removed, report.dirs_removed), (1, 1));
        assert!(!answer.exists() && !repo.parent().unwrap().exists());
        assert!(fresh.exists(), "used in the last 10 minutes");
    }
}
