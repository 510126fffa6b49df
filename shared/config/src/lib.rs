//! Settings shared by every binary (docs/design.md §11), read once from the environment at
//! start and validated into real types. Each binary builds its own config struct
//! from these parts; nothing reads `std::env` after start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `AMQP_URL` | RabbitMQ; the host part may list several nodes (`h1:5672,h2:5672`) | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `AMQP_ADDRESSES` | cluster nodes as `host:port,host:port`, tried in turn (credentials, vhost and scheme from `AMQP_URL`) | the host(s) of `AMQP_URL` |
//! | `REDIS_URL` | the cache Redis (evictable: LLM responses, shared analyses) | `redis://127.0.0.1:6379` |
//! | `REDIS_RECORDS_URL` | the records Redis (dedup claims, reply ledger, run records, completion marks, payloads; `noeviction`) | `REDIS_URL` |
//! | `REDIS_SENTINELS` | Redis Sentinel nodes as `host:port,host:port`: the masters are found through them (password and db from the URLs, their hosts ignored) | unset (the URLs' hosts) |
//! | `REDIS_SENTINEL_MASTER` | the sentinel master name of the cache Redis | `mymaster` |
//! | `REDIS_RECORDS_SENTINEL_MASTER` | the sentinel master name of the records Redis | `REDIS_SENTINEL_MASTER` |
//! | `REDIS_WAIT_REPLICAS` | replicas that must hold a record write before it is acknowledged (`WAIT`; 0 = off) | `1` with sentinels, else `0` |
//! | `REDIS_WAIT_TIMEOUT_MS` | longest `WAIT` for those replicas (1–60000) | `500` |
//! | `CONTEXTEN_PREFIX` | prefix of every exchange, queue and Redis key | `contexten` |
//! | `HEALTH_ADDR` | a worker's `/healthz`, `/readyz`, `/metrics` listener | per service |
//! | `WORKER_PREFETCH` | unacknowledged deliveries per worker (1–1000) = handlers in flight | per service |
//! | `MAX_ATTEMPTS` | handler attempts per stage before dead-lettering (1–100) | `5` |
//! | `RETRY_TIERS_MS` | delay queue tiers in milliseconds, ascending | `1000,5000,15000,30000,60000,120000,300000` |
//! | `SHUTDOWN_TIMEOUT_SECS` | deadline for in-flight work on SIGTERM | `30` |
//! | `PAYLOAD_INLINE_LIMIT_BYTES` | envelopes above this travel through Redis by reference | `262144` |
//! | `MAX_DELIVERIES` | deliveries of one message without an outcome (a crashed worker) before it is dead-lettered as `poison` (1–100) | `5` |
//! | `PUBLISH_CONFIRM_TIMEOUT_MS` | longest wait for a publish and its confirm (100–600000) | `3000` |
//! | `DEAD_QUEUE_MAX_LENGTH` | messages a dead queue holds before refusing more (1–100000000) | `100000` |
//! | `QUEUE_TYPE` | `classic` (one priority queue per stage) or `quorum` (replicated; one queue per priority lane) | `classic` |
//! | `QUORUM_DELIVERY_LIMIT` | quorum mode: the broker's `x-delivery-limit`, redeliveries before it dead-letters a message itself (1–1000) | `20` |
//! | `LOG_FORMAT` | `json` or `pretty` | `json` |
//! | `RUST_LOG` | log filter | `info` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/HTTP collector; unset = no export | unset |
//! | `OTEL_SERVICE_NAME` | service name in traces | the binary's name |
//!
//! Every secret setting `NAME` may instead be given as `NAME_FILE`, a file
//! re-read when it changes ([`SecretSource`], module [`secret`]).

pub mod secret;

use secrecy::SecretString;
pub use secret::SecretSource;
use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString as Secret};

/// A setting that is present but malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={shown:?} is invalid: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    /// The value as shown in the message (masked for secrets).
    pub shown: String,
    pub expected: String,
}

