//! The operator's view of the fleet: queue depths and consumers per stage, dead
//! letters with their reasons (list, replay, purge), a task's status record, and
//! whether the records and cache Redis run with what their roles need.
//! Every operation is a plain async function over a broker channel and the Redis
//! store, so tests drive them against the real services.

use contexten_broker::{BrokerError, PublishedMessage, Publisher, RedisRole, Store, redis_error};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, HEADER_DEAD_STAGE, Names, Priority,
    Stage, TaskId,
};
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Depth and consumers of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u32,
    pub consumers: u32,
}

/// Depth and consumers of every stage queue and dead queue.
pub async fn queue_stats(channel: &Channel, names: &Names) -> Result<Vec<QueueStats>, BrokerError> {
    let mut stats = Vec::new();
    for stage in Stage::QUEUED {
        for queue in [names.stage_queue(stage), names.dead_queue(stage)] {
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
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// A JSON summary (the body shown as JSON when it is, else as lossy text).
    pub fn to_json(&self, with_body: bool) -> Value {
        let mut map = Map::new();
        map.insert("stage".into(), json!(self.stage.as_str()));
        map.insert("message_id".into(), json!(self.message_id));
        map.insert("task_id".into(), json!(self.task_id));
        map.insert("reason".into(), json!(self.reason));
        map.insert("detail".into(), json!(self.detail));
        map.insert("attempt".into(), json!(self.attempt));
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
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Reads up to `limit` dead letters of `stage` without removing them (they are
/// returned to the queue before this returns).
pub async fn list_dead(
    channel: &Channel,
    names: &Names,
    stage: Stage,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let queue = names.dead_queue(stage);
    let mut taken = Vec::new();
    let mut letters = Vec::new();
    while letters.len() < limit {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let props = &message.delivery.properties;
        let headers = props.headers().as_ref();
        let task_id = serde_json::from_slice::<Value>(&message.delivery.data)
            .ok()
            .and_then(|v| v.get("task_id").and_then(Value::as_str).map(str::to_owned));
        letters.push(DeadLetter {
            stage,
            message_id: props.message_id().as_ref().map(|m| m.as_str().to_owned()),
            reason: header_text(headers, HEADER_DEAD_REASON),
            detail: header_text(headers, HEADER_DEAD_DETAIL),
            attempt: header_text(headers, HEADER_ATTEMPT),
            task_id,
            body: message.delivery.data.clone(),
        });
        taken.push(message);
    }
    // Nacking in one go (multiple) returns them in their original order.
    if let Some(last) = taken.last() {
        last.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await?;
    }
    Ok(letters)
}

/// Moves dead letters of `stage` back to its work queue, all of them or only
/// those whose message id or task id matches `only`. Returns how many moved.
/// Each is republished (confirmed, operator priority, attempts reset) before its
/// dead copy is acked, so a crash in between duplicates rather than loses.
pub async fn replay_dead(
    channel: &Channel,
    publisher: &Publisher,
    names: &Names,
    stage: Stage,
    only: Option<&str>,
) -> Result<usize, BrokerError> {
    let queue = names.dead_queue(stage);
    let mut moved = 0;
    let mut skipped = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let props = message.delivery.properties.clone();
        let message_id = props
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let matches = only.is_none_or(|wanted| {
            message_id == wanted || String::from_utf8_lossy(&message.delivery.data).contains(wanted)
        });
        if !matches {
            skipped.push(message);
            continue;
        }
        let mut headers = props.headers().clone().unwrap_or_default();
        let mut cleaned = FieldTable::default();
        for (key, value) in headers.inner() {
            if ![
                HEADER_DEAD_REASON,
                HEADER_DEAD_DETAIL,
                HEADER_DEAD_STAGE,
                HEADER_ATTEMPT,
            ]
            .contains(&key.as_str())
            {
                cleaned.insert(key.clone(), value.clone());
            }
        }
        cleaned.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(0));
        headers = cleaned;
        publisher
            .publish_raw(PublishedMessage {
                exchange: names.work_exchange(),
                routing_key: stage.as_str().to_owned(),
                body: message.delivery.data.clone(),
                properties: props
                    .with_priority(Priority::Operator.amqp())
                    .with_headers(headers),
            })
            .await?;
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await?;
        moved += 1;
    }
    if let Some(last) = skipped.last() {
        last.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await?;
    }
    Ok(moved)
}

/// Deletes every dead letter of `stage`; returns how many.
pub async fn purge_dead(
    channel: &Channel,
    names: &Names,
    stage: Stage,
) -> Result<u32, BrokerError> {
    Ok(channel
        .queue_purge(
            names.dead_queue(stage).as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await?)
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
