//! `Fleet`: the five binaries on a unique prefix with every provider pointed at
//! the fakes, plus the signing helpers a test needs to drive it from outside.

use crate::fakes::Fakes;
use crate::process::{Service, free_port};
use base64::Engine as _;
use contexten_testkit::TestPrefix;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Fake credentials, built by concatenation so no fixture holds a literal one.
pub fn github_secret() -> String {
    ["fleet-gh-", "webhook-", "secret"].concat()
}
pub fn slack_secret() -> String {
    ["fleet-slack-", "signing-", "secret"].concat()
}
pub fn linear_secret() -> String {
    ["fleet-linear-", "webhook-", "secret"].concat()
}
/// GitLab's webhook secret token (`X-Gitlab-Token`).
pub fn gitlab_secret() -> String {
    ["fleet-gitlab-", "webhook-", "token"].concat()
}
pub fn api_token() -> String {
    ["ctx_fleet_", "token_", "0123456789abcdef"].concat()
}
/// The raw bytes behind the callback signing secret.
pub fn callback_key() -> Vec<u8> {
    ["fleet-callback-", "key-", "0123456789"]
        .concat()
        .into_bytes()
}
pub const BOT_LOGIN: &str = "contexten-bot";
pub const LINEAR_BOT_ID: &str = "9d1b6a61-0000-4000-8000-00000000b070";

/// How long a whole flow may take end to end.
pub const FLOW_WITHIN: Duration = Duration::from_secs(60);

/// The machine's broker (or `AMQP_URL`): what a fleet uses unless its
/// options name another.
pub use contexten_testkit::{machine_amqp_url as amqp_url, machine_redis_url as redis_url};

/// Options of one fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// Extra variables for every service (after the defaults).
    pub extra: Vec<(String, String)>,
    /// Replicas per worker type (default 1).
    pub replicas: usize,
    /// The broker the fleet uses (default [`amqp_url`]): a test that breaks its
    /// broker passes its own node's (contexten-testkit's `RabbitNode`).
    pub amqp_url: Option<String>,
    /// The Redis the fleet uses (default [`redis_url`]).
    pub redis_url: Option<String>,
}

pub struct Fleet {
    pub prefix: String,
    /// The broker and Redis this fleet talks to.
    pub amqp_url: String,
    pub redis_url: String,
    pub services: Vec<Service>,
    pub fakes: Fakes,
    pub dir: tempfile::TempDir,
    /// Talks to ingest from outside (also usable without the fleet).
    pub client: FleetClient,
    /// Removes the prefix's queues, exchanges and Redis keys when the fleet
    /// drops (after its processes), even when a test panics.
    _cleanup: TestPrefix,
}

/// What a provider or API user sees of the fleet: ingest's URL.
#[derive(Clone)]
pub struct FleetClient {
    pub ingest_url: String,
    pub http: reqwest::Client,
    /// The fake callback receiver's base URL.
    pub callback_uri: String,
}

impl std::ops::Deref for Fleet {
    type Target = FleetClient;
    fn deref(&self) -> &FleetClient {
        &self.client
    }
}

const WORKERS: [&str; 4] = [
    "context-worker",
    "generator-worker",
    "agent-worker",
    "dispatcher",
];

