//! The operator's view of the fleet, shared by the `contexten` CLI and ingest's
//! web console (README "The operator CLI", "The operator console"): queue
//! depths and consumers per stage, dead letters with their reasons (list,
//! replay, purge), a task's status record, and whether the records and cache
//! Redis run with what their roles need. Every operation is a plain async
//! function over a broker channel and the Redis store, so tests drive them
//! against the real services.

use contexten_broker::topology;
use contexten_broker::{
    BrokerError, PublishedMessage, Publisher, RedisRole, Store, dead_letter_reason, redis_error,
};
use contexten_config::QueueType;
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_AT_MS, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, HEADER_DEAD_STAGE,
    Names, Priority, Stage, TaskId, now_ms,
};
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Depth and consumers of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub stage: Stage,
    /// The stage's dead queue rather than its work queue.
    pub dead: bool,
    pub ready: u32,
    pub consumers: u32,
}

/// Depth and consumers of every stage queue (each priority lane's in quorum
/// mode, docs/design.md §3) and dead queue.
pub async fn queue_stats(
    channel: &Channel,
    names: &Names,
    queue_type: QueueType,
) -> Result<Vec<QueueStats>, BrokerError> {
    let mut stats = Vec::new();
    for stage in Stage::QUEUED {
        let work = topology::work_queues(names, queue_type, stage)
            .into_iter()
            .map(|(queue, _)| (queue, false));
        for (queue, dead) in work.chain([(names.dead_queue(stage), true)]) {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            stats.push(QueueStats {
                queue,
                stage,
                dead,
                ready: declared.message_count(),
                consumers: declared.consumer_count(),
            });
        }
    }
    Ok(stats)
}

/// One dead letter as an operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub stage: Stage,
    pub message_id: Option<String>,
    pub reason: String,
    pub detail: String,
    pub attempt: String,
    pub task_id: Option<String>,
    /// When it was dead-lettered (unix ms): the `x-contexten-dead-at-ms`
    /// header, else the message's AMQP timestamp; `None` when neither is set.
    pub dead_at_ms: Option<u64>,
    /// Every AMQP header as text (the console shows them; values are not masked here).
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn read(stage: Stage, delivery: &lapin::message::Delivery) -> Self {
        let props = &delivery.properties;
        let headers = props.headers().as_ref();
        let task_id = serde_json::from_slice::<Value>(&delivery.data)
            .ok()
            .and_then(|v| v.get("task_id").and_then(Value::as_str).map(str::to_owned));
        let dead_at_ms = headers
            .and_then(|t| t.inner().get(HEADER_DEAD_AT_MS))
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
                AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
                AMQPValue::LongUInt(n) => Some(u64::from(*n)),
                AMQPValue::Timestamp(n) => Some(*n),
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok(),
                _ => None,
            })
            .or_else(|| props.timestamp().map(|secs| secs.saturating_mul(1000)));
        DeadLetter {
            stage,
            message_id: props.message_id().as_ref().map(|m| m.as_str().to_owned()),
            // The runtime's reason header, else the broker's own (a quorum
            // queue's delivery limit reads as `poison`).
            reason: dead_letter_reason(headers).unwrap_or_default(),
            detail: header_text(headers, HEADER_DEAD_DETAIL),
            attempt: header_text(headers, HEADER_ATTEMPT),
            task_id,
            dead_at_ms,
            headers: headers
                .map(|t| {
                    t.inner()
                        .keys()
                        .map(|k| (k.as_str().to_owned(), header_text(headers, k.as_str())))
                        .collect()
                })
                .unwrap_or_default(),
            body: delivery.data.clone(),
        }
    }

    /// Seconds since it was dead-lettered, when known.
    pub fn age_secs(&self, now_ms: u64) -> Option<u64> {
        self.dead_at_ms.map(|at| now_ms.saturating_sub(at) / 1000)
    }

    /// The JSON form (README "The operator CLI"); the body shown as JSON when
    /// it is, else as lossy text.
    pub fn to_json(&self, with_body: bool) -> Value {
        let mut map = Map::new();
        map.insert("stage".into(), json!(self.stage.as_str()));
        map.insert("message_id".into(), json!(self.message_id));
        map.insert("task_id".into(), json!(self.task_id));
        map.insert("reason".into(), json!(self.reason));
        map.insert("detail".into(), json!(self.detail));
        map.insert("attempt".into(), json!(self.attempt));
        map.insert("dead_at_ms".into(), json!(self.dead_at_ms));
        map.insert("age_secs".into(), json!(self.age_secs(now_ms())));
        if with_body {
            let body = serde_json::from_slice::<Value>(&self.body)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.body)));
            map.insert("body".into(), body);
        }
        Value::Object(map)
    }
}

