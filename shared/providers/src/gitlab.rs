//! GitLab (docs/platforms.md, GitLab): the reply target ingest writes for a
//! note or label event and the dispatcher's GitLab channel reads, and
//! [`GitlabClient`], the REST v4 client that answers there: notes on issues
//! and merge requests (replies in a discussion when the trigger had one),
//! award emoji on the trigger note or the issue or merge request itself, and
//! the newest-first note listing used to find a marker after an uncertain
//! post. Authenticated with `PRIVATE-TOKEN` (a personal, project or group
//! access token); `GITLAB_API_URL` points self-managed instances elsewhere.

use crate::ProviderError;
use crate::http::{self, HttpSettings, snippet};
use crate::time::unix_now;
use contexten_config::SecretSource;
use contexten_envelope::{ChannelTarget, EnvelopeError, ReplyTarget};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// The channel's name: `source.kind`, `reply_to.kind`, metric labels.
pub const KIND: &str = "gitlab";

/// What a note belongs to; the path segment of GitLab's notes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noteable {
    Issue,
    MergeRequest,
}

impl Noteable {
    /// `issues` or `merge_requests`, as in `/projects/{id}/{segment}/{iid}/notes`.
    pub fn path_segment(self) -> &'static str {
        match self {
            Noteable::Issue => "issues",
            Noteable::MergeRequest => "merge_requests",
        }
    }
}

/// Where a GitLab answer goes: a note on an issue or merge request, in the
/// trigger's discussion when it had one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitlabTarget {
    /// The project's numeric id (`project.id`).
    pub project_id: u64,
    pub noteable: Noteable,
    /// The issue's or merge request's `iid` (per project).
    pub iid: u64,
    /// The trigger note's discussion: answers are replies in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discussion_id: Option<String>,
    /// The trigger note: the acknowledgement is an award emoji on it (on the
    /// issue or merge request itself when the trigger was a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_id: Option<u64>,
}

impl GitlabTarget {
    /// The envelope's reply target.
    pub fn reply_target(&self) -> ReplyTarget {
        ReplyTarget::Channel(
            ChannelTarget::new(KIND, self).expect("a GitlabTarget serializes to a JSON object"),
        )
    }

    /// The GitLab target in `reply_to`, `None` when it is another channel's.
    pub fn from_reply_target(reply_to: &ReplyTarget) -> Option<Result<Self, EnvelopeError>> {
        match reply_to {
            ReplyTarget::Channel(target) if target.kind() == KIND => Some(target.decode()),
            _ => None,
        }
    }
}

/// The provider label in errors and metrics (the channel's name).
pub const PROVIDER: &str = KIND;
/// GitLab's note size limit in characters (the Notes API's `body`: "limited
/// to 1,000,000 characters").
pub const NOTE_LIMIT: usize = 1_000_000;
/// The wait when a 429 names no delay.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Pages of 100 notes (newest first) read when looking for a marker.
const MAX_SEARCH_PAGES: u32 = 3;

/// A note as GitLab returns it (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Note {
    pub id: u64,
    #[serde(default)]
    pub body: String,
}

/// A GitLab REST v4 client for one token.
pub struct GitlabClient {
    http: reqwest::Client,
    base: String,
    token: SecretSource,
}

