//! Signed callbacks for API tasks, in the Standard Webhooks style: headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The id stays the same
//! when a delivery is repeated, so a receiver deduplicates on it.
//!
//! The URL comes from the requester, so [`CallbackClient`] connects only where
//! the outbound guard allows (`contexten_trust::outbound`): the URL is checked
//! before sending and the client's resolver refuses names that resolve to
//! refused addresses, so a refused destination is never connected to.

use crate::ProviderError;
use crate::http::{self, HttpSettings};
use crate::time::unix_now;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use contexten_config::SecretSource;
use contexten_telemetry::client::TracedSend as _;
use contexten_trust::outbound::{OutboundGuard, Purpose};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The provider label in errors and metrics.
pub const PROVIDER: &str = "callback";
/// Header: the delivery's id (stable across repeats).
pub const HEADER_ID: &str = "webhook-id";
/// Header: when the delivery was signed (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header: `v1,<base64>` signatures separated by spaces.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a receiver accepts a timestamp from its own clock.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The wait when a receiver answers 429 without a delay.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// Signs (and verifies) Standard Webhooks signatures with one secret. A secret
/// read from `CALLBACK_SIGNING_SECRET_FILE` is read again per signature (the
/// file itself at most once a second), so a rotated secret signs the next
/// delivery; a value that is not a usable secret keeps the last usable one.
#[derive(Clone)]
pub struct WebhookSigner {
    source: SecretSource,
    /// The last key that decoded (the only one for a fixed secret).
    key: Arc<Mutex<SecretSlice<u8>>>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(..)")
    }
}

/// A secret that is neither `whsec_<base64>` nor usable raw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signing secret must be whsec_<base64> or at least 16 bytes")]
pub struct BadSecret;

/// The key of `whsec_<base64>` (the Standard Webhooks format) or, for other
/// values, the secret's own bytes.
fn decode(secret: &SecretString) -> Result<SecretSlice<u8>, BadSecret> {
    let raw = secret.expose_secret().trim();
    let key = match raw.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded).map_err(|_| BadSecret)?,
        None => raw.as_bytes().to_vec(),
    };
    if key.len() < 16 {
        return Err(BadSecret);
    }
    Ok(SecretSlice::from(key))
}

impl WebhookSigner {
    /// A signer from `whsec_<base64>` (the Standard Webhooks format) or, for
    /// other values, the secret's own bytes.
    pub fn new(secret: &SecretString) -> Result<Self, BadSecret> {
        Self::from_source(SecretSource::fixed(secret.clone()))
    }

    /// A signer reading its secret from `source` (a file is re-read); its
    /// current value must be usable.
    pub fn from_source(source: SecretSource) -> Result<Self, BadSecret> {
        let key = decode(&source.current())?;
        Ok(WebhookSigner {
            source,
            key: Arc::new(Mutex::new(key)),
        })
    }

    /// The current key, or the last usable one when the file holds none.
    fn key(&self) -> SecretSlice<u8> {
        let mut last = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if self.source.is_file() {
            match decode(&self.source.current()) {
                Ok(key) => *last = key,
                Err(BadSecret) => tracing::warn!(
                    "CALLBACK_SIGNING_SECRET_FILE does not hold a usable secret: signing with the last usable one"
                ),
            }
        }
        last.clone()
    }