impl Fleet {
    pub async fn start(options: FleetOptions) -> anyhow::Result<Self> {
        let fakes = Fakes::start().await;
        let cleanup = TestPrefix::new();
        let prefix = cleanup.to_string();
        let dir = tempfile::tempdir()?;
        let ingest_port = free_port();
        let token_hash = hex::encode(Sha256::digest(api_token().as_bytes()));
        let callback_secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(callback_key())
        );
        let amqp_url = options.amqp_url.clone().unwrap_or_else(amqp_url);
        let redis_url = options.redis_url.clone().unwrap_or_else(redis_url);
        {
            let (amqp, redis, prefix) = (amqp_url.clone(), redis_url.clone(), prefix.clone());
            cleanup.on_drop(move || async move {
                crate::cleanup::remove_prefix_on(&amqp, &redis, &prefix).await;
            });
        }
        let common: Vec<(&str, String)> = vec![
            ("AMQP_URL", amqp_url.clone()),
            ("REDIS_URL", redis_url.clone()),
            ("CONTEXTEN_PREFIX", prefix.clone()),
            ("RETRY_TIERS_MS", "200,1000,3000".into()),
            ("MAX_ATTEMPTS", "8".into()),
            ("SHUTDOWN_TIMEOUT_SECS", "5".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
            ("CONTEXTEN_ALLOW_LOCAL_REPOS", "1".into()),
            // ingest
            ("INGEST_ADDR", format!("127.0.0.1:{ingest_port}")),
            ("GITHUB_WEBHOOK_SECRET", github_secret()),
            ("SLACK_SIGNING_SECRET", slack_secret()),
            ("LINEAR_WEBHOOK_SECRET", linear_secret()),
            ("GITLAB_WEBHOOK_SECRET", gitlab_secret()),
            ("CONTEXTEN_BOT_LOGIN", BOT_LOGIN.into()),
            // The flows and the fault test send many tasks as one person.
            ("INGEST_REQUESTER_LIMIT", "100000".into()),
            ("LINEAR_BOT_USER_ID", LINEAR_BOT_ID.into()),
            (
                "CONTEXTEN_API_TOKENS",
                format!("fleet:{token_hash}:submit+read"),
            ),
            // context
            (
                "CONTEXT_CACHE_DIR",
                dir.path().join("context-cache").display().to_string(),
            ),
            // generator
            ("LLM_BASE_URL", format!("{}/v1", fakes.llm.uri())),
            ("LLM_API_KEY", ["sk-fleet-", "fake"].concat()),
            ("LLM_MODEL", "gpt-4.1".into()),
            ("LLM_MAX_RETRIES", "1".into()),
            ("LLM_RETRY_BASE_MS", "50".into()),
            ("LLM_MAX_INLINE_WAIT_SECS", "1".into()),
            ("LLM_BREAKER_FAILURES", "50".into()),
            (
                "GENERATOR_CACHE_DIR",
                dir.path().join("generator-cache").display().to_string(),
            ),
            (
                "GENERATOR_REPO_CACHE_DIR",
                dir.path().join("repos").display().to_string(),
            ),
            // agent
            ("CODEGEN_API_URL", fakes.codegen.uri()),
            ("CODEGEN_ORG_ID", "7".into()),
            ("CODEGEN_API_TOKEN", ["cg-fleet-", "token"].concat()),
            ("CODEGEN_CREATE_LIMIT", "1000".into()),
            ("CODEGEN_REQUEST_LIMIT", "5000".into()),
            ("CODEGEN_BREAKER_FAILURES", "50".into()),
            ("CODEGEN_BREAKER_OPEN_MS", "1000".into()),
            ("AGENT_POLL_INITIAL_MS", "200".into()),
            ("AGENT_POLL_MAX_MS", "1000".into()),
            // The fault test's agent tasks all come from one GitHub user.
            ("AGENT_MAX_RUNS_PER_REQUESTER", "100".into()),
            // The fake GitHub is an on-premises git server too (see Fakes::serve_git).
            ("CONTEXTEN_GIT_SERVERS", fakes.github.uri()),
            // dispatcher
            ("GITHUB_API_URL", fakes.github.uri()),
            ("GITHUB_TOKEN", ["ghp_", "fleetfake"].concat()),
            ("LINEAR_API_URL", format!("{}/graphql", fakes.linear.uri())),
            ("LINEAR_API_KEY", ["lin_api_", "fleetfake"].concat()),
            ("SLACK_API_URL", format!("{}/api", fakes.slack.uri())),
            ("SLACK_BOT_TOKEN", ["xoxb-", "fleet-fake"].concat()),
            (
                "GITLAB_API_URL",
                format!("{}{}", fakes.gitlab.uri(), crate::fakes::gitlab::API),
            ),
            ("GITLAB_TOKEN", crate::fakes::gitlab::token()),
            ("CALLBACK_SIGNING_SECRET", callback_secret),
            ("GITHUB_WRITES_PER_MINUTE", "10000".into()),
            ("GITHUB_WRITES_PER_HOUR", "100000".into()),
            ("SLACK_CHANNEL_MESSAGES_PER_SECOND", "100".into()),
        ];
        let mut env: BTreeMap<String, String> =
            common.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in &options.extra {
            env.insert(k.clone(), v.clone());
        }
        let mut services = Vec::new();
        services.push(Service::new(
            "ingest",
            format!("127.0.0.1:{ingest_port}"),
            env.clone(),
            dir.path(),
        ));
        for worker in WORKERS {
            for replica in 0..options.replicas.max(1) {
                let health = format!("127.0.0.1:{}", free_port());
                let mut worker_env = env.clone();
                worker_env.insert("HEALTH_ADDR".into(), health.clone());
                let log_name = if replica == 0 {
                    worker
                } else {
                    leak(format!("{worker}-{replica}"))
                };
                services.push(Service::new_named(
                    worker,
                    log_name,
                    health,
                    worker_env,
                    dir.path(),
                ));
            }
        }
        // Through contexten-tls: reqwest has no crypto provider of its own.
        let http = contexten_tls::http(reqwest::Client::builder())
            .timeout(Duration::from_secs(30))
            .build()?;
        for service in &mut services {
            service.start()?;
        }
        for service in &services {
            service.wait_ready(&http).await?;
        }
        let client = FleetClient {
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            http,
            callback_uri: fakes.callback.uri(),
        };
        Ok(Fleet {
            prefix,
            amqp_url,
            redis_url,
            services,
            fakes,
            dir,
            client,
            _cleanup: cleanup,
        })
    }

