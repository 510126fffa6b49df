//! The Redis side of the fleet (docs/design.md §3–5): completion records, the
//! task status record and large payloads, and the shared connections that the
//! caches, rate limiters and breakers key their own data on. Every call is
//! bounded by a timeout so a Redis outage degrades guarantees loudly instead of
//! stalling the stage.
//!
//! A crate of its own so that the caches and limiters need no RabbitMQ client;
//! the worker runtime (`contexten-broker`) re-exports [`Store`].

use contexten_config::{ExposeSecret, RedisSettings};
use contexten_envelope::{Names, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::health::Readiness;
use contexten_telemetry::metric;
use contexten_tls::TlsSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
pub use tokio_util::sync::CancellationToken;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    /// Redis is up but refused the write (`OOM`, `MISCONF`, `READONLY`,
    /// `NOREPLICAS`): a full or broken records store, reported and retried,
    /// never taken for "Redis unreachable".
    #[error("redis refused the write: {0}")]
    RedisRefused(String),
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(Duration),
    #[error("large payload {0} is gone from redis")]
    PayloadMissing(String),
    /// `CONTEXTEN_CA_FILE` or the client certificate is unusable.
    #[error(transparent)]
    Tls(#[from] contexten_tls::TlsError),
}

impl StoreError {
    /// Whether Redis was up and refused the write ([`StoreError::RedisRefused`]).
    pub fn is_refused(&self) -> bool {
        matches!(self, StoreError::RedisRefused(_))
    }
}

/// How long status records (and the completion marks in them) live: longer than
/// any task's life.
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;

/// Records a stage's completion: its fields always, the task's `state` and
/// `stage` only when no later hop has recorded them. A stage records after
/// publishing its successor, so the successor (a later hop) may have finished
/// first; its state must not be overwritten by the earlier one.
/// KEYS[1] the status record; ARGV: hop, state, stage, TTL, then field/value pairs.
const RECORD_COMPLETION: &str = r#"
local hop = tonumber(ARGV[1])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local recorded = tonumber(redis.call('HGET', KEYS[1], 'state_hop') or '-1')
if hop >= recorded then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'stage', ARGV[3], 'state_hop', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 0
"#;
/// How long an offloaded payload lives: longer than the longest retry chain.
const PAYLOAD_TTL_SECS: u64 = 2 * 24 * 3600;
/// Upper bound for one Redis round trip before the caller degrades.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Which Redis a [`Store`] handle talks to (README "Redis: records and caches").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisRole {
    /// `REDIS_RECORDS_URL`: what guarantees correctness; never evicted.
    Records,
    /// `REDIS_URL`: caches, evictable.
    Cache,
}

impl RedisRole {
    /// The metric label and the readiness component.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisRole::Records => "records",
            RedisRole::Cache => "cache",
        }
    }
}

/// A handle on Redis shared by every task of a worker (cheap to clone).
///
/// [`Store::new`] talks to the records Redis; [`Store::cache`] gives a handle
/// on the cache Redis with the same names. When both URLs are the same they
/// share one connection.
///
/// One multiplexed, self-reconnecting connection per Redis: every concurrent
/// delivery pipelines through it. (A checkout pool such as deadpool-redis pings
/// on every checkout, which doubled the Redis round trips per message in `make bench`.)
///
/// `E` is the error its calls answer: [`StoreError`] by default; the worker
/// runtime's handle (`contexten_broker::Store`) answers its `BrokerError`, so
/// that code written against it keeps one error type. [`Store::retyped`] turns
/// one into the other; both talk to the same connections.
pub struct Store<E = StoreError> {
    records: Arc<Link>,
    cache: Arc<Link>,
    role: RedisRole,
    names: Names,
    errors: PhantomData<fn() -> E>,
}

impl<E> Clone for Store<E> {
    fn clone(&self) -> Self {
        Store {
            records: self.records.clone(),
            cache: self.cache.clone(),
            role: self.role,
            names: self.names.clone(),
            errors: PhantomData,
        }
    }
}

