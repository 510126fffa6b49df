//! Slack Web API (EXTERNAL-APIS §6.6): `chat.postMessage` in a thread (whose
//! `thread_ts` is the parent's), `reactions.add`, and `conversations.replies` to
//! find a message by its metadata. Slack answers most errors with HTTP 200 and
//! `{ok:false, error}`: the `ok` field decides, never the status alone.

use crate::ProviderError;
use crate::http::{self, HttpSettings, snippet};
use crate::time::unix_now;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::Duration;

/// The provider label in errors and metrics.
pub const PROVIDER: &str = "slack";
/// The wait when Slack names no delay.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// Replies read when looking for a message by metadata.
const SEARCH_LIMIT: &str = "200";

/// A message to post in a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct PostMessage {
    pub channel: String,
    /// The parent message's ts (never a reply's).
    pub thread_ts: Option<String>,
    /// The notification and fallback text.
    pub text: String,
    /// Block Kit blocks, when the message has them.
    pub blocks: Option<Value>,
    /// Message metadata (`{event_type, event_payload}`), used to find it again.
    pub metadata: Option<Value>,
}

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// A Slack Web API client for one bot token.
pub struct SlackClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl SlackClient {
    /// A client for the API at `base` (`SLACK_API_URL`) with a bot token.
    pub fn new(base: &url::Url, token: SecretString, settings: HttpSettings) -> Self {
        SlackClient {
            http: http::client(PROVIDER, settings),
            base: base.as_str().trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// `chat.postMessage`.
    pub async fn post_message(&self, message: &PostMessage) -> Result<Posted, ProviderError> {
        let mut body = json!({
            "channel": message.channel,
            "text": message.text,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        if let Some(thread_ts) = &message.thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        if let Some(blocks) = &message.blocks {
            body["blocks"] = blocks.clone();
        }
        if let Some(metadata) = &message.metadata {
            body["metadata"] = metadata.clone();
        }
        let answer = self.call("chat.postMessage", body, true).await?;
        let text = |field: &str| answer.get(field).and_then(Value::as_str).map(str::to_owned);
        match (text("channel"), text("ts")) {
            (Some(channel), Some(ts)) => Ok(Posted { channel, ts }),
            _ => Err(ProviderError::Unavailable {
                provider: PROVIDER,
                detail: "chat.postMessage answered ok without channel and ts".into(),
                maybe_applied: true,
            }),
        }
    }

    /// `reactions.add`; a reaction already there counts as added.
    pub async fn add_reaction(
        &self,
        channel: &str,
        ts: &str,
        name: &str,
    ) -> Result<(), ProviderError> {
        let body = json!({ "channel": channel, "timestamp": ts, "name": name });
        match self.call("reactions.add", body, false).await {
            Ok(_) => Ok(()),
            Err(ProviderError::Rejected { code, .. }) if code == "already_reacted" => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The ts of the reply in `thread_ts` whose metadata has `event_type` and
    /// `event_payload.key == key`.
    pub async fn find_by_metadata(
        &self,
        channel: &str,
        thread_ts: &str,
        event_type: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        let query = [
            ("channel", channel),
            ("ts", thread_ts),
            ("include_all_metadata", "true"),
            ("limit", SEARCH_LIMIT),
        ];
        let response = self
            .http
            .get(format!("{}/conversations.replies", self.base))
            .bearer_auth(self.token.expose_secret())
            .query(&query)
            .send()
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        let answer = read(response, false).await?;
        let messages = answer
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(messages.iter().find_map(|message| {
            let metadata = message.get("metadata")?;
            let matches = metadata.get("event_type").and_then(Value::as_str) == Some(event_type)
                && metadata
                    .get("event_payload")
                    .and_then(|p| p.get("key"))
                    .and_then(Value::as_str)
                    == Some(key);
            matches
                .then(|| message.get("ts").and_then(Value::as_str).map(str::to_owned))
                .flatten()
        }))
    }

    async fn call(&self, method: &str, body: Value, writes: bool) -> Result<Value, ProviderError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose_secret())
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        read(response, writes).await
    }
}

/// Reads a Web API answer: HTTP errors first, then the `ok` field.
async fn read(response: reqwest::Response, writes: bool) -> Result<Value, ProviderError> {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .map_err(|e| http::transport_error(PROVIDER, e))?;
    let wait = http::retry_after_from(&headers, unix_now()).unwrap_or(DEFAULT_LIMIT_WAIT);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::RateLimited {
            provider: PROVIDER,
            retry_after: wait,
            detail: format!("HTTP 429: {}", snippet(&text)),
        });
    }
    if !status.is_success() {
        return Err(http::status_error(PROVIDER, status, &headers, &text, wait));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|_| ProviderError::Unavailable {
        provider: PROVIDER,
        detail: format!("unexpected answer: {}", snippet(&text)),
        maybe_applied: writes,
    })?;
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer);
    }
    let error = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_owned();
    Err(match error.as_str() {
        "ratelimited" | "rate_limited" => ProviderError::RateLimited {
            provider: PROVIDER,
            retry_after: wait,
            detail: error,
        },
        "fatal_error" | "internal_error" | "request_timeout" | "service_unavailable" => {
            ProviderError::Unavailable {
                provider: PROVIDER,
                maybe_applied: writes && error != "service_unavailable",
                detail: error,
            }
        }
        _ => ProviderError::rejected(
            PROVIDER,
            &error,
            format!("Slack answered ok:false ({error})"),
        ),
    })
}
