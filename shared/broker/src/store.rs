//! The Redis side of the runtime: completion records, the task status record and
//! large payloads. Every call is bounded by a timeout so a Redis outage degrades
//! guarantees loudly instead of stalling the stage.

use crate::BrokerError;
use contexten_config::{ExposeSecret, RedisSettings};
use contexten_envelope::{Names, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::health::Readiness;
use deadpool_redis::{Config, Pool, Runtime};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long completion and status records live: longer than any task's life.
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long an offloaded payload lives: longer than the longest retry chain.
const PAYLOAD_TTL_SECS: u64 = 2 * 24 * 3600;
/// Upper bound for one Redis round trip before the caller degrades.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on Redis shared by every task of a worker (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    names: Names,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.names.prefix())
            .finish()
    }
}

impl Store {
    /// A pool on `settings.url`; connections are made lazily, so this succeeds while
    /// Redis is down.
    pub fn new(settings: &RedisSettings, names: Names) -> Result<Self, BrokerError> {
        let pool = Config::from_url(settings.url.expose_secret())
            .builder()
            .map_err(|e| BrokerError::Redis(e.to_string()))?
            .max_size(32)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REDIS_TIMEOUT))
            .create_timeout(Some(REDIS_TIMEOUT))
            .recycle_timeout(Some(REDIS_TIMEOUT))
            .build()
            .map_err(|e| BrokerError::Redis(e.to_string()))?;
        Ok(Store { pool, names })
    }

    /// The names this store derives its keys from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The underlying pool, for components with keys of their own.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs one command or pipeline with the store's timeout.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        query: impl FnOnce() -> redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let work = async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| BrokerError::Redis(e.to_string()))?;
            query()
                .query_async::<T>(&mut conn)
                .await
                .map_err(|e| BrokerError::Redis(e.to_string()))
        };
        tokio::time::timeout(REDIS_TIMEOUT, work)
            .await
            .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
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
        let key = self
            .names
            .completion_key(stage, envelope.task_id, envelope.hop);
        let (exists,): (bool,) = self
            .run(|| {
                let mut p = redis::pipe();
                p.exists(&key);
                p
            })
            .await?;
        Ok(exists)
    }

    /// Records that `stage` completed this message, and the task's new state, in
    /// one round trip.
    pub async fn record_completion(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        state: &str,
    ) -> Result<(), BrokerError> {
        let done_key = self
            .names
            .completion_key(stage, envelope.task_id, envelope.hop);
        let status_key = self.names.status_key(envelope.task_id);
        let timing = envelope.timing(stage).map(|t| {
            serde_json::json!({
                "started_at_ms": t.started_at_ms,
                "finished_at_ms": t.finished_at_ms.unwrap_or_else(now_ms),
            })
            .to_string()
        });
        self.run::<()>(|| {
            let mut p = redis::pipe();
            p.set_ex(&done_key, state, RECORD_TTL_SECS).ignore();
            p.hset(&status_key, "state", state).ignore();
            p.hset(&status_key, "stage", stage.as_str()).ignore();
            p.hset(&status_key, "updated_at_ms", now_ms()).ignore();
            if let Some(timing) = &timing {
                p.hset(&status_key, format!("timing:{}", stage.as_str()), timing)
                    .ignore();
            }
            p.expire(&status_key, RECORD_TTL_SECS as i64).ignore();
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
