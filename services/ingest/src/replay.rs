//! Replay protection beyond the delivery identity (README "Security model").
//!
//! A captured GitHub or Linear delivery can be sent again with a new delivery
//! header: its signature still verifies, because the signature covers the body
//! only. So the signed body itself is deduplicated too (SHA-256 of the raw
//! bytes, remembered as long as delivery ids are), and a GitHub event whose own
//! signed timestamp is older than that window is refused, so a replay after the
//! body's hash has expired fails as well. (Linear's `webhookTimestamp` window is
//! checked in [`crate::verify`]; Slack's signature covers its timestamp header.)

use crate::AppState;
use contexten_broker::BrokerError;
use contexten_telemetry::metric;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Claims a signed body for `delivery`: true when the body is new or belongs to
/// this very delivery (a provider's retry or redelivery keeps its identity).
const CLAIM_BODY: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"#;

/// Whether `raw` was already delivered under another delivery identity. When
/// Redis is unreachable the check is skipped loudly, like the delivery dedup.
pub async fn is_replayed_body(
    state: &AppState,
    provider: &str,
    delivery: &str,
    raw: &[u8],
) -> bool {
    let digest = hex::encode(Sha256::digest(raw));
    let key = state
        .names
        .redis_key(&["ingest", "body", provider, &digest]);
    let script = redis::Script::new(CLAIM_BODY);
    let claimed: Result<i64, BrokerError> = async {
        let mut connection = state.store.connection().await?;
        tokio::time::timeout(
            Duration::from_millis(800),
            script
                .key(&key)
                .arg(delivery)
                .arg(state.dedup_ttl.as_secs())
                .invoke_async(&mut connection),
        )
        .await
        .map_err(|_| BrokerError::RedisTimeout(Duration::from_millis(800)))?
        .map_err(|e| BrokerError::Redis(e.to_string()))
    }
    .await;
    match claimed {
        Ok(claimed) => claimed == 0,
        Err(error) => {
            tracing::warn!(%error, provider, "body replay check skipped");
            metric::redis_degraded("replay");
            false
        }
    }
}

/// The signed time of a GitHub event (the comment's creation, or the labelled
/// issue's or pull request's last update), in ms since the epoch.
pub fn github_event_time_ms(payload: &Value) -> Option<u64> {
    [
        "/comment/created_at",
        "/issue/updated_at",
        "/pull_request/updated_at",
    ]
    .iter()
    .find_map(|path| payload.pointer(path)?.as_str())
    .and_then(parse_rfc3339_ms)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`, the form GitHub sends.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn github_timestamps_parse_to_epoch_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T12:00:00Z"),
            Some(1_795_953_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T13:00:00+01:00"),
            Some(1_795_953_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T12:00:00.123Z"),
            Some(1_795_953_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-29 12:00:00",
            "2026-11-29T12:00:00",
            "２０２６-11-29T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_event_time_is_the_comment_or_the_labelled_item() {
        let comment = json!({"comment": {"created_at": "1970-01-01T00:00:01Z"}, "issue": {"updated_at": "2026-01-01T00:00:00Z"}});
        assert_eq!(github_event_time_ms(&comment), Some(1000));
        let label = json!({"pull_request": {"updated_at": "1970-01-01T00:00:02Z"}});
        assert_eq!(github_event_time_ms(&label), Some(2000));
        assert_eq!(github_event_time_ms(&json!({"zen": "hi"})), None);
    }
}