/// Reads settings from the process environment or, in tests, from a map.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// A snapshot of the process environment.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// Settings from pairs, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The raw value, with empty strings treated as unset.
    pub fn raw(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A string with a default.
    pub fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or(default).to_owned()
    }

    /// A secret, wrapped so `Debug` never prints it. Reads `var` only: use
    /// [`Env::secret_source`] or [`Env::secret_value`] to accept `var_FILE` too.
    pub fn secret(&self, var: &str) -> Option<SecretString> {
        self.raw(var).map(|v| SecretString::from(v.to_owned()))
    }

    /// A parsed value with a default; `expected` describes the form in the error.
    pub fn parse<T>(&self, var: &str, default: T, expected: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| invalid(var, raw, expected)),
        }
    }

    /// An optional parsed value.
    pub fn parse_opt<T: FromStr>(
        &self,
        var: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.raw(var)
            .map(|raw| raw.trim().parse().map_err(|_| invalid(var, raw, expected)))
            .transpose()
    }

    /// An integer within `range`.
    pub fn ranged<T>(&self, var: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let expected = format!("an integer from {min} to {max}");
        let value = self.parse(var, default, &expected)?;
        if value < min || value > max {
            return Err(invalid(var, &value.to_string(), &expected));
        }
        Ok(value)
    }

    /// A boolean (`1/0`, `true/false`, `yes/no`).
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(invalid(var, &v, "1 or 0 (true/false)")),
        }
    }

    /// A URL with one of `schemes`.
    pub fn url(&self, var: &str, default: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
        let raw = self.raw(var).unwrap_or(default);
        let expected = format!("a URL with scheme {}", schemes.join(" or "));
        let parsed = url::Url::parse(raw).map_err(|_| invalid_masked(var, raw, &expected))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(invalid_masked(var, raw, &expected));
        }
        Ok(parsed)
    }
}

fn invalid(var: &str, raw: &str, expected: &str) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        shown: raw.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Like [`invalid`] but hides a URL's password.
fn invalid_masked(var: &str, raw: &str, expected: &str) -> ConfigError {
    let shown = match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => raw.to_owned(),
    };
    invalid(var, &shown, expected)
}

/// Connection and topology settings of the broker runtime.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f` (with
    /// several hosts, the first one's).
    pub amqp_url: SecretString,
    /// `AMQP_ADDRESSES` or the hosts `AMQP_URL` lists: the cluster nodes
    /// (`host:port`) a connection tries in turn. Empty: `amqp_url`'s host only.
    pub amqp_addresses: Vec<String>,
    /// `CONTEXTEN_PREFIX`, default `contexten`.
    pub prefix: String,
    /// `WORKER_PREFETCH`, 1–1000, default per service.
    pub prefetch: u16,
    /// `MAX_ATTEMPTS`, 1–100, default 5.
    pub max_attempts: u32,
    /// `RETRY_TIERS_MS`, ascending, default 1 s … 5 min in seven tiers.
    pub retry_tiers: Vec<Duration>,
    /// `SHUTDOWN_TIMEOUT_SECS`, 1–3600, default 30.
    pub shutdown_timeout: Duration,
    /// `PAYLOAD_INLINE_LIMIT_BYTES`, 1 KiB–64 MiB, default 256 KiB.
    pub payload_inline_limit: usize,
    /// `MAX_DELIVERIES`, 1–100, default 5: deliveries of one message that may
    /// end without an outcome (the worker died handling it) before it is
    /// dead-lettered as `poison`.
    pub max_deliveries: u32,
    /// `PUBLISH_CONFIRM_TIMEOUT_MS`, 100–600000, default 3000: the longest a
    /// publish waits for the broker's confirm (a broker alarm blocks publishers).
    pub publish_confirm_timeout: Duration,
    /// `DEAD_QUEUE_MAX_LENGTH`, 1–100000000, default 100000: messages a dead
    /// queue holds; further dead letters are refused (`x-overflow`
    /// `reject-publish`), logged and counted.
    pub dead_queue_max_length: u32,
    /// `QUEUE_TYPE`, `classic` (default) or `quorum` (docs/design.md §3).
    pub queue_type: QueueType,
    /// `QUORUM_DELIVERY_LIMIT`, 1–1000, default 20: in quorum mode the
    /// queues' `x-delivery-limit`; the runtime sets a message aside as
    /// `poison` on the last delivery the broker allows.
    pub delivery_limit: u32,
}

