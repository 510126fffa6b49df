//! GitHub REST (docs/platforms.md §2.2): issue and pull-request comments, reactions
//! on the request comment, and the search for a comment carrying a marker.

mod app;

pub use app::{AppCredentials, AppKey, TOKEN_REFRESH_MARGIN};

use crate::ProviderError;
use crate::http::{self, HttpSettings, retry_after_from, snippet};
use crate::time::{rfc3339, unix_now};
use app::TokenCache;
use contexten_config::SecretSource;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// The provider label in errors and metrics.
pub const PROVIDER: &str = "github";
/// The wait when a secondary limit names no delay (GitHub: "wait at least one
/// minute before retrying").
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Pages of 100 comments read when looking for a marker.
const MAX_SEARCH_PAGES: u32 = 5;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum GithubAuth {
    /// A personal or installation token (`GITHUB_TOKEN` or `GITHUB_TOKEN_FILE`),
    /// read per request so a rotated file takes effect with the next one.
    Token(SecretSource),
    /// A GitHub App (`GITHUB_APP_ID` + `GITHUB_APP_PRIVATE_KEY`).
    App(AppCredentials),
}

/// A comment as GitHub returns it (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub body: String,
}

/// Repositories whose App installation is remembered, at most.
const MAX_KNOWN_INSTALLATIONS: usize = 4096;

