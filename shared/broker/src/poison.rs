//! Poison messages: deliveries are counted outside the message, in the task's
//! status record, before the handler runs, because a worker that dies handling
//! a message (out of memory, an abort) never writes the attempt header and the
//! broker redelivers the same bytes forever. The count is per (stage, hop,
//! attempt), a field `delivered:<stage>:<hop>:<attempt>` beside the completion
//! marks, so it lives and expires with the record. The runtime gives a
//! delivery's count back when it requeues the delivery itself (a publish that
//! failed, a broker alarm), so only deliveries that ended without any outcome
//! add up; past `MAX_DELIVERIES` the message is dead-lettered as `poison`
//! (README "Guarantees of the runtime").

use crate::{BrokerError, Store};
use contexten_envelope::{Names, Stage, TaskEnvelope};

/// The status record's life when a count creates it (as the store's records).
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;

/// KEYS[1] = the status record; ARGV = completion field, delivery field, TTL.
/// Returns -1 when the stage completed the message (nothing counted), else the
/// deliveries counted with this one. The completion check comes first and
/// writes nothing, so a full records Redis still answers it.
const BEGIN: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return n
"#;

/// KEYS[1] = the status record; ARGV[1] = the delivery field. Takes one
/// delivery back, never below zero.
const RELEASE: &str = r#"
if (tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0) > 0 then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
return 0
"#;

/// What the store knows of a delivery before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The stage already completed this message.
    Complete,
    /// Counted: the deliveries of this message so far, this one included.
    Delivery(u32),
}

/// The status record field counting deliveries of a message.
fn field(stage: Stage, hop: u32, attempt: u32) -> String {
    format!("delivered:{}:{hop}:{attempt}", stage.as_str())
}

/// Checks completion and counts this delivery, in one round trip.
pub(crate) async fn begin(
    store: &Store,
    stage: Stage,
    envelope: &TaskEnvelope,
) -> Result<Begin, BrokerError> {
    let key = store.names().status_key(envelope.task_id);
    let done = Names::completion_field(stage, envelope.hop);
    let delivered = field(stage, envelope.hop, envelope.attempt);
    let (count,): (i64,) = store
        .run(|| {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(BEGIN)
                .arg(1)
                .arg(&key)
                .arg(&done)
                .arg(&delivered)
                .arg(RECORD_TTL_SECS);
            p
        })
        .await?;
    Ok(match u32::try_from(count) {
        Ok(count) => Begin::Delivery(count),
        Err(_) => Begin::Complete,
    })
}

/// Gives back the count of a delivery the runtime requeues itself.
pub(crate) async fn release(store: &Store, stage: Stage, envelope: &TaskEnvelope) {
    let key = store.names().status_key(envelope.task_id);
    let delivered = field(stage, envelope.hop, envelope.attempt);
    let released = store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(&key)
                .arg(&delivered)
                .ignore();
            p
        })
        .await;
    if released.is_err() {
        contexten_telemetry::metric::redis_degraded("delivery_count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_kept_per_stage_hop_and_attempt() {
        assert_eq!(field(Stage::Generate, 2, 1), "delivered:generate:2:1");
        assert_ne!(field(Stage::Generate, 2, 0), field(Stage::Generate, 3, 0));
    }
}
