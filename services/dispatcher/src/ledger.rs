//! The exactly-once record of posted replies, in Redis.
//!
//! Per reply slot (task, kind, and for progress a digest of its content):
//! - `reply_key` holds what was posted (provider, external id, URL); once it
//!   exists, the slot posts nothing again;
//! - a lock (`dispatch:lock:<task>:<kind>`, `SET NX PX`) keeps two deliveries
//!   of the same kind from posting at once, and lets a final answer wait for an
//!   acknowledgement in flight;
//! - an attempt mark (`dispatch:attempt:<slot>`, the Unix second the first
//!   uncertain post started) survives a crash between the POST and the record:
//!   the next delivery finds it and looks for the reply on the platform before
//!   posting again.

use contexten_broker::{BrokerError, Store};
use contexten_envelope::{ReplyKind, TaskId};
use serde_json::{Value, json};
use std::time::Duration;

/// How long records and attempt marks live: longer than any task's life.
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;

/// How often a lock whose claim got no answer is released again (a second
/// apart): longer than a Redis pause worth waiting out.
const RELEASE_TRIES: u32 = 60;

/// Deletes the lock only if it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// One reply that must be posted at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySlot {
    pub task: TaskId,
    pub kind: ReplyKind,
    /// Distinguishes several progress messages of one task.
    pub discriminator: Option<String>,
}

impl ReplySlot {
    /// `task:kind[:digest]`, stable across redeliveries.
    pub fn id(&self) -> String {
        match &self.discriminator {
            Some(d) => format!("{}:{}:{d}", self.task, self.kind.as_str()),
            None => format!("{}:{}", self.task, self.kind.as_str()),
        }
    }
}

/// What was posted for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub provider: &'static str,
    pub external_id: String,
    pub url: Option<String>,
}

/// A held lock; release it with [`Ledger::release`].
#[derive(Debug)]
pub struct Claim {
    key: String,
    token: String,
}

/// The reply records of one fleet prefix.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    release: std::sync::Arc<redis::Script>,
}

impl Ledger {
    /// A ledger on `store`.
    pub fn new(store: Store) -> Self {
        Ledger {
            store,
            release: std::sync::Arc::new(redis::Script::new(RELEASE)),
        }
    }

    fn record_key(&self, slot: &ReplySlot) -> String {
        let base = self.store.names().reply_key(slot.task, slot.kind);
        match &slot.discriminator {
            Some(d) => format!("{base}:{d}"),
            None => base,
        }
    }

    fn lock_key(&self, task: TaskId, kind: ReplyKind) -> String {
        self.store
            .names()
            .redis_key(&["dispatch", "lock", &task.to_string(), kind.as_str()])
    }

    fn attempt_key(&self, slot: &ReplySlot) -> String {
        self.store
            .names()
            .redis_key(&["dispatch", "attempt", &slot.id()])
    }