fn header_text(table: Option<&FieldTable>, key: &str) -> String {
    match table.and_then(|t| t.inner().get(key)) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::LongUInt(n)) => n.to_string(),
        Some(AMQPValue::LongLongInt(n)) => n.to_string(),
        Some(AMQPValue::LongInt(n)) => n.to_string(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(AMQPValue::Timestamp(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Which dead letters a command touches; an unset field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// Exactly this reason code (`x-contexten-dead-reason`).
    pub reason: Option<String>,
    /// Dead-lettered at least this long ago; a letter of unknown age does not match.
    pub older_than: Option<Duration>,
    /// The envelope's `task_id`.
    pub task: Option<String>,
    /// The AMQP message id.
    pub message_id: Option<String>,
}

impl DeadFilter {
    /// Whether `letter` matches at `now_ms`.
    pub fn matches(&self, letter: &DeadLetter, now_ms: u64) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == letter.reason)
            && self
                .task
                .as_ref()
                .is_none_or(|t| letter.task_id.as_ref() == Some(t))
            && self
                .message_id
                .as_ref()
                .is_none_or(|m| letter.message_id.as_ref() == Some(m))
            && self.older_than.is_none_or(|d| {
                letter
                    .age_secs(now_ms)
                    .is_some_and(|age| age >= d.as_secs())
            })
    }

    /// Whether it names one task or message: finding nothing is then "not found".
    pub fn names_one(&self) -> bool {
        self.task.is_some() || self.message_id.is_some()
    }
}

/// `--older-than` values: `90s`, `10m`, `2h`, `3d`.
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let expected = || format!("{raw:?}: expected a number with s, m, h or d (e.g. 10m, 2h, 3d)");
    let split = raw.len().saturating_sub(1);
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().map_err(|_| expected())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(expected()),
    };
    Ok(Duration::from_secs(secs))
}

/// What [`dead_letters`] does to the letters that match.
#[derive(Clone, Copy)]
pub enum DeadAction<'a> {
    /// Nothing: they are read and returned to the queue (list, `--dry-run`).
    Look,
    /// Republished to their stage's work queue, then removed from the dead queue.
    Replay(&'a Publisher),
    /// [`DeadAction::Replay`], first reopening the stage's completion mark in
    /// the task's status record (records Redis) when the runtime wrote it as
    /// `dead_lettered:<code>` on dead-lettering the message: without that the
    /// stage acks the replayed message as already completed and does nothing.
    ReplayReopening(&'a Publisher, &'a Store),
    /// Removed.
    Purge,
}

/// The letters an action matched: `done` were replayed or purged (or only seen
/// for [`DeadAction::Look`]), `failed` stayed in the dead queue with the error.
#[derive(Debug, Default)]
pub struct Touched {
    pub done: Vec<DeadLetter>,
    pub failed: Vec<(DeadLetter, String)>,
}

