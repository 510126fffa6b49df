//! Slack Web API (docs/platforms.md §4.2): `chat.postMessage` in a thread (whose
//! `thread_ts` is the parent's) or in a channel, `reactions.add`,
//! `conversations.replies` / `conversations.history` to find a message by its
//! metadata, a slash command's `response_url`, and the three-step file upload
//! (`files.getUploadURLExternal` → POST the bytes to its `upload_url` →
//! `files.completeUploadExternal`). Slack answers most errors with HTTP 200 and
//! `{ok:false, error}`: the `ok` field decides, never the status alone.
//!
//! A `response_url` and an `upload_url` come from Slack, not from us, so they
//! are followed only on Slack's own hosts (`hooks.slack.com`,
//! `files.slack.com`, https) or on the configured API's host (a test's fake),
//! and neither carries the bot token.

use crate::ProviderError;
use crate::http::{self, HttpSettings, snippet};
use crate::time::unix_now;
use contexten_config::SecretSource;
use contexten_telemetry::client::TracedSend as _;
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
/// Where Slack's slash-command `response_url`s point.
const RESPONSE_URL_HOSTS: &[&str] = &["hooks.slack.com"];
/// Where `files.getUploadURLExternal` sends the bytes.
const UPLOAD_URL_HOSTS: &[&str] = &["files.slack.com"];

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

/// A file to share in a channel, in a thread when `thread_ts` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct FileUpload {
    pub channel: String,
    /// The parent message's ts (never a reply's).
    pub thread_ts: Option<String>,
    pub filename: String,
    pub title: String,
    pub content: Vec<u8>,
}

/// Who sees a message sent through a slash command's `response_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    /// Everyone in the channel (an answer).
    InChannel,
    /// Only the person who typed the command (an acknowledgement).
    Ephemeral,
}

impl ResponseType {
    /// Slack's `response_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::InChannel => "in_channel",
            ResponseType::Ephemeral => "ephemeral",
        }
    }
}

