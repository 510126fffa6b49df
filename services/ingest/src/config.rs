//! ingest's settings (docs/design.md §11 names plus ingest's own), read once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `INGEST_ADDR` | HTTP listener (webhooks, `/v1`, health, metrics) | `127.0.0.1:8080` |
//! | `INGEST_WORKER_THREADS` | tokio worker threads (1–64); ingest scales out by replicas | `1` |
//! | `GITHUB_WEBHOOK_SECRET` | GitHub webhook secret; unset = GitHub disabled | unset |
//! | `LINEAR_WEBHOOK_SECRET` | Linear signing secret; unset = Linear disabled | unset |
//! | `SLACK_SIGNING_SECRET` | Slack signing secret; unset = Slack disabled | unset |
//! | `GITLAB_WEBHOOK_SECRET` | GitLab webhook secret token (`X-Gitlab-Token`); unset = GitLab disabled | unset |
//!
//! Each webhook secret may be given as `<NAME>_FILE` instead (re-read within a
//! second of a change) and may hold several secrets, one per line, any of which
//! verifies a delivery: add the new one as a second line, switch the provider,
//! then remove the old line.
//!
//! | `CONTEXTEN_COMMAND_PREFIX` | the command that addresses the bot | `/contexten` |
//! | `CONTEXTEN_BOT_LOGIN` | the bot's GitHub login (mentions; its own events ignored) | unset |
//! | `LINEAR_BOT_USER_ID` | the bot's Linear user id (assignment trigger; its own events ignored) | unset |
//! | `CONTEXTEN_TRIGGER_LABEL` | the label that triggers the bot on GitHub and Linear | `contexten` |
//! | `CONTEXTEN_ALLOWED_ASSOCIATIONS` | GitHub `author_association`s allowed to trigger | `OWNER,MEMBER,COLLABORATOR` |
//! | `CONTEXTEN_ROUTING_RULES` | TOML strategy/priority rules | shipped `routing.toml` |
//! | `CONTEXTEN_API_TOKENS_FILE` | hashed API tokens with scopes (TOML), reloaded on change | unset |
//! | `CONTEXTEN_POLICY_FILE` | repository access policy (TOML), reloaded on change; see README "Security model" | unset: only a GitHub event's own repository |
//! | `CONTEXTEN_API_TOKENS` | the same tokens inline: `name:sha256hex:scope+scope,...` | unset |
//! | `CONTEXTEN_ALLOW_LOCAL_REPOS` | accept `file://` repository URLs from the API; loopback URLs pass the outbound guard (development only) | `0` |
//! | `CONTEXTEN_OUTBOUND_ALLOW` | hosts, `*.domain`, addresses or CIDRs that API-named repository and callback URLs may reach although private (on-premises git servers, internal receivers) | unset |
//! | `CONTEXTEN_GIT_SERVERS` | base URLs of on-premises git servers whose repository URLs are recognised in message text, besides github.com and gitlab.com | unset |
//! | `CONTEXTEN_GIT_ALLOW_SSH` | accept `ssh://` and `git@host:path` repository URLs | `0` |
//! | `INGEST_MAX_BODY_BYTES` | request body limit (1 KiB–64 MiB) | `1048576` |
//! | `INGEST_DEDUP_TTL_SECS` | how long a delivery id is remembered (60 s–30 d) | `259200` (3 days: GitHub's redelivery horizon) |
//! | `INGEST_CONVERSATION_TTL_SECS` | how long a conversation remembers its last task | `2592000` (30 days) |
//! | `SLACK_TIMESTAMP_TOLERANCE_SECS` | Slack signature window | `300` |
//! | `LINEAR_TIMESTAMP_TOLERANCE_SECS` | Linear `webhookTimestamp` window | `60` |
//! | `INGEST_REQUESTER_LIMIT`, `INGEST_REQUESTER_WINDOW_SECS` | requests one requester (Slack user, Linear user, GitHub login, API token) may make per window, whole fleet | `30`, `600` |
//! | `INGEST_RETRY_AFTER_SECS` | `Retry-After` on 503 while the broker is down | `5` |
//! | `INGEST_FAILED_DELIVERIES_FILE` | where GitHub deliveries refused while broker and Redis were down are recorded | `<temp dir>/contexten-ingest-failed-deliveries.jsonl` |
//! | `GITHUB_API_URL`, `GITHUB_TOKEN` | `redeliver-failed` subcommand | `https://api.github.com`, unset |
//! | `CONTEXTEN_CONSOLE` and the console's others | the operator console at `/console` (see [`crate::console`]) | `0` (off) |

