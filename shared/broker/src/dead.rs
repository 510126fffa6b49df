//! Reading a dead letter's reason. The runtime writes its own reason header
//! (`x-contexten-dead-reason`); a message the broker dead-lettered itself
//! (a quorum queue's `x-delivery-limit`, docs/design.md §3) carries only the
//! broker's `x-death` record, whose reason is mapped here to the project's
//! reason codes, so every reader of a dead queue shows one vocabulary.

use contexten_envelope::{HEADER_DEAD_REASON, Reason};
use lapin::types::{AMQPValue, FieldTable};

/// The broker's `x-death` reason for a message returned more often than the
/// queue's `x-delivery-limit`.
pub const BROKER_DELIVERY_LIMIT: &str = "delivery_limit";

/// The reason code of a dead letter with `headers`: the runtime's reason
/// header, else the broker's latest `x-death` reason (`delivery_limit` →
/// `poison`; `rejected`, `expired` and `maxlen` kept as the broker's word),
/// else `None`.
pub fn dead_letter_reason(headers: Option<&FieldTable>) -> Option<String> {
    let table = headers?.inner();
    if let Some(reason) = table.get(HEADER_DEAD_REASON).and_then(text) {
        return Some(reason);
    }
    let AMQPValue::FieldArray(deaths) = table.get("x-death")? else {
        return None;
    };
    // The broker puts the latest death first.
    let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = latest.inner().get("reason").and_then(text)?;
    Some(match reason.as_str() {
        BROKER_DELIVERY_LIMIT => Reason::Poison.as_str().to_owned(),
        _ => reason,
    })
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn long(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
    }

    fn death(reason: &str) -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert("reason".into(), long(reason));
        entry.insert("queue".into(), long("contexten.generate"));
        AMQPValue::FieldTable(entry)
    }

    #[test]
    fn the_runtimes_header_wins_and_the_brokers_delivery_limit_reads_as_poison() {
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death(BROKER_DELIVERY_LIMIT),
                death("expired"),
            ])),
        );
        assert_eq!(dead_letter_reason(Some(&table)).as_deref(), Some("poison"));
        table.insert(HEADER_DEAD_REASON.into(), long("retries_exhausted"));
        assert_eq!(
            dead_letter_reason(Some(&table)).as_deref(),
            Some("retries_exhausted")
        );
        let mut rejected = FieldTable::default();
        rejected.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![death("rejected")])),
        );
        assert_eq!(
            dead_letter_reason(Some(&rejected)).as_deref(),
            Some("rejected")
        );
        assert_eq!(dead_letter_reason(Some(&FieldTable::default())), None);
        assert_eq!(dead_letter_reason(None), None);
    }
}
