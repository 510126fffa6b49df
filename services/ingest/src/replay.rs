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
use crate::error::IngestError;
use contexten_broker::{BrokerError, redis_error};
use contexten_envelope::time::parse_rfc3339;
use contexten_telemetry::metric;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Claims a signed body for `delivery`: true when the body is new or belongs to
/// this very delivery (a provider's retry or redelivery keeps its identity).
pub(crate) const CLAIM_BODY: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"#;

/// Whether `raw` was already delivered under another delivery identity. When
/// Redis is unreachable the check is skipped loudly, like the delivery dedup;
/// when the records Redis refuses the claim (full), the request is refused with
/// 503 and `Retry-After`, like the delivery claim ([`crate::intake`]).
pub async fn is_replayed_body(
    state: &AppState,
    provider: &str,
    delivery: &str,
    raw: &[u8],
) -> Result<bool, IngestError> {
    let digest = hex::encode(Sha256::digest(raw));
    let key = state
        .names
        .redis_key(&["ingest", "body", provider, &digest]);
    let claimed: Result<i64, BrokerError> = async {
        let mut connection = state.store.connection().await?;
        tokio::time::timeout(
            Duration::from_millis(800),
            state
                .scripts
                .claim_body
                .key(&key)
                .arg(delivery)
                .arg(state.dedup_ttl.as_secs())
                .invoke_async(&mut connection),
        )
        .await
        .map_err(|_| BrokerError::RedisTimeout(Duration::from_millis(800)))?
        .map_err(redis_error)
    }
    .await;
    match claimed {
        Ok(claimed) => Ok(claimed == 0),
        Err(error) if error.is_refused() => {
            tracing::warn!(%error, provider, "the records redis refused the body claim; answering 503");
            Err(IngestError::StoreDown {
                retry_after: state.retry_after,
            })
        }
        Err(error) => {
            tracing::warn!(%error, provider, "body replay check skipped");
            metric::redis_degraded("replay");
            Ok(false)
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
    .and_then(parse_rfc3339)
    .map(|secs| secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_time_is_the_comment_or_the_labelled_item() {
        let comment = json!({"comment": {"created_at": "1970-01-01T00:00:01Z"}, "issue": {"updated_at": "2026-01-01T00:00:00Z"}});
        assert_eq!(github_event_time_ms(&comment), Some(1000));
        let label = json!({"pull_request": {"updated_at": "1970-01-01T00:00:02Z"}});
        assert_eq!(github_event_time_ms(&label), Some(2000));
        assert_eq!(github_event_time_ms(&json!({"zen": "hi"})), None);
    }
}