use crate::admission::RequesterLimit;
use crate::gate::RequesterGate;
use crate::routing::{Routing, RulesError};
use contexten_config::{
    BrokerSettings, ConfigError, Env, RedisSettings, Secret, SecretSource, TelemetrySettings,
    socket_addr,
};
use contexten_trust::outbound::{OutboundConfigError, OutboundGuard};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// ingest's settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `INGEST_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `INGEST_WORKER_THREADS`, 1–64, default 1. ingest waits on Redis and the
    /// broker and spends little CPU per request: in the load bench a second
    /// worker added no throughput (the broker is the limit) and about a fifth
    /// more CPU at half load, in wake-ups between the workers, with a higher
    /// p99. Without it tokio starts one worker per core of the node, many on a
    /// large node when the pod has no CPU limit. Scale out with replicas.
    pub worker_threads: usize,
    pub broker: BrokerSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub providers: ProviderSecrets,
    pub triggers: TriggerSettings,
    /// Who may ask (see [`crate::gate`] for the variables).
    pub requesters: RequesterGate,
    /// `CONTEXTEN_ROUTING_RULES`: loaded rules (shipped defaults when unset).
    pub routing: Routing,
    /// `CONTEXTEN_API_TOKENS_FILE`.
    pub api_tokens_file: Option<PathBuf>,
    /// `CONTEXTEN_POLICY_FILE`: which repositories each requester may name
    /// (README "Security model"); unset: only a GitHub event's own repository.
    pub policy_file: Option<PathBuf>,
    /// `CONTEXTEN_API_TOKENS` (inline token hashes).
    pub api_tokens_inline: Option<Secret>,
    /// `CONTEXTEN_ALLOW_LOCAL_REPOS`, default off.
    pub allow_local_repos: bool,
    /// The outbound URL guard (`CONTEXTEN_OUTBOUND_ALLOW`,
    /// `CONTEXTEN_ALLOW_LOCAL_REPOS`, `CONTEXTEN_GIT_ALLOW_SSH`): URLs an API
    /// request names are judged before the task is queued.
    pub outbound: OutboundGuard,
    pub limits: Limits,
    /// `INGEST_REQUESTER_LIMIT` (1–100000, default 30) requests per
    /// `INGEST_REQUESTER_WINDOW_SECS` (1–86400, default 600) per requester.
    pub requester_limit: RequesterLimit,
    /// `INGEST_FAILED_DELIVERIES_FILE`.
    pub failed_deliveries_file: PathBuf,
    /// The operator console (`CONTEXTEN_CONSOLE` and friends, see [`crate::console`]).
    pub console: crate::console::ConsoleSettings,
}

/// Webhook secrets; a provider without one is disabled (no fail-open). Each is
/// read per delivery (a `_FILE` may change) and may hold several secrets, one
/// per line, all accepted while a rotation is under way.
#[derive(Debug, Clone, Default)]
pub struct ProviderSecrets {
    /// `GITHUB_WEBHOOK_SECRET` or `GITHUB_WEBHOOK_SECRET_FILE`.
    pub github: Option<SecretSource>,
    /// `LINEAR_WEBHOOK_SECRET` or `LINEAR_WEBHOOK_SECRET_FILE`.
    pub linear: Option<SecretSource>,
    /// `SLACK_SIGNING_SECRET` or `SLACK_SIGNING_SECRET_FILE`.
    pub slack: Option<SecretSource>,
    /// `GITLAB_WEBHOOK_SECRET` or `GITLAB_WEBHOOK_SECRET_FILE`.
    pub gitlab: Option<SecretSource>,
}

/// What makes an event a task.
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// `CONTEXTEN_COMMAND_PREFIX`, default `/contexten`.
    pub command_prefix: String,
    /// `CONTEXTEN_BOT_LOGIN`: the bot's GitHub login, also its @mention on Linear.
    pub bot_login: Option<String>,
    /// `LINEAR_BOT_USER_ID`.
    pub linear_bot_user_id: Option<String>,
    /// `CONTEXTEN_TRIGGER_LABEL`, default `contexten`.
    pub trigger_label: String,
    /// `CONTEXTEN_ALLOWED_ASSOCIATIONS`, default `OWNER,MEMBER,COLLABORATOR`.
    pub allowed_associations: HashSet<String>,
}

