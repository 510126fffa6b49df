//! `TestIngest`: an in-process ingest on port 0 over the testkit's
//! `BrokerFixture` (a unique prefix whose topology and Redis keys are removed
//! on drop, even when a test panics), reaching RabbitMQ through a `TcpProxy`
//! the test can stop, plus signing helpers and queue peeking.

use contexten_broker::{CancellationToken, topology};
use contexten_config::{Env, ExposeSecret, Secret};
use contexten_envelope::{Names, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::health::Readiness;
use contexten_testkit::broker::BrokerFixture;
use contexten_testkit::{TcpProxy, eventually, machine_redis_url};
use contexten_trust::policy::PolicyStore;
use ingest::tokens::{Scope, TokenStore};
use ingest::verify::sign_hex;
use ingest::{AppState, IngestConfig};
use lapin::Channel;
use lapin::options::QueueDeleteOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a test waits to be sure nothing arrives.
pub const QUIET: Duration = Duration::from_millis(300);

/// Fake secrets, built by concatenation so no fixture holds a literal one.
pub fn github_secret() -> String {
    ["gh-test-", "secret-", "0001"].concat()
}
pub fn slack_secret() -> String {
    ["slack-test-", "signing-", "0002"].concat()
}
pub fn linear_secret() -> String {
    ["lin_wh_", "test_", "0003"].concat()
}
pub fn gitlab_secret() -> String {
    ["glwh-test-", "token-", "0004"].concat()
}
pub fn token(name: &str) -> String {
    ["ctx_tok_", name, "_0123456789abcdef"].concat()
}

pub const BOT_LOGIN: &str = "contexten-bot";
pub const LINEAR_BOT: &str = "5b0c2d33-0000-4000-8000-00000000b07";

/// The machine's Redis (`REDIS_URL`), where ingest keeps its records unless a
/// test points it elsewhere.
pub fn redis_url() -> String {
    machine_redis_url()
}

/// A policy file in a directory of its own (removed on drop).
pub struct PolicyFile {
    pub path: String,
    _dir: tempfile::TempDir,
}

impl PolicyFile {
    pub fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, toml).unwrap();
        PolicyFile {
            path: path.display().to_string(),
            _dir: dir,
        }
    }
}

/// Stops ingest's server and background tasks on drop; the fixture (a field
/// of [`TestIngest`]) then removes the topology and the prefix's keys.
pub struct TestIngest {
    pub url: String,
    pub names: Names,
    pub state: Arc<AppState>,
    pub readiness: Readiness,
    /// Between ingest and RabbitMQ: `stop` is RabbitMQ "stopped" for one test.
    pub proxy: TcpProxy,
    pub http: reqwest::Client,
    pub channel: Channel,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _policy: PolicyFile,
    pub broker: BrokerFixture,
}

impl Drop for TestIngest {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.server.abort();
    }
}

