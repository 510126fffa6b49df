//! `ingest redeliver-failed --since 1h`: GitHub does not retry a failed webhook,
//! so this lists the hook's recent deliveries, picks those that failed and were
//! not delivered since, and asks GitHub to redeliver each (docs/platforms.md §2.1).
//!
//! Hooks: the GitHub App's hook (`GET /app/hook/deliveries`, authenticated with
//! an App JWT from `GITHUB_APP_ID` + `GITHUB_APP_PRIVATE_KEY`), or a repository
//! hook (`GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries` with
//! `GITHUB_TOKEN`). Redelivery is `POST …/deliveries/{id}/attempts`.

use contexten_config::{ExposeSecret, Secret};
use contexten_envelope::time::parse_rfc3339;
use contexten_providers::ProviderError;
use contexten_providers::github::AppKey;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Deliveries asked for per page (GitHub's maximum).
const PER_PAGE: u32 = 100;
/// The longest `Retry-After` the command waits out before giving up.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("github request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("github answered {status} for {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    #[error("GITHUB_APP_PRIVATE_KEY: {0}")]
    Key(String),
    #[error("invalid --since {0:?}: expected a number with s, m, h or d (e.g. 1h)")]
    Since(String),
}

/// Which hook's deliveries to read.
#[derive(Debug, Clone)]
pub enum Hook {
    /// The GitHub App's own hook (JWT).
    App { jwt: Secret },
    /// A repository hook (`owner/repo`, hook id) with a token.
    Repo {
        repo: String,
        hook_id: u64,
        token: Secret,
    },
}

/// One entry of the deliveries list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub guid: String,
    pub delivered_at: String,
    #[serde(default)]
    pub redelivery: bool,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
}

impl Delivery {
    fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Deliveries listed within the window.
    pub listed: usize,
    /// GUIDs that failed and were never delivered since, with the attempt used.
    pub failed: BTreeMap<String, u64>,
    /// GUIDs GitHub accepted to redeliver.
    pub redelivered: Vec<String>,
}

/// A small GitHub client for the hook deliveries API.
pub struct HookClient {
    http: reqwest::Client,
    base: String,
    hook: Hook,
}

impl HookClient {
    /// A client on `base` (`GITHUB_API_URL`).
    pub fn new(base: &str, hook: Hook) -> Result<Self, RedeliverError> {
        // The fleet's client (contexten-tls); the connect may take the whole 30 s.
        let timeout = Duration::from_secs(30);
        let http = contexten_tls::http_client(contexten_tls::HttpTimeouts {
            request: timeout,
            connect: timeout,
        })
        .build()?;
        Ok(HookClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            hook,
        })
    }

    fn deliveries_url(&self) -> String {
        match &self.hook {
            Hook::App { .. } => format!("{}/app/hook/deliveries", self.base),
            Hook::Repo { repo, hook_id, .. } => {
                format!("{}/repos/{repo}/hooks/{hook_id}/deliveries", self.base)
            }
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let secret = match &self.hook {
            Hook::App { jwt } => jwt,
            Hook::Repo { token, .. } => token,
        };
        self.http
            .request(method, url)
            .bearer_auth(secret.expose_secret())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    /// Sends a request, waiting out one `Retry-After` (429 or secondary 403).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::Response, RedeliverError> {
        for attempt in 0..2 {
            let response = self.request(method.clone(), url).send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            match (status, retry_after) {
                (429 | 403, Some(wait)) if attempt == 0 && wait <= MAX_RETRY_WAIT => {
                    tracing::warn!(
                        status,
                        wait_s = wait.as_secs(),
                        "github rate limit; waiting"
                    );
                    tokio::time::sleep(wait).await;
                }
                (200..=299, _) => return Ok(response),
                _ => {
                    return Err(RedeliverError::Status {
                        status,
                        what: format!("{method} {url}"),
                        body: response.text().await.unwrap_or_default(),
                    });
                }
            }
        }
        Err(RedeliverError::Status {
            status: 429,
            what: format!("{method} {url}"),
            body: "still rate limited".into(),
        })
    }

    /// Deliveries newer than `since_unix` (newest first), following pagination.
    pub async fn list_since(&self, since_unix: u64) -> Result<Vec<Delivery>, RedeliverError> {
        let mut url = format!("{}?per_page={PER_PAGE}", self.deliveries_url());
        let mut out = Vec::new();
        loop {
            let response = self.send(reqwest::Method::GET, &url).await?;
            let next = next_link(response.headers());
            let page: Vec<Delivery> = response.json().await?;
            let mut older = false;
            for d in page {
                if parse_rfc3339(&d.delivered_at).is_some_and(|t| t < since_unix) {
                    older = true;
                    continue;
                }
                out.push(d);
            }
            match next {
                Some(n) if !older => url = n,
                _ => return Ok(out),
            }
        }
    }

    /// Asks GitHub to deliver `delivery_id` again.
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), RedeliverError> {
        let url = format!("{}/{delivery_id}/attempts", self.deliveries_url());
        self.send(reqwest::Method::POST, &url).await.map(|_| ())
    }
}

