//! Which Codegen run belongs to which task, in Redis: the idempotency record
//! that keeps a redelivered create from starting a second run, and the lookup a
//! follow-up uses to resume the earlier task's run.
//!
//! One hash per task (`<prefix>:agent:run:<task_id>`): `run_id`, `created_at_ms`,
//! `web_url` once the run exists, and `creating_at` (Redis clock, ms) while a
//! create request is in flight or ended without a clear answer.

use contexten_broker::{BrokerError, Store, redis_error};
use contexten_envelope::TaskId;
use std::time::Duration;

/// Records outlive any run and the follow-ups of a conversation.
const RECORD_TTL_SECS: u64 = 30 * 24 * 3600;
/// Upper bound for one Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS[1] = the task's hash; ARGV = grace ms, ttl s.
/// Returns {verdict, wait_ms}: `run` (already recorded), `busy` (another create
/// began less than the grace ago), `stale` (an earlier create ended without a
/// clear answer; the claim is now ours) or `claimed`.
const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('HEXISTS', KEYS[1], 'run_id') == 1 then return {'run', 0} end
local since = tonumber(redis.call('HGET', KEYS[1], 'creating_at'))
local grace = tonumber(ARGV[1])
if since and now - since < grace then return {'busy', grace - (now - since)} end
redis.call('HSET', KEYS[1], 'creating_at', now)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if since then return {'stale', 0} end
return {'claimed', 0}
"#;

/// A run recorded against a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRun {
    pub run_id: u64,
    pub created_at_ms: u64,
    pub web_url: Option<String>,
}

/// The answer to "may I create the run for this task?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead: no create was attempted before.
    Claimed,
    /// Go ahead, but an earlier create may have started a run: look for it first.
    Stale,
    /// A run was recorded meanwhile.
    Recorded,
    /// Another delivery is creating the run right now; look again after this.
    Busy(Duration),
}

/// The task → run records.
#[derive(Clone, Debug)]
pub struct RunRecords {
    store: Store,
    claim: std::sync::Arc<redis::Script>,
}

impl RunRecords {
    /// Records in `store`'s Redis under its prefix.
    pub fn new(store: Store) -> Self {
        RunRecords {
            store,
            claim: std::sync::Arc::new(redis::Script::new(CLAIM)),
        }
    }

    fn key(&self, task: TaskId) -> String {
        self.store
            .names()
            .redis_key(&["agent", "run", &task.to_string()])
    }

    /// The run recorded for `task`, if any.
    pub async fn lookup(&self, task: TaskId) -> Result<Option<RecordedRun>, BrokerError> {
        let key = self.key(task);
        let ((run_id, created_at_ms, web_url),): ((Option<u64>, Option<u64>, Option<String>),) =
            self.store
                .run(|| {
                    let mut p = redis::pipe();
                    p.cmd("HMGET")
                        .arg(&key)
                        .arg("run_id")
                        .arg("created_at_ms")
                        .arg("web_url");
                    p
                })
                .await?;
        Ok(run_id.map(|run_id| RecordedRun {
            run_id,
            created_at_ms: created_at_ms.unwrap_or_default(),
            web_url,
        }))
    }

    /// Claims the right to create `task`'s run; a claim younger than `grace` is
    /// someone else's create still in flight.
    pub async fn claim(&self, task: TaskId, grace: Duration) -> Result<Claim, BrokerError> {
        let mut connection = self.store.connection().await?;
        let mut invocation = self.claim.key(self.key(task));
        invocation
            .arg(grace.as_millis() as u64)
            .arg(RECORD_TTL_SECS);
        let (verdict, wait_ms): (String, u64) =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
                .map_err(redis_error)?;
        Ok(match verdict.as_str() {
            "run" => Claim::Recorded,
            "busy" => Claim::Busy(Duration::from_millis(wait_ms.max(1))),
            "stale" => Claim::Stale,
            _ => Claim::Claimed,
        })
    }

    /// Records `run` against `task` and drops the create claim.
    pub async fn record(&self, task: TaskId, run: &RecordedRun) -> Result<(), BrokerError> {
        let key = self.key(task);
        let mut fields = vec![
            ("run_id", run.run_id.to_string()),
            ("created_at_ms", run.created_at_ms.to_string()),
        ];
        if let Some(url) = &run.web_url {
            fields.push(("web_url", url.clone()));
        }
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.hset_multiple(&key, &fields).ignore();
                p.hdel(&key, "creating_at").ignore();
                p.expire(&key, RECORD_TTL_SECS as i64).ignore();
                p
            })
            .await
    }

    /// Marks the create claim as ended without a clear answer (a 5xx, a timeout):
    /// the next attempt looks for the run at once instead of waiting out the grace.
    pub async fn mark_unsure(&self, task: TaskId) -> Result<(), BrokerError> {
        let key = self.key(task);
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.hset(&key, "creating_at", 0).ignore();
                p
            })
            .await
    }

    /// Drops the create claim after a create that certainly did not start a run.
    pub async fn release(&self, task: TaskId) -> Result<(), BrokerError> {
        let key = self.key(task);
        self.store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.hdel(&key, "creating_at").ignore();
                p
            })
            .await
    }
}
