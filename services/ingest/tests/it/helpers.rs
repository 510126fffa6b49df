//! `TestIngest`: an in-process ingest on port 0 with a unique prefix, reaching
//! RabbitMQ through a proxy the test can switch off, plus signing helpers,
//! queue peeking and cleanup.

use contexten_broker::{CancellationToken, topology};
use contexten_config::{Env, Secret};
use contexten_envelope::{Names, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::health::Readiness;
use contexten_trust::policy::PolicyStore;
use ingest::tokens::{Scope, TokenStore};
use ingest::verify::sign_hex;
use ingest::{AppState, IngestConfig};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
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

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct TestIngest {
    pub url: String,
    pub names: Names,
    pub state: Arc<AppState>,
    pub readiness: Readiness,
    pub proxy: SwitchProxy,
    pub http: reqwest::Client,
    connection: Connection,
    pub channel: Channel,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    tiers: Vec<Duration>,
    _policy_dir: tempfile::TempDir,
}

impl TestIngest {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
        let proxy = SwitchProxy::start("127.0.0.1:5672").await;
        let (gh, sl, li, gl) = (
            github_secret(),
            slack_secret(),
            linear_secret(),
            gitlab_secret(),
        );
        let redis = redis_url();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &proxy.url),
            ("REDIS_URL", &redis),
            ("CONTEXTEN_PREFIX", &prefix),
            ("RETRY_TIERS_MS", "200,1000"),
            ("GITHUB_WEBHOOK_SECRET", &gh),
            ("SLACK_SIGNING_SECRET", &sl),
            ("LINEAR_WEBHOOK_SECRET", &li),
            ("GITLAB_WEBHOOK_SECRET", &gl),
            ("CONTEXTEN_BOT_LOGIN", BOT_LOGIN),
            ("LINEAR_BOT_USER_ID", LINEAR_BOT),
            ("INGEST_RETRY_AFTER_SECS", "2"),
        ];
        // API tests name repositories of the fixtures' organisation; the
        // policy tests bring their own file.
        let policy_dir = tempfile::tempdir().unwrap();
        let policy_path = policy_dir.path().join("policy.toml");
        std::fs::write(
            &policy_path,
            "[[api]]\ntoken = \"*\"\nrepositories = [\"octo-org/*\"]\n\n[[slack]]\nteam = \"T0001\"\nrepositories = [\"octo-org/*\"]\n\n[[linear]]\norganization = \"0c1d2e3f-0000-4000-8000-000000000001\"\nrepositories = [\"octo-org/*\"]\n",
        )
        .unwrap();
        let policy_path = policy_path.display().to_string();
        pairs.push(("CONTEXTEN_POLICY_FILE", &policy_path));
        pairs.extend_from_slice(extra);
        let cfg = IngestConfig::from_env(&Env::from_pairs(pairs)).expect("test config");
        let tiers = cfg.broker.retry_tiers.clone();
        let tokens = TokenStore::from_tokens(&[
            ("submitter", &token("submit"), &[Scope::Submit]),
            ("reader", &token("read"), &[Scope::Read]),
            ("client", &token("both"), &[Scope::Submit, Scope::Read]),
            ("ops", &token("admin"), &[Scope::Admin]),
        ]);
        let policy = PolicyStore::load(cfg.policy_file.clone()).expect("policy");
        let state = Arc::new(AppState::new(cfg, tokens, policy).expect("state"));
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
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ on AMQP_URL (run `make services`)");
        let channel = connection.create_channel().await.unwrap();
        let names = state.names.clone();
        let ingest = TestIngest {
            url,
            names,
            state,
            readiness,
            proxy,
            // Through contexten-tls: reqwest has no crypto provider of its own.
            http: contexten_tls::http(reqwest::Client::builder())
                .build()
                .unwrap(),
            connection,
            channel,
            shutdown,
            server,
            tiers,
            _policy_dir: policy_dir,
        };
        ingest.wait_for_broker(true).await;
        ingest
    }

    /// Waits until ingest holds (or has lost) its publisher.
    pub async fn wait_for_broker(&self, up: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.state.publisher.read().await.is_some() != up {
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker never became {}",
                if up { "available" } else { "unavailable" }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                let env = TaskEnvelope::from_json(&message.delivery.data).expect("envelope");
                return Some((env, message.delivery.properties.clone()));
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        topology::declare(&self.channel, &self.names, &self.tiers)
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

    /// Stops ingest and removes the topology and every key under the prefix.
    pub async fn cleanup(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, self.server).await;
        let _ = topology::delete(&self.channel, &self.names, &self.tiers).await;
        let mut conn = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.names.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let _ = self.connection.close(200, "test done".into()).await;
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

/// A TCP proxy in front of RabbitMQ that can be switched off (existing links
/// cut, new connections refused) and on again: RabbitMQ "stopped" for one test.
pub struct SwitchProxy {
    pub url: String,
    down: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl SwitchProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (d, l, upstream) = (down.clone(), links.clone(), upstream.to_owned());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                l.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        SwitchProxy {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            down,
            links,
            accept,
        }
    }

    /// RabbitMQ "stops": links cut, new connections refused.
    pub fn stop(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// RabbitMQ is back.
    pub fn start_again(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for SwitchProxy {
    fn drop(&mut self) {
        self.stop();
        self.accept.abort();
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