    /// Stops every service gracefully; the prefix is removed as the fleet
    /// drops.
    pub async fn stop(mut self) {
        for service in &mut self.services {
            let _ = service.terminate().await;
        }
    }

    /// Logs of every service, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.services
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.log_name, s.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The service named `log_name` (`dispatcher`, `generator-worker-1`, …).
    pub fn service(&mut self, log_name: &str) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.log_name == log_name)
            .expect("a service of that name")
    }
}

impl FleetClient {
    /// Posts a signed GitHub webhook.
    pub async fn github_webhook(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let body = serde_json::to_vec(payload).expect("json");
        let signature = format!("sha256={}", hmac_hex(github_secret().as_bytes(), &body));
        self.http
            .post(format!("{}/webhooks/github", self.ingest_url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("ingest answers")
    }

    /// Posts a signed Slack Events API request.
    pub async fn slack_event(&self, payload: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(payload).expect("json");
        let timestamp = unix_now().to_string();
        let base = [b"v0:", timestamp.as_bytes(), b":", &body[..]].concat();
        let signature = format!("v0={}", hmac_hex(slack_secret().as_bytes(), &base));
        self.http
            .post(format!("{}/webhooks/slack", self.ingest_url))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", timestamp)
            .header("x-slack-signature", signature)
            .body(body)
            .send()
            .await
            .expect("ingest answers")
    }

    /// Posts a signed Linear webhook (`webhookTimestamp` set to now).
    pub async fn linear_webhook(&self, delivery: &str, mut payload: Value) -> reqwest::Response {
        payload["webhookTimestamp"] = Value::from(unix_now() * 1000);
        let body = serde_json::to_vec(&payload).expect("json");
        self.http
            .post(format!("{}/webhooks/linear", self.ingest_url))
            .header("content-type", "application/json")
            .header("linear-delivery", delivery)
            .header("linear-event", payload["type"].as_str().unwrap_or("Issue"))
            .header(
                "linear-signature",
                hmac_hex(linear_secret().as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .expect("ingest answers")
    }

    /// Posts a GitLab webhook with `token` in `X-Gitlab-Token` (GitLab sends
    /// the secret verbatim; there is no signature) and `uuid` in
    /// `X-Gitlab-Event-UUID`.
    pub async fn gitlab_webhook_with(
        &self,
        event: &str,
        uuid: &str,
        token: &str,
        payload: &Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/webhooks/gitlab", self.ingest_url))
            .header("content-type", "application/json")
            .header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", uuid)
            .header("x-gitlab-token", token)
            .body(serde_json::to_vec(payload).expect("json"))
            .send()
            .await
            .expect("ingest answers")
    }

    /// [`FleetClient::gitlab_webhook_with`] the fleet's secret.
    pub async fn gitlab_webhook(
        &self,
        event: &str,
        uuid: &str,
        payload: &Value,
    ) -> reqwest::Response {
        self.gitlab_webhook_with(event, uuid, &gitlab_secret(), payload)
            .await
    }

    /// Submits a task through `/v1/tasks`.
    pub async fn submit(&self, body: &Value, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/tasks", self.ingest_url))
            .bearer_auth(api_token())
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("ingest answers")
    }

    /// Reads `/v1/tasks/{id}`.
    pub async fn task(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/tasks/{id}", self.ingest_url))
            .bearer_auth(api_token())
            .send()
            .await
            .expect("ingest answers")
            .json()
            .await
            .unwrap_or(Value::Null)
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a Standard Webhooks signature as a receiver would.
pub fn callback_signature_valid(
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(&callback_key()).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature_header
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Waits until `check` returns `Some`, polling; `None` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    contexten_testkit::poll(within, Duration::from_millis(100), check)
        .await
        .ok()
}
