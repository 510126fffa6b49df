//! Webhook signature checks, done on the raw body before anything parses it
//! (docs/platforms.md §2.1, §3.1, §4.1). Every comparison is constant-time
//! (`Mac::verify_slice`); a malformed header is treated like a wrong signature.
//! A provider's secret may hold several values while it is rotated: a
//! signature made with any of them is accepted, each candidate compared in
//! constant time and every candidate tried, so the time taken does not say
//! which one matched.

use contexten_config::{ExposeSecret, Secret};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed request is refused (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature does not match the body")]
    Mismatch,
    #[error("timestamp is outside the accepted window of {0:?}")]
    Stale(Duration),
}

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"))
}

/// Checks `hex_sig` against the MAC of the signed message under each secret;
/// `feed` writes the message into a MAC.
fn check_hex(
    secrets: &[Secret],
    feed: impl Fn(&mut HmacSha256),
    hex_sig: &str,
    header: &'static str,
) -> Result<(), SignatureError> {
    let expected = hex::decode(hex_sig.trim()).map_err(|_| SignatureError::Malformed(header))?;
    let matched = secrets.iter().fold(false, |matched, secret| {
        let mut m = mac(secret);
        feed(&mut m);
        m.verify_slice(&expected).is_ok() | matched
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn github(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    const NAME: &str = "X-Hub-Signature-256";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(NAME))?;
    check_hex(secrets, |m| m.update(body), hex_sig, NAME)
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC(secret, "v0:{ts}:{body}")>` with
/// `X-Slack-Request-Timestamp` (unix seconds) within `window` of `now_secs`.
pub fn slack(
    secrets: &[Secret],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_secs: u64,
    window: Duration,
) -> Result<(), SignatureError> {
    const SIG: &str = "X-Slack-Signature";
    const TS: &str = "X-Slack-Request-Timestamp";
    let signature = signature.ok_or(SignatureError::Missing(SIG))?;
    let timestamp = timestamp.ok_or(SignatureError::Missing(TS))?;
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed(TS))?;
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed(SIG))?;
    let feed = |m: &mut HmacSha256| {
        m.update(b"v0:");
        m.update(timestamp.trim().as_bytes());
        m.update(b":");
        m.update(body);
    };
    check_hex(secrets, feed, hex_sig, SIG)?;
    // Checked after the signature so the timestamp is known to be Slack's.
    if now_secs.abs_diff(ts) > window.as_secs() {
        return Err(SignatureError::Stale(window));
    }
    Ok(())
}

/// Linear: `linear-signature: <hex HMAC-SHA256(secret, body)>` (no prefix); the
/// freshness check on `webhookTimestamp` happens once the body is parsed
/// ([`linear_fresh`]), since the timestamp is inside the signed body.
pub fn linear(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    const NAME: &str = "linear-signature";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    check_hex(secrets, |m| m.update(body), header, NAME)
}

/// Linear's `webhookTimestamp` (unix milliseconds) must be within `window` of now.
pub fn linear_fresh(
    timestamp_ms: Option<u64>,
    now_ms: u64,
    window: Duration,
) -> Result<(), SignatureError> {
    let ts = timestamp_ms.ok_or(SignatureError::Missing("webhookTimestamp"))?;
    if now_ms.abs_diff(ts) > window.as_millis() as u64 {
        return Err(SignatureError::Stale(window));
    }
    Ok(())
}

/// Signs `message` the way the providers do (lowercase hex): used by tests,
/// the fuzz test and the load generator.
pub fn sign_hex(secret: &Secret, message: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(message);
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::from(s.to_owned())
    }

    #[test]
    fn a_signature_made_with_any_of_several_secrets_is_accepted() {
        let (old, new) = (
            secret(&["gh-old-", "0001"].concat()),
            secret(&["gh-new-", "0002"].concat()),
        );
        let other = secret(&["gh-other-", "0003"].concat());
        let body = b"{}";
        let both = [old.clone(), new.clone()];
        for signer in [&old, &new] {
            let sig = format!("sha256={}", sign_hex(signer, body));
            assert_eq!(github(&both, Some(&sig), body), Ok(()));
            assert_eq!(linear(&both, Some(&sign_hex(signer, body)), body), Ok(()));
        }
        let sig = format!("sha256={}", sign_hex(&other, body));
        assert_eq!(
            github(&both, Some(&sig), body),
            Err(SignatureError::Mismatch)
        );
        let sig = format!("sha256={}", sign_hex(&old, body));
        assert_eq!(
            github(&[new], Some(&sig), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(github(&[], Some(&sig), body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn github_documented_test_vector_verifies() {
        // docs.github.com "Validating webhook deliveries", "Testing the webhook payload validation".
        let key = secret(&["It's a Secret", " to Everybody"].concat());
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            github(std::slice::from_ref(&key), Some(sig), b"Hello, World!"),
            Ok(())
        );
        assert_eq!(format!("sha256={}", sign_hex(&key, b"Hello, World!")), sig);
        assert_eq!(
            github(std::slice::from_ref(&key), Some(sig), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            github(
                std::slice::from_ref(&key),
                Some("sha1=757107"),
                b"Hello, World!"
            ),
            Err(SignatureError::Malformed("X-Hub-Signature-256"))
        );
        assert_eq!(
            github(std::slice::from_ref(&key), None, b"Hello, World!"),
            Err(SignatureError::Missing("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn slack_signature_covers_timestamp_and_body_within_five_minutes() {
        let key = secret(&["8f742231b10e8888abcd", "99yyyyyyy"].concat());
        let body = b"token=x&team_id=T1&command=%2Fcontexten";
        let ts = 1_531_420_618u64;
        let sig = format!(
            "v0={}",
            sign_hex(
                &key,
                format!("v0:{ts}:")
                    .as_bytes()
                    .iter()
                    .chain(body)
                    .copied()
                    .collect::<Vec<_>>()
                    .as_slice()
            )
        );
        let window = Duration::from_secs(300);
        let ts_s = ts.to_string();
        assert_eq!(
            slack(
                std::slice::from_ref(&key),
                Some(&sig),
                Some(&ts_s),
                body,
                ts + 299,
                window
            ),
            Ok(())
        );
        assert_eq!(
            slack(
                std::slice::from_ref(&key),
                Some(&sig),
                Some(&ts_s),
                body,
                ts + 301,
                window
            ),
            Err(SignatureError::Stale(window))
        );
        let other_ts = (ts + 1).to_string();
        assert_eq!(
            slack(
                std::slice::from_ref(&key),
                Some(&sig),
                Some(&other_ts),
                body,
                ts,
                window
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            slack(
                std::slice::from_ref(&key),
                Some("v0=zz"),
                Some(&ts_s),
                body,
                ts,
                window
            ),
            Err(SignatureError::Malformed("X-Slack-Signature"))
        );
    }

    #[test]
    fn linear_signature_is_bare_hex_and_timestamp_is_checked_in_milliseconds() {
        let key = secret(&["lin_wh_", "test"].concat());
        let body = br#"{"type":"Issue","webhookTimestamp":1700000000000}"#;
        let sig = sign_hex(&key, body);
        assert_eq!(linear(std::slice::from_ref(&key), Some(&sig), body), Ok(()));
        assert_eq!(
            linear(
                std::slice::from_ref(&key),
                Some(&format!("sha256={sig}")),
                body
            ),
            Err(SignatureError::Malformed("linear-signature"))
        );
        let window = Duration::from_secs(60);
        assert_eq!(
            linear_fresh(Some(1_700_000_000_000), 1_700_000_059_000, window),
            Ok(())
        );
        assert_eq!(
            linear_fresh(Some(1_700_000_000_000), 1_700_000_061_000, window),
            Err(SignatureError::Stale(window))
        );
    }
}