/// One Redis: where to find it and the connection made on first use.
struct Link {
    source: Source,
    /// `host:port`, for errors (a wrong CA must say which Redis; never the password).
    endpoint: String,
    /// The connection in use; replaced when a sentinel names another master.
    connection: std::sync::Mutex<Option<Current>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    /// When the last attempt to connect failed: callers fail fast for a while
    /// instead of each paying a connection timeout while Redis is down.
    last_connect_failure: std::sync::Mutex<Option<std::time::Instant>>,
    /// `REDIS_WAIT_REPLICAS` and `REDIS_WAIT_TIMEOUT_MS` (records only).
    wait: Option<(u32, Duration)>,
}

/// Where a [`Link`] connects.
enum Source {
    /// One address (`REDIS_URL`): redis's connection manager reconnects to it.
    Fixed(redis::Client),
    /// The master the sentinels name (`REDIS_SENTINELS`): asked again on a
    /// connection error or `READONLY`, and every [`MASTER_CHECK`], since after
    /// a failover the old address is a replica or gone.
    Sentinel {
        sentinels: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
        master: String,
    },
}

/// A connection and the master address it was made to.
#[derive(Clone)]
struct Current {
    manager: ConnectionManager,
    address: String,
}

/// How often a sentinel link asks whether its master moved (components that
/// use [`Store::connection`] directly report no errors to the link).
const MASTER_CHECK: Duration = Duration::from_secs(1);

impl Link {
    /// A `rediss://` URL gets the extra roots and client certificate of `tls`.
    /// With sentinels, the URL gives scheme, password and database only.
    fn open(
        url: &str,
        settings: &RedisSettings,
        master: &str,
        wait: bool,
        tls: &TlsSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let source = if settings.sentinels.is_empty() {
            Source::Fixed(tls.redis_client(url)?)
        } else {
            Source::Sentinel {
                sentinels: tokio::sync::Mutex::new(sentinel_client(url, settings, master)?),
                master: master.to_owned(),
            }
        };
        let endpoint = match &source {
            Source::Fixed(_) => contexten_tls::endpoint(url),
            Source::Sentinel { .. } => {
                format!(
                    "sentinel master {master} via {}",
                    settings.sentinels.join(",")
                )
            }
        };
        Ok(Arc::new(Link {
            source,
            endpoint,
            connection: std::sync::Mutex::default(),
            connecting: tokio::sync::Mutex::default(),
            last_connect_failure: std::sync::Mutex::default(),
            wait: (wait && settings.wait_replicas > 0)
                .then_some((settings.wait_replicas, settings.wait_timeout)),
        }))
    }

    fn current(&self) -> Option<Current> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn connection(self: &Arc<Self>) -> Result<ConnectionManager, StoreError> {
        if let Some(current) = self.current() {
            return Ok(current.manager);
        }
        let _one = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current.manager);
        }
        let recently_failed = self
            .last_connect_failure
            .lock()
            .map(|at| at.is_some_and(|at| at.elapsed() < RECONNECT_PAUSE))
            .unwrap_or(false);
        if recently_failed {
            return Err(StoreError::Redis(
                "redis unreachable (recent connection attempt failed)".into(),
            ));
        }
        let result = match tokio::time::timeout(REDIS_TIMEOUT, self.connect()).await {
            Ok(Ok(current)) => {
                let manager = current.manager.clone();
                let first = self
                    .connection
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .replace(current)
                    .is_none();
                if first && matches!(self.source, Source::Sentinel { .. }) {
                    tokio::spawn(watch_master(Arc::downgrade(self)));
                }
                Ok(manager)
            }
            Ok(Err(e)) => Err(StoreError::Redis(format!(
                "cannot connect to {}: {e}",
                self.endpoint
            ))),
            Err(_) => Err(StoreError::RedisTimeout(REDIS_TIMEOUT)),
        };
        if let (Err(_), Ok(mut at)) = (&result, self.last_connect_failure.lock()) {
            *at = Some(std::time::Instant::now());
        }
        result
    }

    /// A new connection: to the fixed address, or to the master the sentinels
    /// name now.
    async fn connect(&self) -> redis::RedisResult<Current> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let client = match &self.source {
            Source::Fixed(client) => client.clone(),
            Source::Sentinel { sentinels, .. } => sentinels.lock().await.async_get_client().await?,
        };
        let address = client.get_connection_info().addr().to_string();
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Current { manager, address })
    }

    /// After an error on this link: a sentinel link drops its connection when
    /// the error says the master may have moved (unreachable, or `READONLY`:
    /// it became a replica), so the next call asks the sentinels again.
    fn failed(&self, error: &StoreError) {
        let Source::Sentinel { master, .. } = &self.source else {
            return;
        };
        let moved = match error {
            StoreError::Redis(_) | StoreError::RedisTimeout(_) => true,
            // "ReadOnly: You can't write against a read only replica."
            StoreError::RedisRefused(detail) => {
                let detail = detail.to_ascii_lowercase();
                detail.contains("read only") || detail.contains("noreplicas")
            }
            _ => false,
        };
        if moved {
            let dropped = self
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(old) = dropped {
                tracing::warn!(%error, master, address = old.address, "redis master may have moved; asking the sentinels again");
            }
        }
    }

    /// `WAIT` for the configured replicas after a record write on this
    /// connection (docs/operations.md "Running on a cluster"). Fewer replicas
    /// than asked fails the write as refused (`NOREPLICAS`), like Redis's own
    /// `min-replicas-to-write`: the caller retries rather than acknowledge a
    /// record a failover could lose.
    async fn replicated(self: &Arc<Self>) -> Result<(), StoreError> {
        let Some((replicas, timeout)) = self.wait else {
            return Ok(());
        };
        let mut connection = self.connection().await?;
        let reached: Result<i64, _> = tokio::time::timeout(
            timeout + REDIS_TIMEOUT,
            redis::cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis() as u64)
                .query_async(&mut connection),
        )
        .await
        .map_err(|_| StoreError::RedisTimeout(timeout + REDIS_TIMEOUT))
        .and_then(|r| r.map_err(redis_error));
        match reached {
            Ok(n) if n >= i64::from(replicas) => Ok(()),
            Ok(n) => {
                // Not on enough replicas: the master may be on its way out (a
                // failover promotes the replica first), so the write is
                // refused; the caller retries it on the master the sentinels
                // name next.
                let error = StoreError::RedisRefused(format!(
                    "NOREPLICAS the write reached {n} of {replicas} replicas within {timeout:?}"
                ));
                self.failed(&error);
                Err(error)
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }
}