impl TestIngest {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        let broker = BrokerFixture::start(&[("RETRY_TIERS_MS", "200,1000")]).await;
        let proxy = TcpProxy::start("127.0.0.1:5672")
            .await
            .expect("a proxy in front of RabbitMQ");
        let proxy_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
        let (gh, sl, li, gl) = (
            github_secret(),
            slack_secret(),
            linear_secret(),
            gitlab_secret(),
        );
        let redis = redis_url();
        // API tests name repositories of the fixtures' organisation; the
        // policy tests bring their own file.
        let policy = PolicyFile::new(
            "[[api]]\ntoken = \"*\"\nrepositories = [\"octo-org/*\"]\n\n[[slack]]\nteam = \"T0001\"\nrepositories = [\"octo-org/*\"]\n\n[[linear]]\norganization = \"0c1d2e3f-0000-4000-8000-000000000001\"\nrepositories = [\"octo-org/*\"]\n",
        );
        let mut pairs: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &proxy_url),
            ("REDIS_URL", &redis),
            ("CONTEXTEN_PREFIX", broker.prefix.as_str()),
            ("RETRY_TIERS_MS", "200,1000"),
            ("GITHUB_WEBHOOK_SECRET", &gh),
            ("SLACK_SIGNING_SECRET", &sl),
            ("LINEAR_WEBHOOK_SECRET", &li),
            ("GITLAB_WEBHOOK_SECRET", &gl),
            ("CONTEXTEN_BOT_LOGIN", BOT_LOGIN),
            ("LINEAR_BOT_USER_ID", LINEAR_BOT),
            ("INGEST_RETRY_AFTER_SECS", "2"),
            ("CONTEXTEN_POLICY_FILE", &policy.path),
        ];
        pairs.extend_from_slice(extra);
        let cfg = IngestConfig::from_env(&Env::from_pairs(pairs)).expect("test config");
        // Wherever a test points records and caches, the prefix's keys go on drop.
        broker.prefix.clean_redis(cfg.redis.url.expose_secret());
        broker
            .prefix
            .clean_redis(cfg.redis.records_url.expose_secret());
        let tokens = TokenStore::from_tokens(&[
            ("submitter", &token("submit"), &[Scope::Submit]),
            ("reader", &token("read"), &[Scope::Read]),
            ("client", &token("both"), &[Scope::Submit, Scope::Read]),
            ("ops", &token("admin"), &[Scope::Admin]),
        ]);
        let policy_store = PolicyStore::load(cfg.policy_file.clone()).expect("policy");
        let state = Arc::new(AppState::new(cfg, tokens, policy_store).expect("state"));
        let readiness = ingest::ingest_readiness();
        let shutdown = CancellationToken::new();
        ingest::start_background(&state, &readiness, &shutdown, &shutdown);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = ingest::router(state.clone(), readiness.clone());
        let limits = ingest::server::ConnectionLimits::from(&state.cfg.limits);
        readiness.set(ingest::SERVING, true, "listening");
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            ingest::server::serve_bounded(listener, app, limits, stop).await;
        });
        let ingest = TestIngest {
            url,
            names: state.names.clone(),
            state,
            readiness,
            proxy,
            // Through contexten-tls: reqwest has no crypto provider of its own.
            http: contexten_tls::http(reqwest::Client::builder())
                .build()
                .unwrap(),
            channel: broker.channel.clone(),
            shutdown,
            server,
            _policy: policy,
            broker,
        };
        ingest.wait_for_broker(true).await;
        ingest
    }

    /// Waits until ingest holds (or has lost) its publisher.
    pub async fn wait_for_broker(&self, up: bool) {
        let what = if up {
            "the broker available"
        } else {
            "the broker unavailable"
        };
        eventually(WAIT, what, || async {
            self.state.publisher.read().await.is_some() == up
        })
        .await;
    }
    /// Posts `body` to `path` with `headers`.
    pub async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        Answer::from(request.send().await.expect("ingest answers")).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        Answer::from(request.send().await.expect("ingest answers")).await
    }

    /// A signed GitHub delivery.
    pub async fn github(&self, event: &str, delivery: &str, body: &serde_json::Value) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        self.post(
            "/webhooks/github",
            &github_headers(event, delivery, &body),
            body,
        )
        .await
    }

    /// A signed Slack request (JSON), timestamped now.
    pub async fn slack(&self, body: &serde_json::Value, extra: &[(&str, String)]) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        let mut headers = slack_headers(&body, now_ms() / 1000);
        headers.push(("content-type", "application/json".into()));
        headers.extend_from_slice(extra);
        self.post("/webhooks/slack", &headers, body).await
    }

    /// A signed Linear delivery.
    pub async fn linear(&self, body: &serde_json::Value, delivery: &str) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            (
                "linear-signature",
                sign_hex(&secret(&linear_secret()), &body),
            ),
            ("linear-delivery", delivery.to_owned()),
            ("linear-event", "Issue".to_owned()),
        ];
        self.post("/webhooks/linear", &headers, body).await
    }

    /// `POST /v1/tasks` as `bearer`.
    pub async fn api(&self, bearer: &str, body: &serde_json::Value, key: Option<&str>) -> Answer {
        let mut headers = vec![
            ("authorization", format!("Bearer {bearer}")),
            ("content-type", "application/json".to_owned()),
        ];
        if let Some(k) = key {
            headers.push(("idempotency-key", k.to_owned()));
        }
        self.post("/v1/tasks", &headers, serde_json::to_vec(body).unwrap())
            .await
    }

    /// Takes one envelope from a stage queue, waiting up to `WAIT`.
    pub async fn take(&self, stage: Stage) -> (TaskEnvelope, lapin::BasicProperties) {
        self.take_within(stage, WAIT)
            .await
            .unwrap_or_else(|| panic!("nothing arrived in {stage}"))
    }

    pub async fn take_within(
        &self,
        stage: Stage,
        wait: Duration,
    ) -> Option<(TaskEnvelope, lapin::BasicProperties)> {
        let queue = self.names.stage_queue(stage);
        let message = self.broker.take_within(queue.as_str(), wait).await?;
        let env = TaskEnvelope::from_json(&message.delivery.data).expect("envelope");
        Some((env, message.delivery.properties.clone()))
    }

    /// Asserts that no stage queue receives anything within `QUIET`.
    pub async fn assert_nothing_queued(&self) {
        tokio::time::sleep(QUIET).await;
        for stage in Stage::QUEUED {
            assert!(
                self.take_within(stage, Duration::ZERO).await.is_none(),
                "unexpected message in {stage}"
            );
        }
    }

    /// Takes the task from its first stage and the acknowledgement from dispatch.
    pub async fn take_task_and_ack(&self, first: Stage) -> (TaskEnvelope, TaskEnvelope) {
        let (task, task_props) = self.take(first).await;
        let (ack, ack_props) = self.take(Stage::Dispatch).await;
        assert_eq!(ack.task_id, task.task_id);
        assert_ne!(task_props.message_id(), ack_props.message_id());
        // The task is persisted; the "on it" acknowledgement needs not be.
        assert_eq!(task_props.delivery_mode(), &Some(2));
        assert_eq!(ack_props.delivery_mode(), &Some(1));
        (task, ack)
    }

    /// Deletes `stage`'s queue, so a mandatory publish to it comes back unroutable.
    pub async fn delete_queue(&self, stage: Stage) {
        self.channel
            .queue_delete(
                self.names.stage_queue(stage).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
    }

    /// Declares the topology again (after [`TestIngest::delete_queue`]).
    pub async fn redeclare_topology(&self) {
        topology::declare(
            &self.channel,
            &self.names,
            &self.broker.settings.retry_tiers,
        )
        .await
        .unwrap();
    }

    /// A Redis connection for assertions.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// The sum of a Prometheus metric's samples whose line contains `label`
/// (`""` for all), from this process's recorder.
pub fn metric_total(name: &str, label: &str) -> f64 {
    contexten_telemetry::render_metrics()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn secret(s: &str) -> Secret {
    Secret::from(s.to_owned())
}

pub fn github_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", event.into()),
        ("x-github-delivery", delivery.into()),
        ("x-github-hook-id", "4242".into()),
        ("user-agent", "GitHub-Hookshot/abc123".into()),
        (
            "x-hub-signature-256",
            format!("sha256={}", sign_hex(&secret(&github_secret()), body)),
        ),
    ]
}

pub fn slack_headers(body: &[u8], ts: u64) -> Vec<(&'static str, String)> {
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(body);
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        (
            "x-slack-signature",
            format!("v0={}", sign_hex(&secret(&slack_secret()), &base)),
        ),
    ]
}

/// A status, headers and JSON body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    /// The error code of a 4xx/5xx body (every one must carry one and a message).
    pub fn error(&self) -> &str {
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error body says why: {}",
            self.json
        );
        self.json["error"].as_str().unwrap_or("")
    }
}

/// Reads one field of a task's status record.
pub async fn status_field(ingest: &TestIngest, task: &TaskEnvelope, field: &str) -> Option<String> {
    let mut conn = ingest.redis().await;
    redis::cmd("HGET")
        .arg(ingest.names.status_key(task.task_id))
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}