/// Walks the dead queue of `stage` once, applying `action` to at most `limit`
/// letters that match `filter`; every other letter is returned to the queue in
/// its order. A replay republishes each letter (confirmed, operator priority,
/// attempts reset) before acking its dead copy, so a crash in between
/// duplicates rather than loses. A replay that fails for one letter (no queue
/// bound for its stage, a nack) leaves it in place and goes on; any other
/// publish failure (broker blocked, connection lost) stops the walk. It
/// returns once the broker has applied its acks and requeues, so the queue
/// read next, on any channel, holds the letters looked at and not those done.
pub async fn dead_letters(
    channel: &Channel,
    names: &Names,
    stage: Stage,
    filter: &DeadFilter,
    limit: usize,
    action: DeadAction<'_>,
) -> Result<Touched, BrokerError> {
    let queue = names.dead_queue(stage);
    let now = now_ms();
    let mut touched = Touched::default();
    let mut held = Vec::new();
    let mut taken = false;
    while touched.done.len() + touched.failed.len() < limit {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        taken = true;
        let letter = DeadLetter::read(stage, &message.delivery);
        if !filter.matches(&letter, now) {
            held.push(message);
            continue;
        }
        match action {
            DeadAction::Look => {
                touched.done.push(letter);
                held.push(message);
            }
            DeadAction::Purge => {
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await?;
                touched.done.push(letter);
            }
            DeadAction::Replay(publisher) | DeadAction::ReplayReopening(publisher, _) => {
                let reopened = match action {
                    DeadAction::ReplayReopening(_, store) => {
                        reopen(store, stage, &message.delivery.data).await
                    }
                    _ => Ok(()),
                };
                let replayed = match reopened {
                    Ok(()) => republish(publisher, names, stage, &message.delivery).await,
                    Err(error) => Err(error),
                };
                match replayed {
                    Ok(()) => {
                        message
                            .delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await?;
                        touched.done.push(letter);
                    }
                    Err(error) => {
                        let fatal = !matches!(
                            error,
                            BrokerError::Unroutable { .. }
                                | BrokerError::Nacked
                                | BrokerError::Redis(_)
                                | BrokerError::RedisRefused(_)
                                | BrokerError::RedisTimeout(_)
                        );
                        touched.failed.push((letter, error.to_string()));
                        held.push(message);
                        if fatal {
                            break;
                        }
                    }
                }
            }
        }
    }
    // Nacking in one go (multiple) returns them in their original order.
    if let Some(last) = held.last() {
        last.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await?;
    }
    if taken {
        settled(channel, &queue).await?;
    }
    Ok(touched)
}

/// Waits until the broker has applied this channel's acks and requeues to
/// `queue`. Neither has an answer: awaiting one only sends it, so a caller
/// that reads the queue right after a walk (the console's next page, a depth,
/// a replay after a look) could find the letters still unacked, missing. A
/// method with an answer on the same channel is handled after them, and a
/// passive declaration asks the queue itself, after what this channel sent it.
async fn settled(channel: &Channel, queue: &str) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Removes the completion mark `done:<stage>:<hop>` of the letter's task when
/// it says `dead_lettered:…` (one script, so a mark written by a real
/// completion is never removed). A letter without a task id or record has
/// nothing to reopen.
const REOPEN: &str = r#"
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if mark and string.sub(mark, 1, 14) == 'dead_lettered:' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

async fn reopen(store: &Store, stage: Stage, body: &[u8]) -> Result<(), BrokerError> {
    let Ok(envelope) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    let Some(task) = envelope
        .get("task_id")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<TaskId>().ok())
    else {
        return Ok(());
    };
    let hop = envelope.get("hop").and_then(Value::as_u64).unwrap_or(0);
    let key = store.names().status_key(task);
    let field = Names::completion_field(stage, u32::try_from(hop).unwrap_or(u32::MAX));
    store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(REOPEN)
                .arg(1)
                .arg(&key)
                .arg(&field)
                .ignore();
            p
        })
        .await
}