/// Asks the sentinels every [`MASTER_CHECK`] which node is master and moves
/// the link's connection when it changed; ends with the link.
async fn watch_master(link: std::sync::Weak<Link>) {
    loop {
        tokio::time::sleep(MASTER_CHECK).await;
        let Some(link) = link.upgrade() else { return };
        let Source::Sentinel { sentinels, master } = &link.source else {
            return;
        };
        let named = {
            let mut sentinels = sentinels.lock().await;
            match tokio::time::timeout(REDIS_TIMEOUT, sentinels.async_get_client()).await {
                Ok(Ok(client)) => client.get_connection_info().addr().to_string(),
                _ => continue,
            }
        };
        let current = link.current().map(|c| c.address);
        if current.as_deref().is_some_and(|address| address != named) {
            tracing::warn!(
                master,
                from = current,
                to = named,
                "redis master moved; reconnecting"
            );
            link.connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
    }
}

/// A sentinel client for the master `master`, logging in to it with the
/// password, user and database of `url` (TLS when `url` is `rediss://`).
fn sentinel_client(
    url: &str,
    settings: &RedisSettings,
    master: &str,
) -> Result<redis::sentinel::SentinelClient, StoreError> {
    use redis::IntoConnectionInfo as _;
    let fail = |e: redis::RedisError| StoreError::Redis(format!("sentinel settings: {e}"));
    let info = url.into_connection_info().map_err(fail)?;
    let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(info.redis_settings().clone());
    if url.starts_with("rediss://") {
        node = node.set_tls_mode(redis::TlsMode::Secure);
    }
    let sentinels: Vec<String> = settings
        .sentinels
        .iter()
        .map(|address| format!("redis://{address}"))
        .collect();
    redis::sentinel::SentinelClient::build(
        sentinels,
        master,
        Some(node),
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(fail)
}

/// How long callers fail fast after a failed connection attempt.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Error codes with which a Redis refuses a write while it is up: out of
/// memory under `noeviction` (`OOM`), a failed persistence write (`MISCONF`),
/// a replica (`READONLY`) or too few replicas (`NOREPLICAS`).
const REFUSAL_CODES: [&str; 4] = ["OOM", "MISCONF", "READONLY", "NOREPLICAS"];

/// Turns a Redis error into a [`StoreError`]: a write Redis refused becomes
/// [`StoreError::RedisRefused`], which callers must not mistake for "Redis
/// unreachable" (README "Redis: records and caches").
pub fn redis_error(error: redis::RedisError) -> StoreError {
    let text = error.to_string();
    let refused = error.code().is_some_and(|code| REFUSAL_CODES.contains(&code))
        // Inside a script or a pipeline the code may only be in the text.
        || REFUSAL_CODES.iter().any(|code| text.contains(code))
        || text.contains("command not allowed when used memory");
    if refused {
        StoreError::RedisRefused(text)
    } else {
        StoreError::Redis(text)
    }
}

impl<E> std::fmt::Debug for Store<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("role", &self.role)
            .field("prefix", &self.names.prefix())
            .finish()
    }
}