/// A Slack Web API client for one bot token.
pub struct SlackClient {
    http: reqwest::Client,
    base: String,
    base_url: url::Url,
    /// Read per request, so a rotated `SLACK_BOT_TOKEN_FILE` takes effect.
    token: SecretSource,
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
        Self::with_token_source(base, SecretSource::fixed(token), settings)
    }

    /// A client whose token is read per request (`SLACK_BOT_TOKEN_FILE` may change).
    pub fn with_token_source(base: &url::Url, token: SecretSource, settings: HttpSettings) -> Self {
        SlackClient {
            http: http::client(PROVIDER, settings),
            base: base.as_str().trim_end_matches('/').to_owned(),
            base_url: base.clone(),
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

    /// The ts of the message whose metadata has `event_type` and
    /// `event_payload.key == key`: a reply in `thread_ts`, or without a thread
    /// a message of the channel since `oldest` (Unix seconds).
    pub async fn find_by_metadata(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: u64,
        event_type: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        let messages = match thread_ts {
            Some(ts) => self.thread_messages(channel, ts).await?,
            None => self.channel_messages(channel, oldest).await?,
        };
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

    /// Whether a message of the thread `thread_ts` shares a file named `filename`.
    pub async fn thread_has_file(
        &self,
        channel: &str,
        thread_ts: &str,
        filename: &str,
    ) -> Result<bool, ProviderError> {
        let messages = self.thread_messages(channel, thread_ts).await?;
        Ok(messages.iter().any(|message| {
            message
                .get("files")
                .and_then(Value::as_array)
                .is_some_and(|files| {
                    files
                        .iter()
                        .any(|f| f.get("name").and_then(Value::as_str) == Some(filename))
                })
        }))
    }

    /// `conversations.replies` with metadata: the parent and its replies.
    async fn thread_messages(&self, channel: &str, ts: &str) -> Result<Vec<Value>, ProviderError> {
        let query = [
            ("channel", channel),
            ("ts", ts),
            ("include_all_metadata", "true"),
            ("limit", SEARCH_LIMIT),
        ];
        self.messages("conversations.replies", &query).await
    }

    /// `conversations.history` with metadata since `oldest` (Unix seconds).
    async fn channel_messages(
        &self,
        channel: &str,
        oldest: u64,
    ) -> Result<Vec<Value>, ProviderError> {
        let oldest = oldest.to_string();
        let query = [
            ("channel", channel),
            ("oldest", oldest.as_str()),
            ("include_all_metadata", "true"),
            ("limit", SEARCH_LIMIT),
        ];
        self.messages("conversations.history", &query).await
    }

    async fn messages(
        &self,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, ProviderError> {
        let response = self
            .http
            .get(format!("{}/{method}", self.base))
            .bearer_auth(self.token.current().expose_secret())
            .query(query)
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        let answer = read(response, false).await?;
        Ok(answer
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Posts a message through a slash command's `response_url` (valid 30
    /// minutes, 5 uses: the caller counts), visible to the channel or, when
    /// `ephemeral`, only to the person who typed the command. Sent without
    /// the bot token, and only to Slack's hooks host or the configured API's
    /// host.
    pub async fn respond(
        &self,
        response_url: &str,
        response_type: ResponseType,
        text: &str,
        blocks: Option<&Value>,
    ) -> Result<(), ProviderError> {
        let url = self.slack_url(response_url, RESPONSE_URL_HOSTS, "response_url")?;
        let body = response_body(response_type, text, blocks);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        read_webhook(response).await
    }

    /// Shares `file` in its channel (and thread) in Slack's three steps and
    /// returns the file id. Only the last step shares anything: a failure
    /// before it leaves at most a private, unshared file.
    pub async fn upload_file(&self, file: &FileUpload) -> Result<String, ProviderError> {
        let length = file.content.len().to_string();
        let answer = self
            .call_form(
                "files.getUploadURLExternal",
                &[("filename", file.filename.as_str()), ("length", &length)],
                false,
            )
            .await?;
        let text = |field: &str| answer.get(field).and_then(Value::as_str).map(str::to_owned);
        let (Some(upload_url), Some(file_id)) = (text("upload_url"), text("file_id")) else {
            return Err(ProviderError::Unavailable {
                provider: PROVIDER,
                detail: "files.getUploadURLExternal answered ok without upload_url and file_id"
                    .into(),
                maybe_applied: false,
            });
        };
        let url = self.slack_url(&upload_url, UPLOAD_URL_HOSTS, "upload_url")?;
        let response = self
            .http
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(file.content.clone())
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            return Err(http::status_error(
                PROVIDER,
                status,
                &headers,
                &body,
                DEFAULT_LIMIT_WAIT,
            ));
        }
        let files = json!([{ "id": file_id, "title": file.title }]).to_string();
        let mut form = vec![
            ("files", files.as_str()),
            ("channel_id", file.channel.as_str()),
        ];
        if let Some(thread_ts) = &file.thread_ts {
            form.push(("thread_ts", thread_ts));
        }
        self.call_form("files.completeUploadExternal", &form, true)
            .await?;
        Ok(file_id)
    }

    /// `raw` parsed, if it points at one of Slack's `hosts` over https or at
    /// the configured API's own scheme, host and port; otherwise refused with
    /// `untrusted_slack_url` (nothing is sent).
    fn slack_url(&self, raw: &str, hosts: &[&str], what: &str) -> Result<url::Url, ProviderError> {
        let refused = |host: &str| {
            ProviderError::rejected(
                PROVIDER,
                "untrusted_slack_url",
                format!("the {what} is not on a Slack host ({host})"),
            )
        };
        let url = url::Url::parse(raw).map_err(|_| refused("not a URL"))?;
        let host = url.host_str().unwrap_or_default();
        let credentials = !url.username().is_empty() || url.password().is_some();
        let on_slack = url.scheme() == "https"
            && hosts.contains(&host)
            && url.port_or_known_default() == Some(443);
        let on_base = url.scheme() == self.base_url.scheme()
            && url.host_str() == self.base_url.host_str()
            && url.port_or_known_default() == self.base_url.port_or_known_default();
        if credentials || !(on_slack || on_base) {
            return Err(refused(host));
        }
        Ok(url)
    }

    /// A Web API method called with a form body (the upload methods document
    /// `application/x-www-form-urlencoded`; `files` is a JSON string there).
    async fn call_form(
        &self,
        method: &str,
        form: &[(&str, &str)],
        writes: bool,
    ) -> Result<Value, ProviderError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.current().expose_secret())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        read(response, writes).await
    }

    async fn call(&self, method: &str, body: Value, writes: bool) -> Result<Value, ProviderError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.current().expose_secret())
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send_traced(PROVIDER)
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        read(response, writes).await
    }
}