/// The default delay tiers (docs/design.md §3).
/// Fine enough that a delay never waits behind one much longer than itself
/// (RabbitMQ only expires the message at the head of a delay queue).
pub const DEFAULT_RETRY_TIERS_MS: &str = "1000,5000,15000,30000,60000,120000,300000";

/// The default bound on a publish and its confirm: under 5 s, so ingest
/// answers `503` within 5 s (a Redis round trip included) while an alarm blocks
/// publishers, and far above a healthy confirm (milliseconds).
pub const DEFAULT_PUBLISH_CONFIRM_TIMEOUT_MS: u64 = 3000;

/// The default length limit of a dead queue (README "Guarantees of the runtime").
pub const DEFAULT_DEAD_QUEUE_MAX_LENGTH: u32 = 100_000;

/// The default `QUORUM_DELIVERY_LIMIT`: well above `MAX_DELIVERIES` (5), since
/// the broker also counts the deliveries the runtime requeues itself (a failed
/// publish, a broker alarm), which the Redis count gives back.
pub const DEFAULT_QUORUM_DELIVERY_LIMIT: u32 = 20;

/// The kind of queue every stage, delay tier and dead queue is (`QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// One classic queue per stage with `x-max-priority` 3, on one node.
    #[default]
    Classic,
    /// Replicated Raft queues for a RabbitMQ cluster; no priorities, so one
    /// queue per priority lane.
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl FromStr for QueueType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(()),
        }
    }
}

impl BrokerSettings {
    /// Reads the broker settings; `default_prefetch` is the service's own default.
    pub fn from_env(env: &Env, default_prefetch: u16) -> Result<Self, ConfigError> {
        let raw = env
            .raw("AMQP_URL")
            .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f");
        let (single, url_hosts) = split_hosts(raw);
        let amqp = Env::from_pairs([("AMQP_URL", single.as_str())])
            .url("AMQP_URL", "", &["amqp", "amqps"])
            .map_err(|e| invalid_masked("AMQP_URL", &single, &e.expected))?;
        let amqp_addresses = match env.raw("AMQP_ADDRESSES") {
            Some(list) => host_ports("AMQP_ADDRESSES", list)?,
            None if url_hosts.len() > 1 => host_ports("AMQP_URL", &url_hosts.join(","))
                .map_err(|e| invalid_masked("AMQP_URL", &single, &e.expected))?,
            None => Vec::new(),
        };
        let prefix = env.string("CONTEXTEN_PREFIX", "contexten");
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "CONTEXTEN_PREFIX",
                &prefix,
                "letters, digits, '-' or '_'",
            ));
        }
        Ok(BrokerSettings {
            amqp_url: SecretString::from(amqp.to_string()),
            amqp_addresses,
            prefix,
            prefetch: env.ranged("WORKER_PREFETCH", default_prefetch, 1, 1000)?,
            max_attempts: env.ranged("MAX_ATTEMPTS", 5, 1, 100)?,
            retry_tiers: parse_tiers(env.raw("RETRY_TIERS_MS").unwrap_or(DEFAULT_RETRY_TIERS_MS))?,
            shutdown_timeout: Duration::from_secs(env.ranged(
                "SHUTDOWN_TIMEOUT_SECS",
                30,
                1,
                3600,
            )?),
            payload_inline_limit: env.ranged(
                "PAYLOAD_INLINE_LIMIT_BYTES",
                256 * 1024,
                1024,
                64 << 20,
            )?,
            max_deliveries: env.ranged("MAX_DELIVERIES", 5, 1, 100)?,
            publish_confirm_timeout: Duration::from_millis(env.ranged(
                "PUBLISH_CONFIRM_TIMEOUT_MS",
                DEFAULT_PUBLISH_CONFIRM_TIMEOUT_MS,
                100,
                600_000,
            )?),
            dead_queue_max_length: env.ranged(
                "DEAD_QUEUE_MAX_LENGTH",
                DEFAULT_DEAD_QUEUE_MAX_LENGTH,
                1,
                100_000_000,
            )?,
            queue_type: env.parse("QUEUE_TYPE", QueueType::Classic, "classic or quorum")?,
            delivery_limit: env.ranged(
                "QUORUM_DELIVERY_LIMIT",
                DEFAULT_QUORUM_DELIVERY_LIMIT,
                1,
                1000,
            )?,
        })
    }
}