impl<E> Store<E> {
    /// The same store on the cache Redis: for values that may be evicted and
    /// recomputed (the generator's LLM cache). Everything else stays on the
    /// records handle.
    pub fn cache(&self) -> Self {
        Store {
            role: RedisRole::Cache,
            ..self.clone()
        }
    }

    /// The same handle answering errors of type `F`: the caches and limiters
    /// keep a `Store<StoreError>` whatever handle they were given.
    pub fn retyped<F>(self) -> Store<F> {
        Store {
            records: self.records,
            cache: self.cache,
            role: self.role,
            names: self.names,
            errors: PhantomData,
        }
    }

    /// Which Redis this handle talks to.
    pub fn role(&self) -> RedisRole {
        self.role
    }

    /// Whether records and caches share one Redis.
    pub fn shared(&self) -> bool {
        Arc::ptr_eq(&self.records, &self.cache)
    }

    fn link(&self) -> &Arc<Link> {
        match self.role {
            RedisRole::Records => &self.records,
            RedisRole::Cache => &self.cache,
        }
    }

    /// The names this store derives its keys from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Counts a refused write (once per error, by role) and logs it: on the
    /// records Redis it is loud, on the cache Redis it is expected when full.
    fn refusal_noted(&self, error: StoreError) -> StoreError {
        if let StoreError::RedisRefused(detail) = &error {
            metric::redis_refused(self.role.as_str());
            match self.role {
                RedisRole::Records => {
                    tracing::warn!(%detail, "the records redis refused a write; the caller retries")
                }
                RedisRole::Cache => tracing::debug!(%detail, "the cache redis refused a write"),
            }
        }
        error
    }
}

impl<E: From<StoreError>> Store<E> {
    /// A store on the records Redis (`settings.records_url`), with its cache
    /// handle on `settings.url`; connections are made on first use, so this
    /// succeeds while Redis is down.
    /// `rediss://` URLs use the process's TLS settings (crate `contexten-tls`).
    pub fn new(settings: &RedisSettings, names: Names) -> Result<Self, E> {
        let tls = contexten_tls::global().map_err(|e| E::from(StoreError::Tls(e)))?;
        Self::with_tls(settings, names, tls)
    }

    /// [`Store::new`] with explicit TLS settings.
    pub fn with_tls(settings: &RedisSettings, names: Names, tls: &TlsSettings) -> Result<Self, E> {
        let records = Link::open(
            settings.records_url.expose_secret(),
            settings,
            &settings.records_sentinel_master,
            true,
            tls,
        )?;
        let cache = if settings.shared() {
            records.clone()
        } else {
            Link::open(
                settings.url.expose_secret(),
                settings,
                &settings.sentinel_master,
                false,
                tls,
            )?
        };
        Ok(Store {
            records,
            cache,
            role: RedisRole::Records,
            names,
            errors: PhantomData,
        })
    }

    /// The shared connection of this handle's Redis, for components with keys
    /// of their own (map their errors with [`redis_error`]).
    pub async fn connection(&self) -> Result<ConnectionManager, E> {
        Ok(self.link().connection().await?)
    }