impl std::fmt::Debug for GitlabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitlabClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl GitlabClient {
    /// A client for the API at `base` (`GITLAB_API_URL`, e.g.
    /// `https://gitlab.com/api/v4`), posting with `token` (`GITLAB_TOKEN` or
    /// `GITLAB_TOKEN_FILE`, read per request so a rotated file is used by the
    /// next one).
    pub fn new(base: &url::Url, token: SecretSource, settings: HttpSettings) -> Self {
        GitlabClient {
            http: http::client(PROVIDER, settings),
            base: base.as_str().trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// `POST /projects/{id}/{issues|merge_requests}/{iid}/notes`, or, with a
    /// discussion, `POST .../discussions/{discussion_id}/notes` (a reply in
    /// that thread).
    pub async fn create_note(
        &self,
        target: &GitlabTarget,
        body: &str,
    ) -> Result<Note, ProviderError> {
        let path = match &target.discussion_id {
            Some(discussion) => format!(
                "{}/discussions/{}/notes",
                noteable_path(target),
                checked_discussion(discussion)?
            ),
            None => format!("{}/notes", noteable_path(target)),
        };
        let text = self
            .send(Method::POST, &path, Some(json!({ "body": body })))
            .await?;
        parse(&text)
    }

    /// Awards the emoji `name` on the trigger note (`POST .../notes/{note_id}/
    /// award_emoji`), or on the issue or merge request itself without one.
    /// Returns the award's id, or `None` when it had already been awarded
    /// (GitLab answers 404 "has already been taken", or 409): that counts as
    /// done.
    pub async fn award_emoji(
        &self,
        target: &GitlabTarget,
        name: &str,
    ) -> Result<Option<u64>, ProviderError> {
        #[derive(Deserialize)]
        struct Award {
            id: u64,
        }
        let path = match target.note_id {
            Some(note) => format!("{}/notes/{note}/award_emoji", noteable_path(target)),
            None => format!("{}/award_emoji", noteable_path(target)),
        };
        match self
            .send(Method::POST, &path, Some(json!({ "name": name })))
            .await
        {
            Ok(text) => parse::<Award>(&text).map(|award| Some(award.id)),
            Err(ProviderError::Rejected { code, detail, .. })
                if code == "conflict"
                    || (code == "not_found" && detail.contains("already been taken")) =>
            {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// The newest note on the issue or merge request whose body contains
    /// `marker` (`GET .../notes?sort=desc&order_by=created_at&per_page=100`,
    /// a few pages at most): whether an uncertain post landed.
    pub async fn find_note(
        &self,
        target: &GitlabTarget,
        marker: &str,
    ) -> Result<Option<Note>, ProviderError> {
        for page in 1..=MAX_SEARCH_PAGES {
            let path = format!(
                "{}/notes?sort=desc&order_by=created_at&per_page=100&page={page}",
                noteable_path(target)
            );
            let text = self.send(Method::GET, &path, None).await?;
            let notes: Vec<Note> = parse(&text)?;
            let full = notes.len() == 100;
            if let Some(hit) = notes.into_iter().find(|n| n.body.contains(marker)) {
                return Ok(Some(hit));
            }
            if !full {
                break;
            }
        }
        Ok(None)
    }

    /// Sends one authenticated request and returns the body of a 2xx answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, ProviderError> {
        let token = self.token.current();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("private-token", token.expose_secret().trim());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let http::Answer {
            status,
            headers,
            text,
        } = http::exchange(PROVIDER, request).await?;
        if status.is_success() {
            return Ok(text);
        }
        Err(classify(status, &headers, &text))
    }
}

/// `/projects/{id}/{issues|merge_requests}/{iid}`.
fn noteable_path(target: &GitlabTarget) -> String {
    format!(
        "/projects/{}/{}/{}",
        target.project_id,
        target.noteable.path_segment(),
        target.iid
    )
}

/// A discussion id goes into the path: GitLab's are hex digests; anything
/// else is refused before a request is built from it.
fn checked_discussion(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(ProviderError::rejected(
            PROVIDER,
            "invalid_discussion_id",
            "a discussion id is a hex digest",
        ))
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| ProviderError::Unavailable {
        provider: PROVIDER,
        detail: format!("unexpected answer ({e}): {}", snippet(text)),
        maybe_applied: true,
    })
}

/// GitLab's reading of a failed status: 429 waits for `Retry-After`, else
/// until `RateLimit-Reset` (Unix seconds); 401/403/404 and other 4xx are
/// permanent (their snake_case status name is the code); 5xx are retryable
/// (a write may have been applied).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> ProviderError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::RateLimited {
            provider: PROVIDER,
            retry_after: limit_wait(headers, unix_now()),
            detail: format!("HTTP 429: {}", snippet(body)),
        };
    }
    http::status_error(PROVIDER, status, headers, body, DEFAULT_LIMIT_WAIT)
}

/// `Retry-After` (seconds), else `RateLimit-Reset` (Unix seconds), else a
/// minute.
fn limit_wait(headers: &HeaderMap, now_unix: u64) -> Duration {
    if let Some(wait) = http::retry_after_from(headers, now_unix) {
        return wait;
    }
    headers
        .get("ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|reset| Duration::from_secs(reset.saturating_sub(now_unix).max(1)))
        .unwrap_or(DEFAULT_LIMIT_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_round_trips_through_the_envelope_form() {
        let target = GitlabTarget {
            project_id: 15,
            noteable: Noteable::MergeRequest,
            iid: 3,
            discussion_id: Some("6a9c1750b37d513a43987b574953fceb50b03ce7".into()),
            note_id: Some(1244),
        };
        let reply_to = target.reply_target();
        let json = serde_json::to_value(&reply_to).unwrap();
        assert_eq!(json["kind"], "gitlab");
        assert_eq!(json["noteable"], "merge_request");
        let back: ReplyTarget = serde_json::from_value(json).unwrap();
        assert_eq!(
            GitlabTarget::from_reply_target(&back).unwrap().unwrap(),
            target
        );
        assert!(GitlabTarget::from_reply_target(&ReplyTarget::None).is_none());
    }

    #[test]
    fn a_429_waits_for_retry_after_then_the_reset_time() {
        use reqwest::header::HeaderValue;
        let mut headers = HeaderMap::new();
        assert_eq!(limit_wait(&headers, 1000), DEFAULT_LIMIT_WAIT);
        headers.insert("ratelimit-reset", HeaderValue::from_static("1030"));
        assert_eq!(limit_wait(&headers, 1000), Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(limit_wait(&headers, 1000), Duration::from_secs(7));
    }

    #[test]
    fn only_hex_discussion_ids_reach_a_path() {
        assert!(checked_discussion("6a9c1750b37d513a43987b574953fceb50b03ce7").is_ok());
        for bad in ["", "../../users", "a/b", "x?y=1"] {
            let err = checked_discussion(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_discussion_id");
        }
    }
}