/// Sizes, windows and lifetimes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `INGEST_MAX_BODY_BYTES`, 1 KiB–64 MiB, default 1 MiB.
    pub max_body_bytes: usize,
    /// `INGEST_DEDUP_TTL_SECS`, 60 s–30 days, default 3 days.
    pub dedup_ttl: Duration,
    /// `INGEST_CONVERSATION_TTL_SECS`, 60 s–365 days, default 30 days.
    pub conversation_ttl: Duration,
    /// `SLACK_TIMESTAMP_TOLERANCE_SECS`, 1–3600, default 300.
    pub slack_window: Duration,
    /// `LINEAR_TIMESTAMP_TOLERANCE_SECS`, 1–3600, default 60.
    pub linear_window: Duration,
    /// `INGEST_RETRY_AFTER_SECS`, 1–600, default 5.
    pub retry_after: Duration,
    /// `INGEST_REQUEST_TIMEOUT_SECS`, 1–300, default 15: a request (its body
    /// included) that takes longer is answered `408`, so a slow upload cannot
    /// hold a slot and its buffer. `GET /v1/tasks/{id}?wait=` gets this on top
    /// of its wait.
    pub request_timeout: Duration,
    /// `INGEST_HEADER_TIMEOUT_SECS`, 1–300, default 75: a connection whose
    /// next request's headers do not arrive within this is closed. hyper's
    /// timer also runs while a keep-alive connection is idle, so the default
    /// stays above the usual proxy idle timeouts (60 s for nginx upstreams and
    /// AWS load balancers): closing first would race the proxy's next request
    /// on that connection into a 502 for a webhook nobody retries.
    pub header_timeout: Duration,
    /// `INGEST_MAX_CONCURRENT_REQUESTS`, 1–100000, default 512: requests over
    /// this are answered `503 overloaded` with `Retry-After` at once. With the
    /// body limit it bounds the memory held by request bodies.
    pub max_concurrent_requests: usize,
    /// `INGEST_BODY_MEMORY_BYTES`, at least twice `INGEST_MAX_BODY_BYTES`, at
    /// most 16 GiB, default 64 MiB: request bodies being received at once
    /// reserve twice their length from this (what receiving one costs); a
    /// request that does not fit gets `503 overloaded`.
    pub body_memory_bytes: usize,
    /// `INGEST_MAX_CONNECTIONS`, 1–1000000, default 4096: connections over this
    /// wait in the kernel's accept queue.
    pub max_connections: usize,
}

/// Why ingest cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CONTEXTEN_ROUTING_RULES: {0}")]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Outbound(#[from] OutboundConfigError),
}

/// `CONTEXTEN_GIT_SERVERS`: base URLs (`https://git.corp.example`) of on-premises
/// git servers whose repository URLs are recognised in message text.
fn git_servers(env: &Env) -> Result<Vec<String>, ConfigError> {
    let raw = env.raw("CONTEXTEN_GIT_SERVERS").unwrap_or("");
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|server| match url::Url::parse(server) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {
                Ok(server.to_owned())
            }
            _ => Err(ConfigError {
                var: "CONTEXTEN_GIT_SERVERS".into(),
                shown: server.to_owned(),
                expected: "comma-separated base URLs such as https://git.corp.example".into(),
            }),
        })
        .collect()
}

