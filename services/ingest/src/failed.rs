//! GitHub never redelivers a failed webhook by itself. Deliveries refused with 503
//! (broker down, or the records Redis refusing writes) are recorded here: in a Redis sorted set scored by time, or, if
//! Redis is down too, as JSON lines in `INGEST_FAILED_DELIVERIES_FILE`. The
//! `redeliver-failed` command reads both and clears what it redelivered.

use crate::AppState;
use contexten_broker::{BrokerError, Store};
use contexten_envelope::{Names, now_ms};
use contexten_telemetry::metric;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::Path;

/// One refused delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDelivery {
    pub guid: String,
    pub event: String,
    pub at_ms: u64,
}

/// Redis: the sorted set of refused GitHub deliveries (member `guid event`).
pub fn failed_key(names: &Names) -> String {
    names.redis_key(&["ingest", "failed", "github"])
}

/// How long a refused delivery is kept in Redis: GitHub redelivers only recent
/// deliveries (days), so a week covers any use.
const FAILED_KEPT_MS: u64 = 7 * 24 * 3600 * 1000;

/// Records a refused delivery; never fails the request (logs when both stores fail).
pub async fn record(state: &AppState, guid: &str, event: &str) {
    let entry = FailedDelivery {
        guid: guid.chars().take(100).collect(),
        event: event.chars().take(100).collect(),
        at_ms: now_ms(),
    };
    let key = failed_key(&state.names);
    let member = format!("{} {}", entry.guid, entry.event);
    let stored = state
        .store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.zadd(&key, &member, entry.at_ms).ignore();
            // The records Redis never evicts: entries past any use are trimmed here.
            p.zrembyscore(&key, 0, entry.at_ms.saturating_sub(FAILED_KEPT_MS) as f64)
                .ignore();
            p
        })
        .await;
    match stored {
        Ok(()) => metric::ingest_failed_recorded("redis"),
        Err(error) => {
            tracing::warn!(%error, "recording the refused delivery in a file instead of redis");
            match append_file(&state.cfg.failed_deliveries_file, &entry) {
                Ok(()) => metric::ingest_failed_recorded("file"),
                Err(error) => {
                    tracing::error!(%error, guid = %entry.guid, "refused delivery not recorded")
                }
            }
        }
    }
}

fn append_file(path: &Path, entry: &FailedDelivery) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)
}

/// Every recorded delivery since `since_ms`, from Redis and the file.
pub async fn list(
    store: &Store,
    file: &Path,
    since_ms: u64,
) -> Result<Vec<FailedDelivery>, BrokerError> {
    let key = failed_key(store.names());
    let (members,): (Vec<(String, f64)>,) = store
        .run(|| {
            let mut p = redis::pipe();
            p.zrangebyscore_withscores(&key, since_ms as f64, "+inf");
            p
        })
        .await?;
    let mut out: Vec<FailedDelivery> = members
        .into_iter()
        .filter_map(|(member, score)| {
            let (guid, event) = member.split_once(' ')?;
            Some(FailedDelivery {
                guid: guid.to_owned(),
                event: event.to_owned(),
                at_ms: score as u64,
            })
        })
        .collect();
    if let Ok(text) = std::fs::read_to_string(file) {
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<FailedDelivery>(l).ok())
                .filter(|d| d.at_ms >= since_ms),
        );
    }
    Ok(out)
}

/// Forgets deliveries that were redelivered, in Redis and in the file.
pub async fn forget(
    store: &Store,
    file: &Path,
    delivered: &[FailedDelivery],
) -> Result<(), BrokerError> {
    if delivered.is_empty() {
        return Ok(());
    }
    if let Ok(text) = std::fs::read_to_string(file) {
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<FailedDelivery>(l)
                    .map_or(true, |d| !delivered.iter().any(|x| x.guid == d.guid))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        if let Err(error) = std::fs::write(file, kept) {
            tracing::warn!(%error, "could not rewrite the failed deliveries file");
        }
    }
    let key = failed_key(store.names());
    store
        .run::<()>(|| {
            let mut p = redis::pipe();
            for d in delivered {
                p.zrem(&key, format!("{} {}", d.guid, d.event)).ignore();
            }
            p
        })
        .await
}
