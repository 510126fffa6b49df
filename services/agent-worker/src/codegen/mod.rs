//! A typed client for the Codegen agent REST API (docs/platforms.md §5.1): create,
//! get, resume and list agent runs for one organisation, with a bearer token.
//! Every non-2xx answer becomes a [`CodegenError`] that says whether it should
//! trip the circuit breaker and whether it is worth retrying.

mod model;

pub use model::{
    AgentRun, AgentRunPage, CreateAgentRun, PullRequest, ResumeAgentRun, RunState, error_message,
};

use contexten_config::{ExposeSecret, SecretSource};
use contexten_telemetry::client::TracedSend as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// What went wrong talking to Codegen.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("codegen rate limit reached (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("codegen plan limit reached (402): {0}")]
    PaymentRequired(String),
    #[error("codegen rejected the API token (401): {0}")]
    Unauthorized(String),
    #[error("codegen refused access (403): {0}")]
    Forbidden(String),
    #[error("codegen found nothing there (404): {0}")]
    NotFound(String),
    #[error("codegen rejected the request (422): {0}")]
    Invalid(String),
    #[error("codegen refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("codegen failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("codegen did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach codegen: {0}")]
    Transport(String),
    #[error("unreadable codegen response: {0}")]
    Decode(String),
    #[error("cannot build the http client: {0}")]
    Client(String),
}

impl CodegenError {
    /// Whether this says the service is unwell (5xx, timeouts, connection
    /// errors), as opposed to an answer about this request.
    pub fn trips_breaker(&self) -> bool {
        matches!(
            self,
            CodegenError::Server { .. } | CodegenError::Timeout(_) | CodegenError::Transport(_)
        )
    }

    /// Whether the server certainly did not act on the request (so a create can
    /// be retried without looking for a run it may have started).
    pub fn certainly_not_applied(&self) -> bool {
        !matches!(
            self,
            CodegenError::Server { .. }
                | CodegenError::Timeout(_)
                | CodegenError::Transport(_)
                | CodegenError::Decode(_)
        )
    }
}

/// Connection settings of the client.
#[derive(Debug, Clone)]
pub struct CodegenConfig {
    /// `CODEGEN_API_URL`.
    pub base_url: url::Url,
    /// `CODEGEN_ORG_ID`.
    pub org_id: u64,
    /// `CODEGEN_API_TOKEN` or `CODEGEN_API_TOKEN_FILE`, read per request.
    pub token: SecretSource,
    /// `CODEGEN_TIMEOUT_SECS`: the whole request, body included.
    pub timeout: Duration,
}

/// The Codegen API for one organisation (cheap to clone).
#[derive(Clone)]
pub struct CodegenClient {
    http: reqwest::Client,
    base: String,
    org_id: u64,
    token: SecretSource,
    timeout: Duration,
}

impl std::fmt::Debug for CodegenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodegenClient")
            .field("base", &self.base)
            .field("org_id", &self.org_id)
            .finish()
    }
}

impl CodegenClient {
    /// A client for `config`.
    pub fn new(config: &CodegenConfig) -> Result<Self, CodegenError> {
        // The fleet's client (contexten-tls: ring, CONTEXTEN_CA_FILE, the
        // fleet's user agent); the connect within at most 10 s of the timeout.
        let http = contexten_tls::http_client(contexten_tls::HttpTimeouts::new(config.timeout))
            .build()
            .map_err(|e| CodegenError::Client(e.to_string()))?;
        Ok(CodegenClient {
            http,
            base: config.base_url.as_str().trim_end_matches('/').to_owned(),
            org_id: config.org_id,
            token: config.token.clone(),
            timeout: config.timeout,
        })
    }