/// `amqp://u:p@h1:5672,h2:5672/v` → (`amqp://u:p@h1:5672/v`, [`h1:5672`, `h2:5672`]):
/// a URL with several hosts (the form other AMQP clients accept) is not a URL
/// to the `url` crate.
fn split_hosts(raw: &str) -> (String, Vec<String>) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (raw.to_owned(), Vec::new());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let list: Vec<String> = hosts
        .split(',')
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    let first = list.first().cloned().unwrap_or_default();
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    (format!("{scheme}://{user}{first}{tail}"), list)
}

/// A `host:port,host:port` list (at least one entry; a port on each).
pub fn host_ports(var: &str, raw: &str) -> Result<Vec<String>, ConfigError> {
    let expected = "host:port entries separated by commas, e.g. rabbit-0:5672,rabbit-1:5672";
    let list: Vec<String> = raw
        .split(',')
        .map(|part| part.trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect();
    let valid = |entry: &String| {
        entry.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(['/', '@', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    if list.is_empty() || !list.iter().all(valid) {
        return Err(invalid(var, raw, expected));
    }
    Ok(list)
}

fn parse_tiers(raw: &str) -> Result<Vec<Duration>, ConfigError> {
    let expected = "ascending delays in milliseconds separated by commas, e.g. 5000,30000,300000";
    let tiers: Vec<u64> = raw
        .split(',')
        .map(|part| part.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid("RETRY_TIERS_MS", raw, expected))?;
    let ascending = tiers.windows(2).all(|w| w[0] < w[1]);
    if tiers.is_empty() || tiers.len() > 10 || tiers[0] == 0 || !ascending {
        return Err(invalid("RETRY_TIERS_MS", raw, expected));
    }
    Ok(tiers.into_iter().map(Duration::from_millis).collect())
}

/// Redis settings: two roles (README "Redis: records and caches").
///
/// Records guarantee correctness (a dedup claim, a posted reply, a run record)
/// and must never be evicted; caches may be. Both may be the same Redis when it
/// runs with `noeviction`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL`: the cache Redis, default `redis://127.0.0.1:6379`.
    pub url: SecretString,
    /// `REDIS_RECORDS_URL`: the records Redis, default the value of `REDIS_URL`.
    pub records_url: SecretString,
    /// `REDIS_SENTINELS`: when set, both Redis are found through these
    /// sentinels (`host:port`) under their master names; the URLs then give
    /// only scheme, password and database.
    pub sentinels: Vec<String>,
    /// `REDIS_SENTINEL_MASTER`, default `mymaster`: the cache Redis's master name.
    pub sentinel_master: String,
    /// `REDIS_RECORDS_SENTINEL_MASTER`, default `REDIS_SENTINEL_MASTER`.
    pub records_sentinel_master: String,
    /// `REDIS_WAIT_REPLICAS` (0–10): replicas a record write must reach
    /// (`WAIT`) before it is acknowledged; default 1 with sentinels, else 0.
    pub wait_replicas: u32,
    /// `REDIS_WAIT_TIMEOUT_MS` (1–60000), default 500.
    pub wait_timeout: Duration,
}

const REDIS_SCHEMES: &[&str] = &["redis", "rediss"];

impl RedisSettings {
    /// Reads `REDIS_URL` and `REDIS_RECORDS_URL`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.url("REDIS_URL", "redis://127.0.0.1:6379", REDIS_SCHEMES)?;
        // Unset or empty (a chart value left blank): the same Redis as the caches.
        let records_url = match env.raw("REDIS_RECORDS_URL") {
            Some(_) => env.url("REDIS_RECORDS_URL", "", REDIS_SCHEMES)?,
            None => url.clone(),
        };
        let sentinels = match env.raw("REDIS_SENTINELS") {
            Some(list) => host_ports("REDIS_SENTINELS", list)?,
            None => Vec::new(),
        };
        let sentinel_master = env.string("REDIS_SENTINEL_MASTER", "mymaster");
        let records_sentinel_master = env.string("REDIS_RECORDS_SENTINEL_MASTER", &sentinel_master);
        let default_wait = if sentinels.is_empty() { 0 } else { 1 };
        Ok(RedisSettings {
            url: SecretString::from(url.to_string()),
            records_url: SecretString::from(records_url.to_string()),
            sentinels,
            sentinel_master,
            records_sentinel_master,
            wait_replicas: env.ranged("REDIS_WAIT_REPLICAS", default_wait, 0, 10)?,
            wait_timeout: Duration::from_millis(env.ranged(
                "REDIS_WAIT_TIMEOUT_MS",
                500,
                1,
                60_000,
            )?),
        })
    }

    /// Whether records and caches live in the same Redis.
    pub fn shared(&self) -> bool {
        self.url.expose_secret() == self.records_url.expose_secret()
            && self.sentinel_master == self.records_sentinel_master
    }
}

/// How logs and traces leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(()),
        }
    }
}

