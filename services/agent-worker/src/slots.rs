//! How many agent runs one requester may have going at once, shared by every
//! replica through Redis: an agent run costs money and can write to
//! repositories, so one person (or one leaked token) cannot start dozens.
//!
//! One sorted set per requester (`<prefix>:agent:active:<source kind>:<requested_by>`):
//! members are task ids, scores the Redis-clock time their lease ends. A slot
//! is taken before a run is created or resumed and given back when the run
//! ends (finished, failed, timed out) or could not be started. The lease (the
//! longest a run may last, plus slack) frees a slot whose release was lost (a
//! crashed worker, a dead-lettered status check), so nothing holds one forever.

use contexten_broker::{BrokerError, Store, redis_error};
use contexten_envelope::TaskEnvelope;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound for one Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS[1] = the requester's set; ARGV = task id, maximum, lease ms.
/// Returns {1, 0} when the task holds a slot (newly or already: redeliveries
/// and deferred retries take the same slot again), {0, n} when n runs are in
/// progress and none is free. Expired leases are dropped first.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= tonumber(ARGV[2]) then return {0, n} end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return {1, 0}
"#;

/// The answer to "may this task start a run for its requester?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The task holds one of its requester's slots.
    Held,
    /// Every slot is taken by this many runs in progress.
    Full { in_progress: u32 },
}

/// The per-requester limit on runs in progress.
#[derive(Clone, Debug)]
pub struct RequesterSlots {
    store: Store,
    acquire: Arc<redis::Script>,
    max: u32,
    lease: Duration,
}

impl RequesterSlots {
    /// At most `max` runs per requester; a slot not given back is freed after `lease`.
    pub fn new(store: Store, max: u32, lease: Duration) -> Self {
        RequesterSlots {
            store,
            acquire: Arc::new(redis::Script::new(ACQUIRE)),
            max,
            lease,
        }
    }

    /// The requester's set: source kind and `requested_by`. Tasks without a
    /// requester share one set per source kind, which errs on the strict side.
    fn key(&self, envelope: &TaskEnvelope) -> String {
        let source = &envelope.source;
        let who = source.requested_by.as_deref().unwrap_or("-");
        self.store
            .names()
            .redis_key(&["agent", "active", source.kind.as_str(), who])
    }

    /// Takes (or keeps) a slot for `envelope`'s task.
    pub async fn acquire(&self, envelope: &TaskEnvelope) -> Result<Slot, BrokerError> {
        let mut connection = self.store.connection().await?;
        let mut invocation = self.acquire.key(self.key(envelope));
        invocation
            .arg(envelope.task_id.to_string())
            .arg(self.max)
            .arg(self.lease.as_millis() as u64);
        let (held, in_progress): (u32, u32) =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
                .map_err(redis_error)?;
        Ok(if held == 1 {
            Slot::Held
        } else {
            Slot::Full { in_progress }
        })
    }

    /// Gives the task's slot back. A failure only delays the slot until its
    /// lease ends, so it is logged, never fatal.
    pub async fn release(&self, envelope: &TaskEnvelope) {
        let key = self.key(envelope);
        let member = envelope.task_id.to_string();
        let result = self
            .store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.zrem(&key, &member).ignore();
                p
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not give back the requester's run slot; its lease will");
            contexten_telemetry::metric::redis_degraded("agent_requester_slot");
        }
    }
}