async fn republish(
    publisher: &Publisher,
    names: &Names,
    stage: Stage,
    delivery: &lapin::message::Delivery,
) -> Result<(), BrokerError> {
    let props = delivery.properties.clone();
    let mut headers = FieldTable::default();
    for (key, value) in props.headers().clone().unwrap_or_default().inner() {
        if ![
            HEADER_DEAD_REASON,
            HEADER_DEAD_DETAIL,
            HEADER_DEAD_STAGE,
            HEADER_DEAD_AT_MS,
            HEADER_ATTEMPT,
        ]
        .contains(&key.as_str())
        {
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(0));
    publisher
        .publish_raw(PublishedMessage {
            exchange: names.work_exchange(),
            // The operator lane: a quorum-mode stage's highest-priority queue;
            // a classic stage queue is bound with every lane's key.
            routing_key: topology::routing_key(stage, Priority::Operator),
            body: delivery.data.clone(),
            properties: props
                .with_priority(Priority::Operator.amqp())
                .with_headers(headers),
        })
        .await
}

/// Reads up to `limit` dead letters of `stage` without removing them (they are
/// returned to the queue before this returns).
pub async fn list_dead(
    channel: &Channel,
    names: &Names,
    stage: Stage,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let all = DeadFilter::default();
    Ok(
        dead_letters(channel, names, stage, &all, limit, DeadAction::Look)
            .await?
            .done,
    )
}

/// A task's status record: state, per-stage timings and completed messages.
pub async fn task_status(store: &Store, task: TaskId) -> Result<Option<Value>, BrokerError> {
    let key = store.names().status_key(task);
    let (fields,): (BTreeMap<String, String>,) = store
        .run(|| {
            let mut p = redis::pipe();
            p.hgetall(&key);
            p
        })
        .await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let mut status = Map::new();
    let mut timings = Map::new();
    let mut history = Vec::new();
    for (field, value) in fields {
        if let Some(stage) = field.strip_prefix("timing:") {
            timings.insert(
                stage.to_owned(),
                serde_json::from_str(&value).unwrap_or(json!(value)),
            );
        } else if let Some(step) = field.strip_prefix("done:") {
            history.push(json!({"step": step, "outcome": value}));
        } else {
            status.insert(field, json!(value));
        }
    }
    status.insert("timings".into(), Value::Object(timings));
    status.insert("history".into(), Value::Array(history));
    Ok(Some(Value::Object(status)))
}

/// What one Redis role runs with, as `contexten redis` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisRoleReport {
    /// `records` or `cache`.
    pub role: &'static str,
    /// `maxmemory-policy`, `None` when `CONFIG GET` is not allowed (managed services).
    pub policy: Option<String>,
    /// `appendonly`, likewise.
    pub appendonly: Option<String>,
    /// `maxmemory` in bytes (0 = no limit), likewise.
    pub maxmemory: Option<u64>,
    /// `used_memory` from `INFO memory`.
    pub used_memory: Option<u64>,
    /// What does not fit the role (README "Redis: records and caches").
    pub warnings: Vec<String>,
}

/// Checks the records Redis of `store` (a [`Store::new`] handle) and the cache
/// Redis when it is another one against what each role needs: records
/// `noeviction` and append-only, caches an `allkeys-*` policy.
pub async fn redis_report(store: &Store) -> Result<Vec<RedisRoleReport>, BrokerError> {
    let mut reports = vec![role_report(store).await?];
    if !store.shared() {
        reports.push(role_report(&store.cache()).await?);
    }
    Ok(reports)
}

async fn role_report(store: &Store) -> Result<RedisRoleReport, BrokerError> {
    let mut connection = store.connection().await?;
    let config = |name: &'static str| {
        let mut connection = connection.clone();
        async move {
            let pair: Option<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut connection)
                .await
                .ok();
            pair.and_then(|p| p.into_iter().nth(1))
        }
    };
    let policy = config("maxmemory-policy").await;
    let appendonly = config("appendonly").await;
    let maxmemory = config("maxmemory").await.and_then(|m| m.parse().ok());
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .map_err(redis_error)?;
    let used_memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok());
    let role = store.role();
    let mut warnings = Vec::new();
    match role {
        RedisRole::Records => {
            if policy.as_deref().is_some_and(|p| p != "noeviction") {
                warnings.push(format!(
                    "maxmemory-policy is {}: records may be evicted (a webhook answered twice); use noeviction",
                    policy.as_deref().unwrap_or_default()
                ));
            }
            if appendonly.as_deref() == Some("no") {
                warnings.push(
                    "appendonly is no: records written since the last snapshot are lost on a restart"
                        .into(),
                );
            }
        }
        RedisRole::Cache => {
            if policy
                .as_deref()
                .is_some_and(|p| !p.starts_with("allkeys-"))
            {
                warnings.push(format!(
                    "maxmemory-policy is {}: a full cache refuses writes instead of evicting; use allkeys-lru",
                    policy.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    Ok(RedisRoleReport {
        role: role.as_str(),
        policy,
        appendonly,
        maxmemory,
        used_memory,
        warnings,
    })
}