/// The JSON body of a `response_url` message: an ephemeral one is just its
/// type and text (and blocks, when it has them); an in-channel one is a new
/// message (never replacing the original) without link previews.
fn response_body(response_type: ResponseType, text: &str, blocks: Option<&Value>) -> Value {
    let mut body = json!({ "response_type": response_type.as_str(), "text": text });
    if response_type == ResponseType::InChannel {
        body["replace_original"] = json!(false);
        body["unfurl_links"] = json!(false);
        body["unfurl_media"] = json!(false);
    }
    if let Some(blocks) = blocks {
        body["blocks"] = blocks.clone();
    }
    body
}

/// Reads a `response_url` answer: unlike the Web API it speaks in statuses,
/// with `ok` (or `{"ok":true}`) on success and the error code as the body
/// (`expired_url`, `used_url`, `no_text`, …) or in `{ok:false, error}`.
async fn read_webhook(response: reqwest::Response) -> Result<(), ProviderError> {
    let http::Answer {
        status,
        headers,
        text,
    } = http::read(PROVIDER, response).await?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(http::status_error(
            PROVIDER,
            status,
            &headers,
            &text,
            DEFAULT_LIMIT_WAIT,
        ));
    }
    let trimmed = text.trim();
    let code = match serde_json::from_str::<Value>(trimmed) {
        Ok(answer) if answer.get("ok").and_then(Value::as_bool) == Some(true) => None,
        Ok(answer) => Some(
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error")
                .to_owned(),
        ),
        Err(_) if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("ok") => None,
        Err(_)
            if !trimmed.is_empty()
                && trimmed.len() <= 64
                && trimmed.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
        {
            Some(trimmed.to_owned())
        }
        Err(_) => (!status.is_success()).then(|| http::status_code_name(status)),
    };
    match code {
        None if status.is_success() => Ok(()),
        code => {
            let code = code.unwrap_or_else(|| http::status_code_name(status));
            Err(ProviderError::rejected(
                PROVIDER,
                &code,
                format!(
                    "the response_url answered HTTP {} ({code})",
                    status.as_u16()
                ),
            ))
        }
    }
}

/// Reads a Web API answer: HTTP errors first, then the `ok` field.
async fn read(response: reqwest::Response, writes: bool) -> Result<Value, ProviderError> {
    let http::Answer {
        status,
        headers,
        text,
    } = http::read(PROVIDER, response).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> SlackClient {
        SlackClient::new(
            &url::Url::parse(base).unwrap(),
            SecretString::from("xoxb-unit".to_owned()),
            HttpSettings::default(),
        )
    }

    #[test]
    fn an_ephemeral_response_is_its_type_and_text_and_an_answer_a_new_channel_message() {
        assert_eq!(
            response_body(ResponseType::Ephemeral, "On it: x", None),
            json!({"response_type": "ephemeral", "text": "On it: x"})
        );
        let blocks = json!([{"type": "section"}]);
        assert_eq!(
            response_body(ResponseType::InChannel, "Done", Some(&blocks)),
            json!({
                "response_type": "in_channel", "text": "Done", "replace_original": false,
                "unfurl_links": false, "unfurl_media": false, "blocks": blocks,
            })
        );
    }

    #[test]
    fn response_and_upload_urls_are_followed_only_on_slack_hosts_or_the_configured_api() {
        let slack = client("https://slack.com/api");
        let ok = |raw: &str, hosts: &[&str]| slack.slack_url(raw, hosts, "url").is_ok();
        assert!(ok(
            "https://hooks.slack.com/commands/T1/2/abc",
            RESPONSE_URL_HOSTS
        ));
        assert!(ok(
            "https://files.slack.com/upload/v1/abc",
            UPLOAD_URL_HOSTS
        ));
        for refused in [
            "https://files.slack.com/upload/v1/abc",
            "http://hooks.slack.com/commands/T1/2/abc",
            "https://hooks.slack.com:8443/commands/x",
            "https://user:pw@hooks.slack.com/commands/x",
            "https://hooks.slack.com.evil.example/commands/x",
            "https://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            let error = slack
                .slack_url(refused, RESPONSE_URL_HOSTS, "response_url")
                .unwrap_err();
            assert_eq!(error.code(), "untrusted_slack_url", "{refused}");
        }
        let fake = client("http://127.0.0.1:4567/api");
        assert!(
            fake.slack_url("http://127.0.0.1:4567/hooks/1", RESPONSE_URL_HOSTS, "url")
                .is_ok()
        );
        assert!(
            fake.slack_url("http://127.0.0.1:4568/hooks/1", RESPONSE_URL_HOSTS, "url")
                .is_err()
        );
    }
}