    /// Runs one pipeline with the store's timeout.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        query: impl FnOnce() -> redis::Pipeline,
    ) -> Result<T, E> {
        let link = self.link();
        let result = async {
            let mut connection = link.connection().await?;
            let pipeline = query();
            tokio::time::timeout(REDIS_TIMEOUT, pipeline.query_async::<T>(&mut connection))
                .await
                .map_err(|_| StoreError::RedisTimeout(REDIS_TIMEOUT))?
                .map_err(|e| self.refusal_noted(redis_error(e)))
        }
        .await;
        if let Err(error) = &result {
            link.failed(error);
        }
        Ok(result?)
    }

    /// After a write that a caller will be told about (a dedup claim, a
    /// completion record): waits until `REDIS_WAIT_REPLICAS` replicas hold it
    /// (`WAIT`), so a sentinel failover cannot lose it. A no-op with
    /// `REDIS_WAIT_REPLICAS=0` (the default without sentinels) and on the
    /// cache handle.
    pub async fn replicated(&self) -> Result<(), E> {
        match self.role {
            RedisRole::Records => Ok(self.records.replicated().await?),
            RedisRole::Cache => Ok(()),
        }
    }

    /// Tells the link that a call on [`Store::connection`] failed, so a
    /// sentinel link looks for the master again (a no-op for one address).
    pub fn connection_failed(&self, error: &StoreError) {
        self.link().failed(error);
    }

    /// Answers `PONG` when Redis is usable.
    pub async fn ping(&self) -> Result<(), E> {
        let (_pong,): (String,) = self
            .run(|| {
                let mut p = redis::pipe();
                p.cmd("PING");
                p
            })
            .await?;
        Ok(())
    }

    /// Whether `stage` already completed this message (task and hop).
    pub async fn is_complete(&self, stage: Stage, envelope: &TaskEnvelope) -> Result<bool, E> {
        let key = self.names.status_key(envelope.task_id);
        let field = Names::completion_field(stage, envelope.hop);
        let (exists,): (bool,) = self
            .run(|| {
                let mut p = redis::pipe();
                p.hexists(&key, &field);
                p
            })
            .await?;
        Ok(exists)
    }

    /// Records that `stage` completed this message, with the task's new state and
    /// the stage's timing, in the task's status record: one round trip.
    pub async fn record_completion(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        state: &str,
    ) -> Result<(), E> {
        let key = self.names.status_key(envelope.task_id);
        let mut fields: Vec<(String, String)> = vec![
            (
                Names::completion_field(stage, envelope.hop),
                state.to_owned(),
            ),
            ("updated_at_ms".into(), now_ms().to_string()),
        ];
        if let Some(t) = envelope.timing(stage) {
            let timing = serde_json::json!({
                "started_at_ms": t.started_at_ms,
                "finished_at_ms": t.finished_at_ms.unwrap_or_else(now_ms),
            });
            fields.push((format!("timing:{}", stage.as_str()), timing.to_string()));
        }
        self.run::<()>(|| {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(RECORD_COMPLETION)
                .arg(1)
                .arg(&key)
                .arg(envelope.hop)
                .arg(state)
                .arg(stage.as_str())
                .arg(RECORD_TTL_SECS);
            for (field, value) in &fields {
                p.arg(field).arg(value);
            }
            p.ignore();
            p
        })
        .await?;
        self.replicated().await
    }

    /// Records that `stage` completed a side message of the task (an
    /// acknowledgement or progress note) without touching its state.
    pub async fn record_side_completion(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
    ) -> Result<(), E> {
        let key = self.names.status_key(envelope.task_id);
        let field = Names::completion_field(stage, envelope.hop);
        self.run::<()>(|| {
            let mut p = redis::pipe();
            p.hset(&key, &field, "done").ignore();
            p.expire(&key, RECORD_TTL_SECS as i64).ignore();
            p
        })
        .await
    }

    /// Stores a large payload and returns its key.
    pub async fn put_payload(&self, body: &[u8]) -> Result<String, E> {
        let key = self.names.payload_key(&uuid::Uuid::now_v7().to_string());
        self.run::<()>(|| {
            let mut p = redis::pipe();
            p.set_ex(&key, body, PAYLOAD_TTL_SECS).ignore();
            p
        })
        .await?;
        Ok(key)
    }

    /// Reads a large payload by key.
    pub async fn get_payload(&self, key: &str) -> Result<Vec<u8>, E> {
        // Only keys under our own prefix: a header must not read arbitrary keys.
        if !key.starts_with(&self.names.payload_key("")) {
            return Err(StoreError::PayloadMissing(key.to_owned()).into());
        }
        let (body,): (Option<Vec<u8>>,) = self
            .run(|| {
                let mut p = redis::pipe();
                p.get(key);
                p
            })
            .await?;
        body.ok_or_else(|| StoreError::PayloadMissing(key.to_owned()).into())
    }
}