/// A GitHub REST client for one token or one App.
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    auth: GithubAuth,
    /// Async mutex: one refresh at a time, concurrent callers wait for it.
    tokens: tokio::sync::Mutex<TokenCache>,
    installations: std::sync::Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl GithubClient {
    /// A client for the API at `base` (`GITHUB_API_URL`).
    pub fn new(base: &url::Url, auth: GithubAuth, settings: HttpSettings) -> Self {
        GithubClient {
            http: http::client(PROVIDER, settings),
            base: base.as_str().trim_end_matches('/').to_owned(),
            auth,
            tokens: tokio::sync::Mutex::default(),
            installations: std::sync::Mutex::default(),
        }
    }

    /// The name of the credential that posts to `repo` (`token` or
    /// `installation-<id>`): GitHub's limits count per credential, so the
    /// dispatcher keys its limiter on it.
    pub async fn credential_scope(&self, repo: &str) -> Result<String, ProviderError> {
        match &self.auth {
            GithubAuth::Token(_) => Ok("token".to_owned()),
            GithubAuth::App(app) => Ok(format!(
                "installation-{}",
                self.installation_for(app, repo).await?
            )),
        }
    }

    /// `POST /repos/{repo}/issues/{number}/comments`.
    pub async fn create_comment(
        &self,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<Comment, ProviderError> {
        let path = format!("/repos/{}/issues/{number}/comments", checked_repo(repo)?);
        let text = self
            .send(repo, Method::POST, &path, Some(json!({ "body": body })))
            .await?;
        parse(&text)
    }

    /// `POST /repos/{repo}/issues/comments/{id}/reactions`; an existing reaction
    /// (GitHub answers 200 instead of 201) counts as done.
    pub async fn add_reaction(
        &self,
        repo: &str,
        comment_id: u64,
        content: &str,
    ) -> Result<u64, ProviderError> {
        #[derive(Deserialize)]
        struct Reaction {
            id: u64,
        }
        let path = format!(
            "/repos/{}/issues/comments/{comment_id}/reactions",
            checked_repo(repo)?
        );
        let text = self
            .send(
                repo,
                Method::POST,
                &path,
                Some(json!({ "content": content })),
            )
            .await?;
        parse::<Reaction>(&text).map(|r| r.id)
    }

    /// The newest comment on the issue, updated since `since_unix`, whose body
    /// contains `marker` (used to find out whether an uncertain post landed).
    pub async fn find_comment(
        &self,
        repo: &str,
        number: u64,
        marker: &str,
        since_unix: u64,
    ) -> Result<Option<Comment>, ProviderError> {
        let repo_path = checked_repo(repo)?;
        let mut found = None;
        for page in 1..=MAX_SEARCH_PAGES {
            let path = format!(
                "/repos/{repo_path}/issues/{number}/comments?since={}&per_page=100&page={page}",
                rfc3339(since_unix)
            );
            let text = self.send(repo, Method::GET, &path, None).await?;
            let comments: Vec<Comment> = parse(&text)?;
            let full = comments.len() == 100;
            if let Some(hit) = comments.into_iter().rev().find(|c| c.body.contains(marker)) {
                found = Some(hit);
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }

    /// Sends one authenticated request and returns the body of a 2xx answer.
    async fn send(
        &self,
        repo: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, ProviderError> {
        let (token, installation) = self.token_for(repo).await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token.expose_secret())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
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
        if status == StatusCode::UNAUTHORIZED
            && let Some(installation) = installation
        {
            // An installation token can be revoked before it expires: forget it so
            // the retry exchanges a fresh one instead of dead-lettering the reply.
            self.tokens.lock().await.forget(installation);
            return Err(ProviderError::Unavailable {
                provider: PROVIDER,
                detail: "the installation token was refused; a new one will be fetched".into(),
                maybe_applied: false,
            });
        }
        Err(classify(status, &headers, &text))
    }

    /// The token to use for `repo`, and its installation when it is an App's.
    async fn token_for(&self, repo: &str) -> Result<(SecretString, Option<u64>), ProviderError> {
        let app = match &self.auth {
            GithubAuth::Token(token) => return Ok((token.current(), None)),
            GithubAuth::App(app) => app,
        };
        let installation = self.installation_for(app, repo).await?;
        let mut cache = self.tokens.lock().await;
        if let Some(token) = cache.get(installation) {
            return Ok((token, Some(installation)));
        }
        let (token, expires_at) = self.exchange(app, installation).await?;
        cache.put(installation, token.clone(), &expires_at);
        tracing::info!(installation, "installation token refreshed");
        Ok((token, Some(installation)))
    }

    /// `POST /app/installations/{id}/access_tokens` with the App JWT.
    async fn exchange(
        &self,
        app: &AppCredentials,
        installation: u64,
    ) -> Result<(SecretString, String), ProviderError> {
        #[derive(Deserialize)]
        struct AccessToken {
            token: String,
            #[serde(default)]
            expires_at: String,
        }
        let path = format!("/app/installations/{installation}/access_tokens");
        let text = self.app_request(app, Method::POST, &path).await?;
        let token: AccessToken = parse(&text)?;
        Ok((SecretString::from(token.token), token.expires_at))
    }

    /// The installation of the App on `repo` (configured, cached, or looked up
    /// with `GET /repos/{repo}/installation`).
    async fn installation_for(
        &self,
        app: &AppCredentials,
        repo: &str,
    ) -> Result<u64, ProviderError> {
        if let Some(id) = app.installation_id() {
            return Ok(id);
        }
        let known = self
            .installations
            .lock()
            .ok()
            .and_then(|map| map.get(repo).copied());
        if let Some(id) = known {
            return Ok(id);
        }
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        let path = format!("/repos/{}/installation", checked_repo(repo)?);
        let text = self.app_request(app, Method::GET, &path).await?;
        let id = parse::<Installation>(&text)?.id;
        if let Ok(mut map) = self.installations.lock() {
            // Bounded: forgetting costs one lookup per repository, never a wrong id.
            if map.len() >= MAX_KNOWN_INSTALLATIONS {
                map.clear();
            }
            map.insert(repo.to_owned(), id);
        }
        Ok(id)
    }

    /// A request authenticated as the App itself (JWT).
    async fn app_request(
        &self,
        app: &AppCredentials,
        method: Method,
        path: &str,
    ) -> Result<String, ProviderError> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(app.jwt()?)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let http::Answer {
            status,
            headers,
            text,
        } = http::exchange(PROVIDER, request).await?;
        if status.is_success() {
            return Ok(text);
        }
        // Nothing was written by these calls, so a 5xx is plainly retryable.
        Err(match classify(status, &headers, &text) {
            ProviderError::Unavailable { detail, .. } => ProviderError::Unavailable {
                provider: PROVIDER,
                detail,
                maybe_applied: false,
            },
            other => other,
        })
    }
}

/// GitHub's reading of a failed status: 429, and 403 with `retry-after`,
/// `x-ratelimit-remaining: 0` or a "secondary rate limit" message, are limits;
/// other 4xx are permanent; 5xx are retryable.
pub fn classify(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> ProviderError {
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after_from(headers, unix_now());
        let says_limit = body.to_ascii_lowercase().contains("rate limit");
        if status == StatusCode::TOO_MANY_REQUESTS || wait.is_some() || says_limit {
            return ProviderError::RateLimited {
                provider: PROVIDER,
                retry_after: wait.unwrap_or(DEFAULT_LIMIT_WAIT),
                detail: format!("HTTP {}: {}", status.as_u16(), snippet(body)),
            };
        }
    }
    http::status_error(PROVIDER, status, headers, body, DEFAULT_LIMIT_WAIT)
}

/// `owner/name` with only the characters GitHub allows, so a target can never
/// reach another API path.
fn checked_repo(repo: &str) -> Result<&str, ProviderError> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(repo),
        _ => Err(ProviderError::rejected(
            PROVIDER,
            "invalid_target",
            format!("{repo:?} is not an owner/name repository"),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| ProviderError::Unavailable {
        provider: PROVIDER,
        detail: format!("unexpected answer ({e}): {}", snippet(text)),
        maybe_applied: true,
    })
}