/// Lists, picks and redelivers; `dry_run` only reports.
pub async fn run(
    client: &HookClient,
    since: Duration,
    now_unix: u64,
    dry_run: bool,
) -> Result<Report, RedeliverError> {
    let deliveries = client
        .list_since(now_unix.saturating_sub(since.as_secs()))
        .await?;
    let delivered: HashSet<&str> = deliveries
        .iter()
        .filter(|d| d.succeeded())
        .map(|d| d.guid.as_str())
        .collect();
    let mut report = Report {
        listed: deliveries.len(),
        ..Report::default()
    };
    // Newest first, so the first failure seen per GUID is its latest attempt.
    for d in deliveries.iter().filter(|d| !d.succeeded()) {
        if !delivered.contains(d.guid.as_str()) {
            report.failed.entry(d.guid.clone()).or_insert(d.id);
        }
    }
    if dry_run {
        return Ok(report);
    }
    for (guid, id) in &report.failed {
        client.redeliver(*id).await?;
        tracing::info!(%guid, delivery = id, "redelivery requested");
        report.redelivered.push(guid.clone());
    }
    Ok(report)
}

/// `--since` values: `90s`, `30m`, `1h`, `3d`.
pub fn parse_since(raw: &str) -> Result<Duration, RedeliverError> {
    let raw = raw.trim();
    let split = raw.len().saturating_sub(1);
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| RedeliverError::Since(raw.to_owned()))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(RedeliverError::Since(raw.to_owned())),
    };
    Ok(Duration::from_secs(secs))
}

fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// A GitHub App JWT (RS256, valid 9 minutes, issued a minute in the past for
/// clock drift) from the App id and its PEM private key (PKCS#1 or PKCS#8),
/// signed by the providers' App key (the fleet's one RS256 signer).
pub fn app_jwt(app_id: &str, pem: &str, now_unix: u64) -> Result<Secret, RedeliverError> {
    let key_error = |error: ProviderError| match error {
        ProviderError::Misconfigured { detail, .. } => RedeliverError::Key(detail),
        other => RedeliverError::Key(other.to_string()),
    };
    let key = AppKey::from_pem(&Secret::from(pem.to_owned())).map_err(key_error)?;
    key.jwt(app_id, now_unix)
        .map(Secret::from)
        .map_err(key_error)
}

/// The `redeliver-failed` subcommand.
pub mod cli {
    use super::{Hook, HookClient, app_jwt, parse_since};
    use crate::IngestConfig;
    use crate::failed;
    use anyhow::Context as _;
    use contexten_broker::Store;
    use contexten_config::{Env, ExposeSecret};
    use contexten_envelope::{Names, now_ms};

    /// Options of `ingest redeliver-failed`.
    #[derive(Debug, clap::Args)]
    pub struct Args {
        /// How far back to look (`30m`, `1h`, `3d`; GitHub keeps about 3 days).
        #[arg(long, default_value = "1h")]
        pub since: String,
        /// A repository hook instead of the App's hook: `owner/repo` (needs --hook-id and GITHUB_TOKEN).
        #[arg(long, requires = "hook_id")]
        pub repo: Option<String>,
        /// The repository hook's id.
        #[arg(long)]
        pub hook_id: Option<u64>,
        /// Only list what would be redelivered.
        #[arg(long)]
        pub dry_run: bool,
    }

