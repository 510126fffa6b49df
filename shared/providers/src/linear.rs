//! Linear GraphQL (docs/platforms.md §3.2): `commentCreate`, threaded with
//! `parentId`, with a client-chosen comment `id` (CommentCreateInput.id, a UUID)
//! so an uncertain create can be checked with `comment(id)` before repeating it.

use crate::ProviderError;
use crate::http::{self, HttpSettings, snippet};
use crate::time::unix_now;
use contexten_config::SecretSource;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The provider label in errors and metrics.
pub const PROVIDER: &str = "linear";
/// The wait when a limit names no delay.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(60);

const COMMENT_CREATE: &str = "mutation CommentCreate($input: CommentCreateInput!) { \
commentCreate(input: $input) { success comment { id url } } }";
const COMMENT_BY_ID: &str = "query Comment($id: String!) { comment(id: $id) { id url } }";

/// How Linear sees the credential: a personal API key is sent raw as
/// `Authorization: <key>`, an OAuth access token as `Bearer <token>`; mixing the
/// two up is a known failure. The setting is read per request, so a rotated
/// `LINEAR_API_KEY_FILE` takes effect with the next one.
#[derive(Debug, Clone)]
pub struct LinearAuth {
    setting: SecretSource,
}

impl LinearAuth {
    /// `LINEAR_API_KEY` as a fixed value.
    pub fn from_setting(value: &SecretString) -> Self {
        Self::from_source(SecretSource::fixed(value.clone()))
    }

    /// `LINEAR_API_KEY` or `LINEAR_API_KEY_FILE`, read per request.
    pub fn from_source(setting: SecretSource) -> Self {
        LinearAuth { setting }
    }

    /// The `Authorization` value: `Bearer <token>` or a `lin_oauth_` token is
    /// OAuth; anything else (`lin_api_…`) is a personal key, sent raw.
    fn header(&self) -> String {
        let current = self.setting.current();
        let raw = current.expose_secret().trim();
        if let Some(token) = raw.strip_prefix("Bearer ") {
            format!("Bearer {}", token.trim())
        } else if raw.starts_with("lin_oauth_") {
            format!("Bearer {raw}")
        } else {
            raw.to_owned()
        }
    }
}

/// A comment as Linear returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    pub id: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// A Linear GraphQL client.
pub struct LinearClient {
    http: reqwest::Client,
    url: String,
    auth: LinearAuth,
}

impl std::fmt::Debug for LinearClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinearClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl LinearClient {
    /// A client for the GraphQL endpoint `url` (`LINEAR_API_URL`).
    pub fn new(url: &url::Url, auth: LinearAuth, settings: HttpSettings) -> Self {
        LinearClient {
            http: http::client(PROVIDER, settings),
            url: url.to_string(),
            auth,
        }
    }

