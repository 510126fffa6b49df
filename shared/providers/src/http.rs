//! What every client shares: the HTTP client, reading rate-limit headers, and
//! turning transport errors and statuses into [`ProviderError`]s.

use crate::ProviderError;
use contexten_telemetry::client::TracedSend;
use contexten_trust::outbound::{GuardedError, OutboundRefusal};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// How much of an error body goes into a detail message.
const DETAIL_CHARS: usize = 300;

/// Timeouts of the HTTP clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The settings every client shares (the fleet's client: rustls, user agent,
/// timeouts; and no redirects: a write must not be replayed against another host).
pub(crate) fn builder(settings: HttpSettings) -> reqwest::ClientBuilder {
    contexten_tls::http_client(contexten_tls::HttpTimeouts {
        request: settings.timeout,
        connect: settings.connect_timeout,
    })
    .redirect(reqwest::redirect::Policy::none())
}

/// Builds the HTTP client of a fixed, configured base URL.
pub(crate) fn client(provider: &'static str, settings: HttpSettings) -> reqwest::Client {
    builder(settings).build().unwrap_or_else(|error| {
        // Only a broken TLS backend makes this fail; keep a working default.
        tracing::error!(provider, %error, "falling back to a default HTTP client");
        reqwest::Client::new()
    })
}

/// The delay a provider advertises: `retry-after` (seconds), else
/// `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (Unix seconds).
pub fn retry_after_from(headers: &HeaderMap, now_unix: u64) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = text("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if text("x-ratelimit-remaining") == Some("0") {
        let reset = text("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
        return Some(Duration::from_secs(reset.saturating_sub(now_unix).max(1)));
    }
    None
}

/// An answer read whole: its status, headers and body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

/// Sends `request` (with its CLIENT span) and reads the whole answer; a
/// failure to send or to read is a [`transport_error`].
pub(crate) async fn exchange(
    provider: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Answer, ProviderError> {
    let response = request
        .send_traced(provider)
        .await
        .map_err(|e| transport_error(provider, e))?;
    read(provider, response).await
}

/// Reads the whole of `response`; a body that breaks off is a
/// [`transport_error`] (it may have been applied).
pub(crate) async fn read(
    provider: &'static str,
    response: reqwest::Response,
) -> Result<Answer, ProviderError> {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .map_err(|e| transport_error(provider, e))?;
    Ok(Answer {
        status,
        headers,
        text,
    })
}

/// A transport error: a connection that never opened applied nothing; anything
/// later (a timeout while waiting for the answer) may have.
pub(crate) fn transport_error(provider: &'static str, error: reqwest::Error) -> ProviderError {
    let maybe_applied = !error.is_connect() && !error.is_builder();
    ProviderError::Unavailable {
        provider,
        detail: without_url(&error),
        maybe_applied,
    }
}

/// A request the outbound guard stopped before anything was sent. A name that
/// did not resolve may resolve later, so it is retried like an outage; every
/// other refusal (loopback, private address, plain http) is permanent.
pub(crate) fn refused(provider: &'static str, refusal: OutboundRefusal) -> ProviderError {
    if refusal.is_transient() {
        ProviderError::Unavailable {
            provider,
            detail: refusal.message,
            maybe_applied: false,
        }
    } else {
        ProviderError::OutboundRefused { provider, refusal }
    }
}

/// A failed send of a guarded client: the refusal of the guard's resolver
/// (wrapped in reqwest's error) or a transport error.
pub(crate) fn guarded_send_error(provider: &'static str, error: reqwest::Error) -> ProviderError {
    match GuardedError::from(error) {
        GuardedError::Refused(refusal) => refused(provider, refusal),
        GuardedError::Http(error) => transport_error(provider, error),
    }
}

/// The error text without the URL (a callback URL may carry a token in its query).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    if error.is_timeout() {
        format!("timed out: {text}")
    } else {
        text
    }
}

/// The snake_case code of a permanent HTTP status.
pub(crate) fn status_code_name(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "bad_request".into(),
        401 => "unauthorized".into(),
        403 => "forbidden".into(),
        404 => "not_found".into(),
        409 => "conflict".into(),
        410 => "gone".into(),
        413 => "payload_too_large".into(),
        422 => "unprocessable".into(),
        other => format!("http_{other}"),
    }
}

/// The generic reading of a failed status: 429 waits, 408/5xx retry (the write
/// may have been applied), other 4xx are permanent.
pub(crate) fn status_error(
    provider: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    default_wait: Duration,
) -> ProviderError {
    let detail = format!("HTTP {}: {}", status.as_u16(), snippet(body));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::RateLimited {
            provider,
            retry_after: retry_after_from(headers, crate::time::unix_now()).unwrap_or(default_wait),
            detail,
        };
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return ProviderError::Unavailable {
            provider,
            detail,
            maybe_applied: status != StatusCode::SERVICE_UNAVAILABLE,
        };
    }
    ProviderError::rejected(provider, &status_code_name(status), detail)
}

/// The start of a body, for error details (never a whole page).
pub(crate) fn snippet(body: &str) -> String {
    let trimmed = body.trim();
    match trimmed.char_indices().nth(DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_trust::outbound::RefusalKind;
    use reqwest::header::HeaderValue;

    #[test]
    fn an_unresolved_name_is_retried_and_other_refusals_are_permanent() {
        let refusal = |kind| OutboundRefusal {
            kind,
            host: Some("hooks.example".into()),
            message: "callback URL host hooks.example ...".into(),
        };
        let unresolved = refused("callback", refusal(RefusalKind::Unresolved));
        assert!(
            matches!(
                unresolved,
                ProviderError::Unavailable {
                    maybe_applied: false,
                    ..
                }
            ),
            "{unresolved:?}"
        );
        let scheme = refused("callback", refusal(RefusalKind::Scheme));
        assert_eq!(scheme.code(), "outbound_refused");
        assert!(!scheme.maybe_applied());
    }

    #[test]
    fn retry_after_prefers_the_explicit_header_then_the_reset_time() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_from(&headers, 1000), None);
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1042"));
        assert_eq!(
            retry_after_from(&headers, 1000),
            Some(Duration::from_secs(42))
        );
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            retry_after_from(&headers, 1000),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn statuses_are_classified() {
        let headers = HeaderMap::new();
        let wait = Duration::from_secs(60);
        let e = status_error("x", StatusCode::NOT_FOUND, &headers, "{}", wait);
        assert_eq!(e.code(), "not_found");
        let e = status_error("x", StatusCode::BAD_GATEWAY, &headers, "", wait);
        assert!(e.maybe_applied());
        let e = status_error("x", StatusCode::TOO_MANY_REQUESTS, &headers, "", wait);
        assert_eq!(
            e,
            ProviderError::RateLimited {
                provider: "x",
                retry_after: wait,
                detail: "HTTP 429: ".into()
            }
        );
    }
}
