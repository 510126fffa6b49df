//! What a provider call can fail with, classified for the caller's retry,
//! rate-limit and breaker decisions.

use std::time::Duration;

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// 429 (or Anthropic's `rate_limit_error`): wait, then try again.
    #[error("rate limited by the provider: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx (or Anthropic's 529 `overloaded_error`): the provider is unwell.
    #[error("provider error {status}: {message}")]
    Server {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Another 4xx: this request will never succeed as it is (bad key, unknown
    /// model, exhausted quota, too long a prompt).
    #[error("provider rejected the request ({status}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the provider: {0}")]
    Connect(String),
    /// 2xx with a body that is not a completion.
    #[error("unexpected provider response: {0}")]
    InvalidResponse(String),
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

impl LlmError {
    /// Worth retrying later (429, 5xx, timeouts, connection errors).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Connect(_)
        )
    }

    /// Counts as a breaker failure: the provider is down or broken, not merely
    /// busy (429) or refusing this one request (4xx).
    pub fn trips_breaker(&self) -> bool {
        matches!(
            self,
            LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Connect(_)
                | LlmError::InvalidResponse(_)
        )
    }

    /// The provider's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } | LlmError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A snake_case label for metrics and fallback reasons.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server_error",
            LlmError::Rejected { .. } => "rejected",
            LlmError::Timeout(_) => "timeout",
            LlmError::Connect(_) => "connect_error",
            LlmError::InvalidResponse(_) => "invalid_response",
            LlmError::Setup(_) => "setup",
        }
    }

    pub(crate) fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() {
            LlmError::Timeout(timeout)
        } else if error.is_decode() || error.is_body() {
            LlmError::InvalidResponse(error.to_string())
        } else {
            LlmError::Connect(error.without_url().to_string())
        }
    }
}

/// Reads `Retry-After` (delta seconds, possibly fractional, or an HTTP date),
/// or OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The message of a JSON error body: `{"error":{"message"}}` (OpenAI and
/// Anthropic), `{"error":"…"}` (some self-hosted servers), `{"message"}`,
/// `{"detail"}`; else a bounded slice of the text.
pub(crate) fn error_message(body: &str) -> (String, Option<String>, Option<String>) {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(value) = parsed {
        let error = value.get("error");
        let message = text(error.and_then(|e| e.get("message")))
            .or_else(|| text(error))
            .or_else(|| text(value.get("message")))
            .or_else(|| text(value.get("detail")));
        let code = text(error.and_then(|e| e.get("code")));
        let kind = text(error.and_then(|e| e.get("type")));
        if let Some(message) = message {
            return (message, code, kind);
        }
    }
    let mut snippet: String = body.chars().take(200).collect();
    if snippet.is_empty() {
        snippet = "(empty body)".into();
    }
    (snippet, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut dated = HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        dated.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let wait = retry_after(&dated).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn error_bodies_of_every_shape_give_their_message() {
        let openai = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            error_message(openai),
            (
                "Rate limit reached".into(),
                Some("rate_limit_exceeded".into()),
                Some("requests".into())
            )
        );
        let anthropic =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic).0, "Overloaded");
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#).0,
            "model not found"
        );
        assert_eq!(
            error_message("<html>bad gateway</html>").0,
            "<html>bad gateway</html>"
        );
    }
}