    /// `commentCreate` on `issue_id`, under `parent_id` when given, with the
    /// comment id `id` (a UUID) when given.
    pub async fn create_comment(
        &self,
        issue_id: &str,
        body: &str,
        parent_id: Option<&str>,
        id: Option<&str>,
    ) -> Result<Comment, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            comment_create: Payload,
        }
        #[derive(Deserialize)]
        struct Payload {
            success: bool,
            comment: Option<Comment>,
        }
        let mut input = json!({ "issueId": issue_id, "body": body });
        if let Some(parent) = parent_id {
            input["parentId"] = json!(parent);
        }
        if let Some(id) = id {
            input["id"] = json!(id);
        }
        let data: Data = self
            .graphql(COMMENT_CREATE, json!({ "input": input }))
            .await?;
        match data.comment_create {
            Payload {
                success: true,
                comment: Some(comment),
            } => Ok(comment),
            _ => Err(ProviderError::rejected(
                PROVIDER,
                "comment_not_created",
                "commentCreate answered success: false",
            )),
        }
    }

    /// The comment with this id, or `None` when Linear does not know it.
    pub async fn comment(&self, id: &str) -> Result<Option<Comment>, ProviderError> {
        #[derive(Deserialize)]
        struct Data {
            comment: Option<Comment>,
        }
        match self
            .graphql::<Data>(COMMENT_BY_ID, json!({ "id": id }))
            .await
        {
            Ok(data) => Ok(data.comment),
            // Linear reports an unknown id as an error, not as null.
            Err(ProviderError::Rejected { code, .. })
                if code == "entity_not_found" || code == "invalid_input" =>
            {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    async fn graphql<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<T, ProviderError> {
        let request = self
            .http
            .post(&self.url)
            .header("authorization", self.auth.header())
            .json(&json!({ "query": query, "variables": variables }));
        let http::Answer {
            status,
            headers,
            text,
        } = http::exchange(PROVIDER, request).await?;
        let parsed: Option<GraphqlAnswer<T>> = serde_json::from_str(&text).ok();
        match parsed {
            Some(GraphqlAnswer {
                errors: Some(errors),
                ..
            }) if !errors.is_empty() => Err(graphql_error(&errors, status, &headers)),
            Some(GraphqlAnswer {
                data: Some(data), ..
            }) if status.is_success() => Ok(data),
            _ if !status.is_success() => Err(http::status_error(
                PROVIDER,
                status,
                &headers,
                &text,
                limit_wait(&headers),
            )),
            _ => Err(ProviderError::Unavailable {
                provider: PROVIDER,
                detail: format!("unexpected answer: {}", snippet(&text)),
                maybe_applied: true,
            }),
        }
    }
}

#[derive(Deserialize)]
struct GraphqlAnswer<T> {
    data: Option<T>,
    errors: Option<Vec<GraphqlError>>,
}

#[derive(Debug, Deserialize)]
struct GraphqlError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    extensions: Option<Value>,
}

/// Linear's rate-limit wait: `retry-after`, else the requests window's reset
/// (`x-ratelimit-requests-reset`, Unix milliseconds).
fn limit_wait(headers: &HeaderMap) -> Duration {
    if let Some(wait) = http::retry_after_from(headers, unix_now()) {
        return wait;
    }
    headers
        .get("x-ratelimit-requests-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|reset_ms| {
            Duration::from_millis(reset_ms.saturating_sub(unix_now() * 1000))
                .max(Duration::from_secs(1))
        })
        .unwrap_or(DEFAULT_LIMIT_WAIT)
}

fn graphql_error(
    errors: &[GraphqlError],
    status: StatusCode,
    headers: &HeaderMap,
) -> ProviderError {
    let first = &errors[0];
    let code = first
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let detail = format!(
        "{} ({})",
        snippet(&first.message),
        if code.is_empty() { "no code" } else { &code }
    );
    let not_found = first.message.to_ascii_lowercase().contains("not found");
    match code.as_str() {
        "ratelimited" => ProviderError::RateLimited {
            provider: PROVIDER,
            retry_after: limit_wait(headers),
            detail,
        },
        "internal_server_error" | "internal_error" => ProviderError::Unavailable {
            provider: PROVIDER,
            detail,
            maybe_applied: true,
        },
        _ if status.is_server_error() => ProviderError::Unavailable {
            provider: PROVIDER,
            detail,
            maybe_applied: true,
        },
        _ if not_found => ProviderError::rejected(PROVIDER, "entity_not_found", detail),
        "authentication_error" => ProviderError::rejected(PROVIDER, "unauthorized", detail),
        "" => ProviderError::rejected(PROVIDER, &http::status_code_name(status), detail),
        other => ProviderError::rejected(PROVIDER, other, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_raw_and_oauth_tokens_are_bearer() {
        let key = LinearAuth::from_setting(&SecretString::from(format!("lin_api_{}", "k1")));
        assert_eq!(key.header(), "lin_api_k1");
        let oauth = LinearAuth::from_setting(&SecretString::from(format!("lin_oauth_{}", "t1")));
        assert_eq!(oauth.header(), "Bearer lin_oauth_t1");
        let explicit = LinearAuth::from_setting(&SecretString::from(format!("Bearer {}", "t2")));
        assert_eq!(explicit.header(), "Bearer t2");
    }

    #[test]
    fn a_key_file_is_read_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linear");
        std::fs::write(&path, format!("lin_api_{}\n", "k1")).unwrap();
        let source = SecretSource::file("LINEAR_API_KEY_FILE", &path, Duration::ZERO).unwrap();
        let auth = LinearAuth::from_source(source);
        assert_eq!(auth.header(), "lin_api_k1");
        std::fs::write(&path, format!("lin_oauth_{}", "t3")).unwrap();
        assert_eq!(auth.header(), "Bearer lin_oauth_t3");
        assert!(!format!("{auth:?}").contains("t3"));
    }
}