    fn mac(key: &SecretSlice<u8>, id: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for this delivery.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = Self::mac(&self.key(), id, timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Whether one of the `v1` signatures in `header` matches (constant time) and
    /// the timestamp is within [`TOLERANCE`] of `now_unix`.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        header: &str,
        body: &[u8],
        now_unix: u64,
    ) -> bool {
        let Ok(timestamp) = timestamp.trim().parse::<u64>() else {
            return false;
        };
        if timestamp.abs_diff(now_unix) > TOLERANCE.as_secs() {
            return false;
        }
        let key = self.key();
        header.split_whitespace().any(|candidate| {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = STANDARD.decode(encoded) else {
                return false;
            };
            Self::mac(&key, id, timestamp, body)
                .verify_slice(&tag)
                .is_ok()
        })
    }
}

/// Posts signed JSON to callback URLs, only where the outbound guard allows.
#[derive(Debug)]
pub struct CallbackClient {
    http: reqwest::Client,
    guard: OutboundGuard,
    signer: WebhookSigner,
}

impl CallbackClient {
    /// A client signing with `signer` and reaching only what `guard` allows.
    /// Fails only when the HTTP client cannot be built (a broken TLS backend):
    /// an unguarded fallback is no option here.
    pub fn new(
        signer: WebhookSigner,
        settings: HttpSettings,
        guard: OutboundGuard,
    ) -> Result<Self, ProviderError> {
        // Redirects stay off after hardening (which installs a following
        // policy): a 307 would replay the signed body to another URL, and a
        // 302 would turn the POST into a body-less GET whose 2xx looks delivered.
        let http = guard
            .harden(http::builder(settings), Purpose::Callback)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ProviderError::Misconfigured {
                provider: PROVIDER,
                detail: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(CallbackClient {
            http,
            guard,
            signer,
        })
    }

    /// POSTs `body` (JSON) to `url` with delivery id `id`; any 2xx is delivered.
    /// Returns the receiver's status. A destination the guard refuses is
    /// [`ProviderError::OutboundRefused`] and nothing is sent.
    pub async fn deliver(&self, url: &str, id: &str, body: Vec<u8>) -> Result<u16, ProviderError> {
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                ProviderError::rejected(
                    PROVIDER,
                    "invalid_target",
                    "the callback URL is not http(s)",
                )
            })?;
        // Checked here as well as in the resolver: reqwest connects to an IP
        // literal without asking the resolver.
        self.guard
            .check(parsed.as_str(), Purpose::Callback)
            .await
            .map_err(|refusal| http::refused(PROVIDER, refusal))?;
        let timestamp = unix_now();
        let signature = self.signer.sign(id, timestamp, &body);
        let response = self
            .http
            .post(parsed.clone())
            .header("content-type", "application/json")
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::guarded_send_error(PROVIDER, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let headers = response.headers().clone();
        if status.is_redirection() {
            return Err(redirected(&parsed, status, &headers));
        }
        let text = response.text().await.unwrap_or_default();
        Err(http::status_error(
            PROVIDER,
            status,
            &headers,
            &text,
            DEFAULT_LIMIT_WAIT,
        ))
    }
}

/// A receiver that redirects: not followed (see [`CallbackClient::new`]), and
/// permanent, since the registered URL is not the one that takes deliveries.
/// The detail names the target's host only (its path or query may hold a token).
fn redirected(url: &url::Url, status: StatusCode, headers: &HeaderMap) -> ProviderError {
    let host = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| url.join(location).ok())
        .and_then(|target| target.host_str().map(str::to_owned))
        .unwrap_or_else(|| "an unknown host".into());
    ProviderError::rejected(
        PROVIDER,
        "callback_redirected",
        format!(
            "HTTP {} redirect to {host}: callbacks are not sent on to another URL; register the final one",
            status.as_u16()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        // Built by concatenation: no secret-looking literal in the source.
        SecretString::from(format!(
            "whsec_{}",
            STANDARD.encode(b"a test key of 24 bytes..")
        ))
    }

    #[test]
    fn a_signature_verifies_and_a_tampered_body_does_not() {
        let signer = WebhookSigner::new(&secret()).unwrap();
        let sig = signer.sign("msg_1", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1,"));
        assert!(signer.verify("msg_1", "1700000000", &sig, b"{\"a\":1}", 1_700_000_010));
        assert!(!signer.verify("msg_1", "1700000000", &sig, b"{\"a\":2}", 1_700_000_010));
        assert!(!signer.verify("msg_2", "1700000000", &sig, b"{\"a\":1}", 1_700_000_010));
        // Stale timestamps are refused even with a good signature.
        assert!(!signer.verify("msg_1", "1700000000", &sig, b"{\"a\":1}", 1_700_001_000));
        // Several signatures: any match is enough (key rotation).
        let both = format!("v1,AAAA {sig}");
        assert!(signer.verify("msg_1", "1700000000", &both, b"{\"a\":1}", 1_700_000_000));
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert!(WebhookSigner::new(&SecretString::from("short".to_owned())).is_err());
        assert!(WebhookSigner::new(&SecretString::from("whsec_***".to_owned())).is_err());
    }

    #[test]
    fn a_rotated_secret_file_signs_the_next_delivery_and_a_bad_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callback");
        std::fs::write(&path, secret().expose_secret()).unwrap();
        let source = SecretSource::file("CALLBACK_SIGNING_SECRET_FILE", &path, Duration::ZERO);
        let signer = WebhookSigner::from_source(source.unwrap()).unwrap();
        let old = WebhookSigner::new(&secret()).unwrap();
        let next = SecretString::from(format!(
            "whsec_{}",
            STANDARD.encode(b"the next key, also 24 b.")
        ));
        let sign = |s: &WebhookSigner| s.sign("msg_1", 1_700_000_000, b"{}");
        assert_eq!(sign(&signer), sign(&old));
        std::fs::write(&path, next.expose_secret()).unwrap();
        let new = WebhookSigner::new(&next).unwrap();
        assert_eq!(sign(&signer), sign(&new));
        std::fs::write(&path, "short").unwrap();
        assert_eq!(
            sign(&signer),
            sign(&new),
            "an unusable value keeps the last key"
        );
    }
}
