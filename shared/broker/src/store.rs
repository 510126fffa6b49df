//! The Redis side of the runtime: completion records, the task status record and
//! large payloads. Every call is bounded by a timeout so a Redis outage degrades
//! guarantees loudly instead of stalling the stage.

use crate::BrokerError;
use contexten_config::{ExposeSecret, RedisSettings};
use contexten_envelope::{Names, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::health::Readiness;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// How long status records (and the completion marks in them) live: longer than
/// any task's life.
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long an offloaded payload lives: longer than the longest retry chain.
const PAYLOAD_TTL_SECS: u64 = 2 * 24 * 3600;
/// Upper bound for one Redis round trip before the caller degrades.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on Redis shared by every task of a worker (cheap to clone).
///
/// One multiplexed, self-reconnecting connection: every concurrent delivery
/// pipelines through it. (A checkout pool such as deadpool-redis pings on every
/// checkout, which doubled the Redis round trips per message in `make bench`.)
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    /// When the last attempt to connect failed: callers fail fast for a while
    /// instead of each paying a connection timeout while Redis is down.
    last_connect_failure: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    names: Names,
}

/// How long callers fail fast after a failed connection attempt.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.names.prefix())
            .finish()
    }
}

impl Store {
    /// A store on `settings.url`; the connection is made on first use, so this
    /// succeeds while Redis is down.
    pub fn new(settings: &RedisSettings, names: Names) -> Result<Self, BrokerError> {
        let client = redis::Client::open(settings.url.expose_secret())
            .map_err(|e| BrokerError::Redis(e.to_string()))?;
        Ok(Store {
            client,
            connection: Arc::default(),
            last_connect_failure: Arc::default(),
            names,
        })
    }

    /// The names this store derives its keys from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The shared connection, for components with keys of their own.
    pub async fn connection(&self) -> Result<ConnectionManager, BrokerError> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        let recently_failed = self
            .last_connect_failure
            .lock()
            .map(|at| at.is_some_and(|at| at.elapsed() < RECONNECT_PAUSE))
            .unwrap_or(false);
        if recently_failed {
            return Err(BrokerError::Redis(
                "redis unreachable (recent connection attempt failed)".into(),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let connect = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config));
        let result = match tokio::time::timeout(REDIS_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(e)) => Err(BrokerError::Redis(e.to_string())),
            Err(_) => Err(BrokerError::RedisTimeout(REDIS_TIMEOUT)),
        };
        if let (Err(_), Ok(mut at)) = (&result, self.last_connect_failure.lock()) {
            *at = Some(std::time::Instant::now());
        }
        result
    }

    /// Runs one pipeline with the store's timeout.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        query: impl FnOnce() -> redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let mut connection = self.connection().await?;
        let pipeline = query();
        tokio::time::timeout(REDIS_TIMEOUT, pipeline.query_async::<T>(&mut connection))
            .await
            .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
            .map_err(|e| BrokerError::Redis(e.to_string()))
    }

    /// Answers `PONG` when Redis is usable.
    pub async fn ping(&self) -> Result<(), BrokerError> {
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
    pub async fn is_complete(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
    ) -> Result<bool, BrokerError> {
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
    ) -> Result<(), BrokerError> {
        let key = self.names.status_key(envelope.task_id);
        let mut fields: Vec<(String, String)> = vec![
            (
                Names::completion_field(stage, envelope.hop),
                state.to_owned(),
            ),
            ("state".into(), state.to_owned()),
            ("stage".into(), stage.as_str().to_owned()),
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
            p.hset_multiple(&key, &fields).ignore();
            p.expire(&key, RECORD_TTL_SECS as i64).ignore();
            p
        })
        .await
    }

    /// Records that `stage` completed a side message of the task (an
    /// acknowledgement or progress note) without touching its state.
    pub async fn record_side_completion(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
    ) -> Result<(), BrokerError> {
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
    pub async fn put_payload(&self, body: &[u8]) -> Result<String, BrokerError> {
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
    pub async fn get_payload(&self, key: &str) -> Result<Vec<u8>, BrokerError> {
        // Only keys under our own prefix: a header must not read arbitrary keys.
        if !key.starts_with(&self.names.payload_key("")) {
            return Err(BrokerError::PayloadMissing(key.to_owned()));
        }
        let (body,): (Option<Vec<u8>>,) = self
            .run(|| {
                let mut p = redis::pipe();
                p.get(key);
                p
            })
            .await?;
        body.ok_or_else(|| BrokerError::PayloadMissing(key.to_owned()))
    }

    /// Keeps `readiness["redis"]` current by pinging every few seconds.
    pub async fn watch_health(self, readiness: Readiness, shutdown: CancellationToken) {
        loop {
            match self.ping().await {
                Ok(()) => readiness.set("redis", true, "pong"),
                Err(error) => readiness.set("redis", false, error.to_string()),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    }
}