impl IngestConfig {
    /// Reads the settings from `env`.
    pub fn from_env(env: &Env) -> Result<Self, StartError> {
        let rules_path: Option<PathBuf> = env.raw("CONTEXTEN_ROUTING_RULES").map(PathBuf::from);
        let prefix = env.string("CONTEXTEN_COMMAND_PREFIX", "/contexten");
        if prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError {
                var: "CONTEXTEN_COMMAND_PREFIX".into(),
                shown: prefix,
                expected: "one word without spaces, e.g. /contexten".into(),
            }
            .into());
        }
        let associations = env
            .string(
                "CONTEXTEN_ALLOWED_ASSOCIATIONS",
                "OWNER,MEMBER,COLLABORATOR",
            )
            .split(',')
            .map(|s| s.trim().to_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        let secs = |var: &str, default: u64, min: u64, max: u64| {
            env.ranged(var, default, min, max).map(Duration::from_secs)
        };
        let max_body_bytes = env.ranged("INGEST_MAX_BODY_BYTES", 1 << 20, 1024, 64 << 20)?;
        Ok(IngestConfig {
            addr: socket_addr(env, "INGEST_ADDR", "127.0.0.1:8080")?,
            worker_threads: env.ranged("INGEST_WORKER_THREADS", 1, 1, 64)?,
            broker: BrokerSettings::from_env(env, 1)?,
            redis: RedisSettings::from_env(env)?,
            telemetry: TelemetrySettings::from_env(env, "ingest")?,
            providers: ProviderSecrets {
                github: env.secret_source("GITHUB_WEBHOOK_SECRET")?,
                linear: env.secret_source("LINEAR_WEBHOOK_SECRET")?,
                slack: env.secret_source("SLACK_SIGNING_SECRET")?,
                gitlab: env.secret_source("GITLAB_WEBHOOK_SECRET")?,
            },
            triggers: TriggerSettings {
                command_prefix: prefix,
                bot_login: env.raw("CONTEXTEN_BOT_LOGIN").map(|s| s.trim().to_owned()),
                linear_bot_user_id: env.raw("LINEAR_BOT_USER_ID").map(|s| s.trim().to_owned()),
                trigger_label: env.string("CONTEXTEN_TRIGGER_LABEL", "contexten"),
                allowed_associations: associations,
            },
            requesters: RequesterGate::from_env(env),
            routing: Routing::load(rules_path.as_deref())?.with_git_servers(&git_servers(env)?),
            api_tokens_file: env.raw("CONTEXTEN_API_TOKENS_FILE").map(PathBuf::from),
            api_tokens_inline: env.secret("CONTEXTEN_API_TOKENS"),
            policy_file: env
                .raw("CONTEXTEN_POLICY_FILE")
                .map(|p| PathBuf::from(p.trim())),
            allow_local_repos: env.flag("CONTEXTEN_ALLOW_LOCAL_REPOS", false)?,
            outbound: OutboundGuard::from_env(env)?,
            limits: Limits {
                max_body_bytes,
                dedup_ttl: secs("INGEST_DEDUP_TTL_SECS", 3 * 86_400, 60, 30 * 86_400)?,
                conversation_ttl: secs(
                    "INGEST_CONVERSATION_TTL_SECS",
                    30 * 86_400,
                    60,
                    365 * 86_400,
                )?,
                slack_window: secs("SLACK_TIMESTAMP_TOLERANCE_SECS", 300, 1, 3600)?,
                linear_window: secs("LINEAR_TIMESTAMP_TOLERANCE_SECS", 60, 1, 3600)?,
                retry_after: secs("INGEST_RETRY_AFTER_SECS", 5, 1, 600)?,
                request_timeout: secs("INGEST_REQUEST_TIMEOUT_SECS", 15, 1, 300)?,
                header_timeout: secs("INGEST_HEADER_TIMEOUT_SECS", 75, 1, 300)?,
                max_concurrent_requests: env.ranged(
                    "INGEST_MAX_CONCURRENT_REQUESTS",
                    512,
                    1,
                    100_000,
                )?,
                max_connections: env.ranged("INGEST_MAX_CONNECTIONS", 4096, 1, 1_000_000)?,
                body_memory_bytes: env.ranged(
                    "INGEST_BODY_MEMORY_BYTES",
                    (64 << 20).max(2 * max_body_bytes),
                    2 * max_body_bytes,
                    16 << 30,
                )?,
            },
            requester_limit: RequesterLimit {
                limit: env.ranged("INGEST_REQUESTER_LIMIT", 30, 1, 100_000)?,
                window: secs("INGEST_REQUESTER_WINDOW_SECS", 600, 1, 86_400)?,
            },
            failed_deliveries_file: env
                .raw("INGEST_FAILED_DELIVERIES_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::temp_dir().join("contexten-ingest-failed-deliveries.jsonl")
                }),
            console: crate::console::ConsoleSettings::from_env(env)?,
        })
    }

    /// Says at start which providers are enabled, and why the others are not.
    pub fn log_providers(&self) {
        for source in crate::sources::registry() {
            let (name, var) = (source.name(), source.secret_var());
            if source.secret(&self.providers).is_some() {
                tracing::info!(provider = name, "webhooks enabled");
            } else {
                tracing::warn!(
                    provider = name,
                    "webhooks disabled: neither {var} nor {var}_FILE is set (requests are refused, never accepted unsigned)"
                );
            }
        }
        self.requesters.log_unfiltered(
            self.providers.slack.is_some(),
            self.providers.linear.is_some(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_every_provider_disabled() {
        let cfg = IngestConfig::from_env(&Env::from_pairs([])).unwrap();
        assert!(cfg.providers.github.is_none() && cfg.providers.slack.is_none());
        assert_eq!(cfg.triggers.command_prefix, "/contexten");
        assert_eq!(cfg.triggers.trigger_label, "contexten");
        assert!(cfg.triggers.allowed_associations.contains("MEMBER"));
        assert_eq!(cfg.limits.max_body_bytes, 1 << 20);
        assert_eq!(cfg.limits.linear_window, Duration::from_secs(60));
        assert_eq!(cfg.worker_threads, 1);
    }

    #[test]
    fn a_webhook_secret_file_is_read_and_may_not_be_set_beside_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("github");
        std::fs::write(&path, ["gh-old-", "0001\n", "gh-new-", "0002\n"].concat()).unwrap();
        let path = path.display().to_string();
        let cfg = IngestConfig::from_env(&Env::from_pairs([(
            "GITHUB_WEBHOOK_SECRET_FILE",
            path.as_str(),
        )]))
        .unwrap();
        let github = cfg.providers.github.expect("enabled from the file");
        assert_eq!(github.values().len(), 2);
        let value = ["gh-", "0003"].concat();
        let err = IngestConfig::from_env(&Env::from_pairs([
            ("GITHUB_WEBHOOK_SECRET", value.as_str()),
            ("GITHUB_WEBHOOK_SECRET_FILE", path.as_str()),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("GITHUB_WEBHOOK_SECRET_FILE"),
            "{err}"
        );
        assert!(!err.to_string().contains(&value), "{err}");
    }

    #[test]
    fn worker_threads_are_set_within_their_range() {
        let cfg =
            IngestConfig::from_env(&Env::from_pairs([("INGEST_WORKER_THREADS", "4")])).unwrap();
        assert_eq!(cfg.worker_threads, 4);
        for bad in ["0", "65", "two"] {
            let err = IngestConfig::from_env(&Env::from_pairs([("INGEST_WORKER_THREADS", bad)]))
                .unwrap_err();
            assert!(err.to_string().contains("INGEST_WORKER_THREADS"), "{err}");
        }
    }

    #[test]
    fn a_bad_setting_names_its_variable() {
        let err = IngestConfig::from_env(&Env::from_pairs([("INGEST_MAX_BODY_BYTES", "10")]))
            .unwrap_err();
        assert!(err.to_string().contains("INGEST_MAX_BODY_BYTES"), "{err}");
        let err = IngestConfig::from_env(&Env::from_pairs([(
            "CONTEXTEN_ROUTING_RULES",
            "/nonexistent/rules.toml",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("CONTEXTEN_ROUTING_RULES"), "{err}");
    }

    #[test]
    fn on_premises_git_servers_are_recognised_in_text() {
        let cfg = IngestConfig::from_env(&Env::from_pairs([(
            "CONTEXTEN_GIT_SERVERS",
            "https://git.corp.example/, http://127.0.0.1:9418",
        )]))
        .unwrap();
        let routing = &cfg.routing;
        assert_eq!(
            routing
                .repository_in_text("see https://git.corp.example/team/api/blob/x.rs")
                .as_deref(),
            Some("https://git.corp.example/team/api.git")
        );
        assert_eq!(
            routing
                .repository_in_text("in http://127.0.0.1:9418/acme/secret please")
                .as_deref(),
            Some("http://127.0.0.1:9418/acme/secret.git")
        );
        assert_eq!(
            routing
                .repository_in_text("https://github.com/o/r")
                .as_deref(),
            Some("https://github.com/o/r.git")
        );
        assert_eq!(
            routing.repository_in_text("http://127.0.0.2:9418/acme/secret"),
            None
        );
        for bad in ["git.corp.example", "ftp://x/"] {
            let err = IngestConfig::from_env(&Env::from_pairs([("CONTEXTEN_GIT_SERVERS", bad)]))
                .unwrap_err();
            assert!(err.to_string().contains("CONTEXTEN_GIT_SERVERS"), "{err}");
        }
    }
}