    /// Runs the command and prints what it did.
    pub async fn run(cfg: &IngestConfig, env: &Env, args: Args) -> anyhow::Result<()> {
        let since = parse_since(&args.since)?;
        let base = env.url(
            "GITHUB_API_URL",
            "https://api.github.com",
            &["http", "https"],
        )?;
        let now = now_ms() / 1000;
        let hook = match (args.repo, args.hook_id) {
            (Some(repo), Some(hook_id)) => Hook::Repo {
                repo,
                hook_id,
                token: env.secret_value("GITHUB_TOKEN")?.context(
                    "GITHUB_TOKEN (or GITHUB_TOKEN_FILE) is required for a repository hook",
                )?,
            },
            _ => {
                let app_id = env
                    .raw("GITHUB_APP_ID")
                    .context("GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY are required for the App hook (or pass --repo and --hook-id)")?;
                let key = env
                    .secret_value("GITHUB_APP_PRIVATE_KEY")?
                    .context("GITHUB_APP_PRIVATE_KEY (or GITHUB_APP_PRIVATE_KEY_FILE) is required for the App hook")?;
                // The key may be given inline (PEM) or as a path to a mounted file.
                let pem = if key.expose_secret().contains("-----BEGIN") {
                    key.expose_secret().to_owned()
                } else {
                    std::fs::read_to_string(key.expose_secret())
                        .context("reading GITHUB_APP_PRIVATE_KEY as a file path")?
                };
                Hook::App {
                    jwt: app_jwt(app_id, &pem, now)?,
                }
            }
        };
        let store = Store::new(&cfg.redis, Names::new(cfg.broker.prefix.clone()))?;
        let since_ms = now_ms().saturating_sub(since.as_millis() as u64);
        let recorded = match failed::list(&store, &cfg.failed_deliveries_file, since_ms).await {
            Ok(recorded) => recorded,
            Err(error) => {
                eprintln!(
                    "warning: recorded refusals unreadable ({error}); using GitHub's list only"
                );
                Vec::new()
            }
        };
        println!(
            "{} deliveries were refused by ingest in the window",
            recorded.len()
        );
        let client = HookClient::new(base.as_str(), hook)?;
        let report = super::run(&client, since, now, args.dry_run).await?;
        println!(
            "{} deliveries listed, {} failed and never delivered since",
            report.listed,
            report.failed.len()
        );
        for (guid, id) in &report.failed {
            let done = report.redelivered.contains(guid);
            println!(
                "  {guid} (attempt {id}): {}",
                if done {
                    "redelivery requested"
                } else {
                    "would redeliver"
                }
            );
        }
        let cleared: Vec<_> = recorded
            .into_iter()
            .filter(|r| report.redelivered.contains(&r.guid))
            .collect();
        if let Err(error) = failed::forget(&store, &cfg.failed_deliveries_file, &cleared).await {
            eprintln!("warning: could not clear the redelivered records: {error}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_windows_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2019-06-03T00:57:16Z"), Some(1_559_523_436));
        assert_eq!(parse_since("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_since("3d").unwrap(), Duration::from_secs(259_200));
        assert!(parse_since("1w").is_err() && parse_since("h").is_err());
    }

    #[test]
    fn a_key_that_is_not_a_pem_rsa_key_says_so_without_echoing_it() {
        for pem in [
            "hunter2-not-a-key",
            "-----BEGIN RSA PRIVATE KEY-----\n!!\n-----END RSA PRIVATE KEY-----",
        ] {
            let error = app_jwt("12345", pem, 0).unwrap_err();
            assert!(matches!(error, RedeliverError::Key(_)), "{error:?}");
            let shown = error.to_string();
            assert!(shown.starts_with("GITHUB_APP_PRIVATE_KEY: "), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