    /// The organisation this client acts for.
    pub fn org_id(&self) -> u64 {
        self.org_id
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/organizations/{}/agent/{tail}",
            self.base, self.org_id
        )
    }

    /// `POST /v1/organizations/{org}/agent/run`: starts a run (asynchronous).
    pub async fn create_run(&self, input: &CreateAgentRun) -> Result<AgentRun, CodegenError> {
        self.send(self.http.post(self.url("run")).json(input)).await
    }

    /// `GET /v1/organizations/{org}/agent/run/{id}`: a run's status and result.
    pub async fn get_run(&self, run_id: u64) -> Result<AgentRun, CodegenError> {
        self.send(self.http.get(self.url(&format!("run/{run_id}"))))
            .await
    }

    /// `POST /v1/organizations/{org}/agent/run/resume`: a follow-up prompt.
    pub async fn resume_run(&self, input: &ResumeAgentRun) -> Result<AgentRun, CodegenError> {
        self.send(self.http.post(self.url("run/resume")).json(input))
            .await
    }

    /// `GET /v1/organizations/{org}/agent/runs`: one page, newest first.
    pub async fn list_runs(&self, skip: u32, limit: u32) -> Result<AgentRunPage, CodegenError> {
        let limit = limit.clamp(1, 100);
        self.send(
            self.http
                .get(self.url(&format!("runs?skip={skip}&limit={limit}"))),
        )
        .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CodegenError> {
        let response = request
            .bearer_auth(self.token.current().expose_secret())
            .send_traced("codegen")
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return serde_json::from_str(&body).map_err(|e| CodegenError::Decode(e.to_string()));
        }
        Err(classify(status, retry_after, &body))
    }

    fn transport(&self, error: reqwest::Error) -> CodegenError {
        if error.is_timeout() {
            CodegenError::Timeout(self.timeout)
        } else {
            // Without the URL: it is ours, and the cause is what matters.
            CodegenError::Transport(error.without_url().to_string())
        }
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> CodegenError {
    let message = error_message(body);
    match status.as_u16() {
        429 => CodegenError::RateLimited {
            retry_after,
            message,
        },
        401 => CodegenError::Unauthorized(message),
        402 => CodegenError::PaymentRequired(message),
        403 => CodegenError::Forbidden(message),
        404 => CodegenError::NotFound(message),
        422 => CodegenError::Invalid(message),
        code if status.is_server_error() => CodegenError::Server {
            status: code,
            message,
        },
        code => CodegenError::Rejected {
            status: code,
            message,
        },
    }
}

/// `Retry-After` in delta-seconds. Codegen does not document the header; an
/// HTTP-date is not expected and is ignored (the caller's default applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::Secret;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn statuses_become_errors_that_know_whether_to_trip_the_breaker() {
        let body = r#"{"message":"boom","status_code":503}"#;
        let server = classify(StatusCode::SERVICE_UNAVAILABLE, None, body);
        assert!(server.trips_breaker());
        assert!(!server.certainly_not_applied());
        for code in [402, 403, 404, 422, 429, 401, 400] {
            let error = classify(
                StatusCode::from_u16(code).unwrap(),
                None,
                r#"{"detail":"x"}"#,
            );
            assert!(!error.trips_breaker(), "{code}");
            assert!(error.certainly_not_applied(), "{code}");
        }
        assert!(matches!(
            classify(StatusCode::PAYMENT_REQUIRED, None, body),
            CodegenError::PaymentRequired(m) if m == "boom"
        ));
    }

    #[test]
    fn an_https_client_builds_with_the_ring_provider() {
        let config = CodegenConfig {
            base_url: url::Url::parse("https://api.codegen.com/").unwrap(),
            org_id: 1,
            token: Secret::from(format!("{}-{}", "not", "a-token")).into(),
            timeout: Duration::from_secs(5),
        };
        let client = CodegenClient::new(&config).unwrap();
        assert_eq!(
            client.url("run/7"),
            "https://api.codegen.com/v1/organizations/1/agent/run/7"
        );
        assert!(!format!("{client:?}").contains("a-token"));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