/// Telemetry settings.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// The service name in logs and traces (`OTEL_SERVICE_NAME`, default the binary's name).
    pub service_name: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: an OTLP/HTTP endpoint; unset means no export.
    pub otlp_endpoint: Option<url::Url>,
}

impl TelemetrySettings {
    /// Reads the telemetry settings for `service`.
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigError> {
        let otlp_endpoint = match env.raw("OTEL_EXPORTER_OTLP_ENDPOINT") {
            None => None,
            Some(_) => Some(env.url("OTEL_EXPORTER_OTLP_ENDPOINT", "", &["http", "https"])?),
        };
        Ok(TelemetrySettings {
            service_name: env.string("OTEL_SERVICE_NAME", service),
            log_format: env.parse("LOG_FORMAT", LogFormat::Json, "json or pretty")?,
            log_filter: env.string("RUST_LOG", "info"),
            otlp_endpoint,
        })
    }
}

/// A socket address setting with a default.
pub fn socket_addr(env: &Env, var: &str, default: &str) -> Result<SocketAddr, ConfigError> {
    let raw = env.raw(var).unwrap_or(default);
    raw.parse().map_err(|_| {
        invalid(
            var,
            raw,
            "host:port with an IP address, e.g. 127.0.0.1:8080",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let env = Env::from_pairs([]);
        let broker = BrokerSettings::from_env(&env, 8).unwrap();
        assert_eq!(broker.prefix, "contexten");
        assert_eq!(broker.prefetch, 8);
        assert_eq!(broker.max_attempts, 5);
        assert_eq!(broker.retry_tiers.len(), 7);
        assert_eq!(broker.payload_inline_limit, 256 * 1024);
        assert_eq!(broker.max_deliveries, 5);
        assert_eq!(broker.publish_confirm_timeout, Duration::from_millis(3000));
        assert_eq!(broker.dead_queue_max_length, 100_000);
        assert_eq!(broker.queue_type, QueueType::Classic);
        assert_eq!(broker.delivery_limit, 20);
        assert!(
            broker
                .amqp_url
                .expose_secret()
                .starts_with("amqp://guest:guest@127.0.0.1:5672")
        );
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.url.expose_secret(), "redis://127.0.0.1:6379");
        assert_eq!(redis.records_url.expose_secret(), "redis://127.0.0.1:6379");
        assert!(redis.shared());
    }

    #[test]
    fn the_records_redis_defaults_to_the_cache_redis() {
        let env = Env::from_pairs([("REDIS_URL", "redis://cache:6379/2")]);
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.records_url.expose_secret(), "redis://cache:6379/2");
        assert!(redis.shared());

        let env = Env::from_pairs([
            ("REDIS_URL", "redis://cache:6379"),
            ("REDIS_RECORDS_URL", "rediss://:pw@records:6380/1"),
        ]);
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.url.expose_secret(), "redis://cache:6379");
        assert_eq!(
            redis.records_url.expose_secret(),
            "rediss://:pw@records:6380/1"
        );
        assert!(!redis.shared());
        assert!(!format!("{redis:?}").contains("pw@"), "{redis:?}");

        let env = Env::from_pairs([("REDIS_RECORDS_URL", " ")]);
        assert!(RedisSettings::from_env(&env).unwrap().shared());
    }

    #[test]
    fn a_records_url_with_another_scheme_names_its_variable() {
        let env = Env::from_pairs([("REDIS_RECORDS_URL", "http://user:hunter2@records")]);
        let err = RedisSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "REDIS_RECORDS_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = RedisSettings::from_env(&Env::from_pairs([("REDIS_RECORDS_URL", "not a url")]))
            .unwrap_err();
        assert_eq!(err.var, "REDIS_RECORDS_URL");
    }

    #[test]
    fn a_bad_setting_names_its_variable_and_form() {
        let env = Env::from_pairs([("WORKER_PREFETCH", "0")]);
        let err = BrokerSettings::from_env(&env, 8).unwrap_err();
        assert_eq!(err.var, "WORKER_PREFETCH");
        assert!(err.to_string().contains("from 1 to 1000"), "{err}");

        let err = BrokerSettings::from_env(&Env::from_pairs([("RETRY_TIERS_MS", "30,5")]), 8)
            .unwrap_err();
        assert_eq!(err.var, "RETRY_TIERS_MS");

        let err =
            BrokerSettings::from_env(&Env::from_pairs([("AMQP_URL", "http://x")]), 8).unwrap_err();
        assert_eq!(err.var, "AMQP_URL");

        for var in [
            "MAX_DELIVERIES",
            "PUBLISH_CONFIRM_TIMEOUT_MS",
            "DEAD_QUEUE_MAX_LENGTH",
        ] {
            let err = BrokerSettings::from_env(&Env::from_pairs([(var, "0")]), 8).unwrap_err();
            assert_eq!(err.var, var);
        }

        let err = socket_addr(
            &Env::from_pairs([("HEALTH_ADDR", "localhost")]),
            "HEALTH_ADDR",
            "127.0.0.1:1",
        )
        .unwrap_err();
        assert_eq!(err.var, "HEALTH_ADDR");
    }

    #[test]
    fn passwords_never_appear_in_errors_or_debug() {
        let env = Env::from_pairs([("REDIS_URL", "http://user:hunter2@host")]);
        let err = RedisSettings::from_env(&env).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let env = Env::from_pairs([("AMQP_URL", "amqp://user:hunter2@host/%2f")]);
        let broker = BrokerSettings::from_env(&env, 1).unwrap();
        assert!(!format!("{broker:?}").contains("hunter2"));
    }

    #[test]
    fn several_broker_addresses_come_from_the_url_or_their_own_setting() {
        let env = Env::from_pairs([("AMQP_URL", "amqp://u:pw@h1:5672,h2:5673/%2f")]);
        let broker = BrokerSettings::from_env(&env, 1).unwrap();
        assert_eq!(broker.amqp_url.expose_secret(), "amqp://u:pw@h1:5672/%2f");
        assert_eq!(broker.amqp_addresses, ["h1:5672", "h2:5673"]);

        let env = Env::from_pairs([
            ("AMQP_URL", "amqps://u:pw@ignored:5671/prod"),
            ("AMQP_ADDRESSES", "r0:5671, r1:5671,r2:5671"),
        ]);
        let broker = BrokerSettings::from_env(&env, 1).unwrap();
        assert_eq!(broker.amqp_addresses, ["r0:5671", "r1:5671", "r2:5671"]);

        let broker = BrokerSettings::from_env(&Env::from_pairs([]), 1).unwrap();
        assert!(broker.amqp_addresses.is_empty());

        for bad in ["r0", "r0:x", ":5672", "r0:5672,r1"] {
            let err = BrokerSettings::from_env(&Env::from_pairs([("AMQP_ADDRESSES", bad)]), 1)
                .unwrap_err();
            assert_eq!(err.var, "AMQP_ADDRESSES", "{bad}");
        }
        let env = Env::from_pairs([("AMQP_URL", "amqp://u:hunter2@h1:5672,h2:x/%2f")]);
        let err = BrokerSettings::from_env(&env, 1).unwrap_err();
        assert_eq!(err.var, "AMQP_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn sentinels_name_the_masters_and_turn_wait_on() {
        let redis = RedisSettings::from_env(&Env::from_pairs([])).unwrap();
        assert!(redis.sentinels.is_empty());
        assert_eq!(redis.wait_replicas, 0);

        let env = Env::from_pairs([
            ("REDIS_SENTINELS", "s0:26379,s1:26379"),
            ("REDIS_RECORDS_SENTINEL_MASTER", "records"),
        ]);
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.sentinels, ["s0:26379", "s1:26379"]);
        assert_eq!(redis.sentinel_master, "mymaster");
        assert_eq!(redis.records_sentinel_master, "records");
        assert!(!redis.shared(), "two masters are two Redis");
        assert_eq!(redis.wait_replicas, 1);
        assert_eq!(redis.wait_timeout, Duration::from_millis(500));

        let err =
            RedisSettings::from_env(&Env::from_pairs([("REDIS_SENTINELS", "s0")])).unwrap_err();
        assert_eq!(err.var, "REDIS_SENTINELS");
    }

    #[test]
    fn the_queue_type_is_classic_or_quorum_and_nothing_else() {
        let env = Env::from_pairs([("QUEUE_TYPE", "quorum"), ("QUORUM_DELIVERY_LIMIT", "3")]);
        let broker = BrokerSettings::from_env(&env, 1).unwrap();
        assert_eq!(broker.queue_type, QueueType::Quorum);
        assert_eq!(broker.delivery_limit, 3);
        for bad in ["Quorum", "stream", "mirrored"] {
            let err =
                BrokerSettings::from_env(&Env::from_pairs([("QUEUE_TYPE", bad)]), 1).unwrap_err();
            assert_eq!(err.var, "QUEUE_TYPE");
            assert!(err.to_string().contains("classic or quorum"), "{err}");
        }
        let err = BrokerSettings::from_env(&Env::from_pairs([("QUORUM_DELIVERY_LIMIT", "0")]), 1)
            .unwrap_err();
        assert_eq!(err.var, "QUORUM_DELIVERY_LIMIT");
    }

    #[test]
    fn flags_accept_the_usual_spellings() {
        let env = Env::from_pairs([("A", "1"), ("B", "false"), ("C", "maybe")]);
        assert!(env.flag("A", false).unwrap());
        assert!(!env.flag("B", true).unwrap());
        assert!(env.flag("C", true).is_err());
        assert!(env.flag("D", true).unwrap());
    }
}