impl<E> Store<E> {
    /// Warns once when the records Redis may evict (`maxmemory-policy` other
    /// than `noeviction`): a busy cache there would evict dedup claims. Managed
    /// services that refuse `CONFIG GET` are not checked.
    async fn warn_if_records_may_be_evicted(&self) {
        let Ok(mut connection) = self.records.connection().await else {
            return;
        };
        let mut command = redis::cmd("CONFIG");
        command.arg("GET").arg("maxmemory-policy");
        let reply = command.query_async::<Vec<String>>(&mut connection);
        let Ok(Ok(pair)) = tokio::time::timeout(REDIS_TIMEOUT, reply).await else {
            return;
        };
        if let Some(policy) = pair.get(1).filter(|p| p.as_str() != "noeviction") {
            tracing::warn!(
                policy = %policy,
                shared_with_cache = self.shared(),
                "the records redis (REDIS_RECORDS_URL) may evict records under maxmemory-policy {policy}: a full one could answer a webhook twice; use noeviction (README \"Redis: records and caches\")"
            );
        }
    }

    /// Keeps `readiness["redis"]` (the records Redis) current by pinging every
    /// few seconds; a separate cache Redis is pinged too and reported in the
    /// detail without failing readiness (without it caches only miss).
    pub async fn watch_health(self, readiness: Readiness, shutdown: CancellationToken) {
        let this: Store = self.retyped();
        let records = Store {
            role: RedisRole::Records,
            ..this.clone()
        };
        let cache = (!this.shared()).then(|| this.cache());
        let mut policy_checked = false;
        loop {
            let cache_detail = match &cache {
                None => String::new(),
                Some(cache) => match timed_ping(cache, "redis_cache").await {
                    Ok(()) => "; cache: pong".to_owned(),
                    Err(error) => format!("; cache: {error}"),
                },
            };
            match timed_ping(&records, "redis_records").await {
                Ok(()) => {
                    readiness.set("redis", true, format!("records: pong{cache_detail}"));
                    if !policy_checked {
                        policy_checked = true;
                        records.warn_if_records_may_be_evicted().await;
                    }
                }
                Err(error) => {
                    readiness.set("redis", false, format!("records: {error}{cache_detail}"))
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    }
}

/// A ping whose round-trip time `/status` reports under `name`.
async fn timed_ping(store: &Store, name: &str) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let result = store.ping().await;
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
    contexten_telemetry::health::record_round_trip(name, started.elapsed(), outcome);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::Env;

    /// A store on two Redis URLs nobody listens on: handles are made without
    /// connecting, and the first call fails fast.
    fn split_store() -> Store {
        let settings = RedisSettings::from_env(&Env::from_pairs([
            ("REDIS_URL", "redis://127.0.0.1:1/1"),
            ("REDIS_RECORDS_URL", "redis://127.0.0.1:1/0"),
        ]))
        .unwrap();
        Store::with_tls(&settings, Names::new("store-test"), &TlsSettings::none()).unwrap()
    }

    /// An error type of a caller's own, as the worker runtime's `BrokerError`.
    #[derive(Debug)]
    struct Wrapped(StoreError);

    impl From<StoreError> for Wrapped {
        fn from(error: StoreError) -> Self {
            Wrapped(error)
        }
    }

    #[tokio::test]
    async fn a_retyped_handle_keeps_its_redis_and_answers_the_new_error_type() {
        let store = split_store();
        assert!(!store.shared());
        let cache: Store<Wrapped> = store.cache().retyped();
        assert_eq!(cache.role(), RedisRole::Cache);
        assert_eq!(cache.names().prefix(), "store-test");
        // Still the same two connections, not copies.
        let back: Store = cache.clone().retyped();
        assert!(Arc::ptr_eq(&back.records, &store.records));
        assert!(Arc::ptr_eq(&back.cache, &store.cache));
        let Err(Wrapped(error)) = cache.ping().await else {
            panic!("nothing listens on port 1");
        };
        assert!(!error.is_refused(), "{error}");
        let Err(Wrapped(missing)) = cache.get_payload("not-ours").await else {
            panic!("a key outside the prefix is never read");
        };
        assert!(
            matches!(missing, StoreError::PayloadMissing(_)),
            "{missing}"
        );
    }
}