    /// What was posted for `slot`, if anything.
    pub async fn posted(&self, slot: &ReplySlot) -> Result<Option<Value>, BrokerError> {
        let key = self.record_key(slot);
        let (raw,): (Option<String>,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.get(&key);
                p
            })
            .await?;
        Ok(raw.map(|r| serde_json::from_str(&r).unwrap_or(Value::String(r))))
    }

    /// Whether the task's final answer (result or failure) was posted.
    pub async fn final_posted(&self, task: TaskId) -> Result<bool, BrokerError> {
        let names = self.store.names();
        let keys = [
            names.reply_key(task, ReplyKind::Final),
            names.reply_key(task, ReplyKind::Failure),
        ];
        let (count,): (u32,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.exists(&keys[..]);
                p
            })
            .await?;
        Ok(count > 0)
    }

    /// Takes the (task, kind) lock for `ttl`, or `None` when someone holds it.
    pub async fn claim(
        &self,
        slot: &ReplySlot,
        ttl: Duration,
    ) -> Result<Option<Claim>, BrokerError> {
        let key = self.lock_key(slot.task, slot.kind);
        let token = uuid::Uuid::now_v7().to_string();
        let set = self
            .store
            .run::<(Option<String>,)>(|| {
                let mut p = redis::pipe();
                p.cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64);
                p
            })
            .await;
        match set {
            Ok((set,)) => Ok(set.map(|_| Claim { key, token })),
            Err(error) => {
                // The SET may have reached Redis though its answer did not (a
                // timeout while Redis was paused): that lock would hold every
                // delivery of the reply back for its whole TTL (45 s in the
                // fault test). Take it back once Redis answers again.
                self.release_later(Claim { key, token });
                Err(error)
            }
        }
    }

    /// Releases `claim` in the background, retrying while Redis does not answer.
    fn release_later(&self, claim: Claim) {
        let ledger = self.clone();
        tokio::spawn(async move {
            for _ in 0..RELEASE_TRIES {
                if ledger.try_release(&claim).await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Whether a delivery of (task, kind) is posting right now.
    pub async fn in_flight(&self, task: TaskId, kind: ReplyKind) -> Result<bool, BrokerError> {
        let key = self.lock_key(task, kind);
        let (exists,): (bool,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.exists(&key);
                p
            })
            .await?;
        Ok(exists)
    }

    /// Releases a lock (only if it is still ours); failures only delay others
    /// until the lock expires.
    pub async fn release(&self, claim: Claim) {
        self.try_release(&claim).await;
    }

    /// Whether Redis answered the release (the lock is not ours any more).
    async fn try_release(&self, claim: &Claim) -> bool {
        let Ok(mut connection) = self.store.connection().await else {
            return false;
        };
        let mut invocation = self.release.key(&claim.key);
        invocation.arg(&claim.token);
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                invocation.invoke_async::<i64>(&mut connection),
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// When the first uncertain attempt at `slot` started (Unix seconds).
    pub async fn attempt_started(&self, slot: &ReplySlot) -> Result<Option<u64>, BrokerError> {
        let key = self.attempt_key(slot);
        let (at,): (Option<u64>,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.get(&key);
                p
            })
            .await?;
        Ok(at)
    }

    /// Marks that a post of `slot` is about to be sent (keeps the earliest).
    pub async fn mark_attempt(&self, slot: &ReplySlot, now_secs: u64) -> Result<(), BrokerError> {
        let key = self.attempt_key(slot);
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.cmd("SET")
                    .arg(&key)
                    .arg(now_secs)
                    .arg("NX")
                    .arg("EX")
                    .arg(RECORD_TTL_SECS)
                    .ignore();
                p
            })
            .await
    }

    /// Forgets the attempt mark (the post certainly did not happen).
    pub async fn clear_attempt(&self, slot: &ReplySlot) -> Result<(), BrokerError> {
        let key = self.attempt_key(slot);
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.del(&key).ignore();
                p
            })
            .await
    }

    /// Records what was posted and drops the attempt mark, in one round trip.
    pub async fn record(
        &self,
        slot: &ReplySlot,
        posted: &Posted,
        now_ms: u64,
    ) -> Result<(), BrokerError> {
        let key = self.record_key(slot);
        let attempt = self.attempt_key(slot);
        let value = json!({
            "provider": posted.provider,
            "external_id": posted.external_id,
            "url": posted.url,
            "posted_at_ms": now_ms,
        })
        .to_string();
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.set_ex(&key, &value, RECORD_TTL_SECS).ignore();
                p.del(&attempt).ignore();
                p
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::{Env, RedisSettings};
    use contexten_envelope::Names;
    use contexten_testkit::{RedisNode, RedisOptions};

    #[tokio::test]
    async fn a_claim_lost_to_a_redis_pause_is_released_once_redis_answers() {
        let redis = RedisNode::start(RedisOptions::default()).await.unwrap();
        let settings =
            RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", redis.url().as_str())]))
                .unwrap();
        let names = Names::new(format!("test-{}", uuid::Uuid::now_v7().simple()));
        let ledger = Ledger::new(Store::new(&settings, names).unwrap());
        let slot = ReplySlot {
            task: TaskId::new(),
            kind: ReplyKind::Final,
            discriminator: None,
        };
        let ttl = Duration::from_secs(60);
        // Connect first, so the claim below is sent and then frozen.
        let warm = ledger
            .claim(&slot, ttl)
            .await
            .unwrap()
            .expect("a free slot");
        ledger.release(warm).await;
        let (paused, claimed) = tokio::join!(redis.pause(Duration::from_secs(3)), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ledger.claim(&slot, ttl).await
        });
        paused.unwrap();
        assert!(claimed.is_err(), "the claim had no answer: {claimed:?}");
        // Redis took the SET when it woke up; without the release the slot
        // would stay locked for the whole TTL.
        let mut free = false;
        for _ in 0..50 {
            if let Ok(Some(claim)) = ledger.claim(&slot, ttl).await {
                ledger.release(claim).await;
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(free, "the lock of the unanswered claim was never released");
    }
}
