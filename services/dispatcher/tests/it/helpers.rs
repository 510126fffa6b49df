//! `TestDispatch`: fake GitHub, Linear, Slack, GitLab and callback servers (wiremock),
//! a unique prefix whose Redis keys are removed on drop (even when a test
//! panics), a `DispatchHandler` pointed at the fakes, and envelope builders.

use base64::Engine;
use contexten_broker::Store;
use contexten_config::{Env, ExposeSecret, RedisSettings, Secret};
use contexten_envelope::{
    CostLedger, Names, ReplyKind, ReplyTarget, Request, ResultKind, Source, SourceKind, Stage,
    StageTiming, TaskEnvelope, TaskId, TaskResult,
};
use contexten_providers::HttpSettings;
use contexten_providers::callback::WebhookSigner;
use contexten_providers::github::GithubAuth;
use contexten_providers::linear::LinearAuth;
use contexten_testkit::{TestPrefix, machine_redis_url};
use contexten_trust::outbound::OutboundGuard;
use dispatcher::DispatchHandler;
use dispatcher::config::{Limits, ProviderSettings, SlackCommandReply};
use std::time::Duration;
use wiremock::MockServer;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(15);
/// A fixed task id and clock, so formatted replies are stable.
pub const FIXED_TASK: &str = "0192f0c8-5f3a-7d2e-8a4b-1c2d3e4f5a6b";
pub const CREATED_AT_MS: u64 = 1_760_000_000_000;

/// Fake secrets, built by concatenation so no secret-looking literal exists.
pub fn github_token() -> String {
    ["ghp", "_", "testtoken"].concat()
}
pub fn linear_key() -> String {
    ["lin", "_api_", "testkey"].concat()
}
pub fn slack_token() -> String {
    ["xoxb", "-", "test-token"].concat()
}
pub fn gitlab_token() -> String {
    ["glpat", "-", "testtoken"].concat()
}
pub fn callback_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"callback test key, 32 bytes long")
    )
}

/// The machine's Redis (`REDIS_URL`).
pub fn redis_url() -> String {
    machine_redis_url()
}

pub struct TestDispatch {
    pub github: MockServer,
    pub linear: MockServer,
    pub slack: MockServer,
    pub gitlab: MockServer,
    pub receiver: MockServer,
    pub names: Names,
    pub store: Store,
    pub handler: DispatchHandler,
    /// Last, so it cleans up after everything else is dropped.
    pub prefix: TestPrefix,
}

impl TestDispatch {
    /// Every platform configured with test credentials.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`], with the settings adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut ProviderSettings)) -> Self {
        let redis_url = redis_url();
        let redis = RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", redis_url.as_str())]))
            .expect("redis settings");
        Self::start_on(redis, adjust).await
    }

    /// Like [`start_with`], with records and caches where `redis` says
    /// (`REDIS_RECORDS_URL`, `REDIS_URL`).
    pub async fn start_on(
        redis: RedisSettings,
        adjust: impl FnOnce(&mut ProviderSettings),
    ) -> Self {
        contexten_telemetry::init_for_tests();
        let (github, linear, slack, gitlab, receiver) = tokio::join!(
            MockServer::start(),
            MockServer::start(),
            MockServer::start(),
            MockServer::start(),
            MockServer::start()
        );
        let prefix = TestPrefix::new();
        prefix.clean_redis(redis.url.expose_secret());
        prefix.clean_redis(redis.records_url.expose_secret());
        let names = Names::new(prefix.as_str());
        let store = Store::new(&redis, names.clone()).expect("store");
        let mut settings = settings(&github, &linear, &slack);
        settings.gitlab_url = url::Url::parse(&format!("{}/api/v4", gitlab.uri())).unwrap();
        adjust(&mut settings);
        let handler = DispatchHandler::new(&settings, store.clone()).expect("handler");
        TestDispatch {
            github,
            linear,
            slack,
            gitlab,
            receiver,
            names,
            store,
            handler,
            prefix,
        }
    }
}

/// The outbound guard of `CONTEXTEN_OUTBOUND_ALLOW=<allow>` (nothing else set):
/// loopback is refused unless listed.
pub fn outbound(allow: &str) -> OutboundGuard {
    OutboundGuard::from_env(&Env::from_pairs([("CONTEXTEN_OUTBOUND_ALLOW", allow)]))
        .expect("allow-list")
}

/// Settings pointing every platform at the fakes, with roomy limits; callbacks
/// may reach 127.0.0.1 (where the fakes listen) by address.
pub fn settings(github: &MockServer, linear: &MockServer, slack: &MockServer) -> ProviderSettings {
    let url = |server: &MockServer, path: &str| {
        url::Url::parse(&format!("{}{path}", server.uri())).unwrap()
    };
    ProviderSettings {
        github: Some(GithubAuth::Token(Secret::from(github_token()).into())),
        linear: Some(LinearAuth::from_setting(&Secret::from(linear_key()))),
        slack: Some(Secret::from(slack_token()).into()),
        gitlab: Some(Secret::from(gitlab_token()).into()),
        callback: Some(WebhookSigner::new(&Secret::from(callback_secret())).unwrap()),
        outbound: outbound("127.0.0.1"),
        github_url: url(github, ""),
        linear_url: url(linear, "/graphql"),
        slack_url: url(slack, "/api"),
        // Nothing listens on the discard port; `TestDispatch` points it at its fake.
        gitlab_url: url::Url::parse("http://127.0.0.1:9/api/v4").unwrap(),
        http: HttpSettings {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        },
        slack_command_reply: SlackCommandReply::Channel,
        limits: Limits {
            github_per_minute: 80,
            github_per_hour: 500,
            slack_per_channel_per_second: 50,
            linear_per_hour: 2500,
            gitlab_per_minute: 300,
            max_wait: Duration::from_millis(500),
        },
    }
}

/// An envelope answering `reply_to`, with a code result, a cost and timings.
pub fn envelope(reply_to: ReplyTarget, kind: ReplyKind) -> TaskEnvelope {
    let source_kind = match &reply_to {
        ReplyTarget::Github { .. } => SourceKind::GITHUB,
        ReplyTarget::Linear { .. } => SourceKind::LINEAR,
        ReplyTarget::Slack { .. } => SourceKind::SLACK,
        _ => SourceKind::API,
    };
    let mut env = TaskEnvelope::new(
        Source {
            kind: source_kind,
            delivery_id: Some("delivery-1".into()),
            requested_by: Some("octocat".into()),
            reply_to,
            extra: Default::default(),
        },
        Request {
            text: "add a parse_duration function".into(),
            ..Request::default()
        },
    );
    env.created_at_ms = CREATED_AT_MS;
    env.reply = Some(kind);
    env.result = Some(TaskResult {
        kind: ResultKind::Code,
        produced_by: Stage::Generate,
        summary: "Added `parse_duration` to `src/time.rs`.".into(),
        text: Some("pub fn parse_duration(s: &str) -> Option<u64> {\n    s.strip_suffix('s')?.parse().ok()\n}\n".into()),
        language: Some("rust".into()),
        web_url: None,
        pull_requests: Vec::new(),
        reason: None,
        extra: Default::default(),
    });
    env.cost = CostLedger {
        llm_prompt_tokens: 1200,
        llm_completion_tokens: 34,
        llm_calls: 1,
        ..CostLedger::default()
    };
    env.timings = vec![StageTiming {
        stage: Stage::Generate,
        started_at_ms: CREATED_AT_MS + 100,
        finished_at_ms: Some(CREATED_AT_MS + 4_200),
    }];
    env
}

/// The same envelope with the fixed task id (for snapshots).
pub fn fixed(mut env: TaskEnvelope) -> TaskEnvelope {
    env.task_id = FIXED_TASK.parse::<TaskId>().unwrap();
    env.correlation_id = "delivery-1".into();
    env
}

pub fn github_target() -> ReplyTarget {
    ReplyTarget::Github {
        repo: "octo/hello".into(),
        number: 7,
        comment_id: Some(11),
    }
}

pub fn linear_target() -> ReplyTarget {
    ReplyTarget::Linear {
        issue_id: "ENG-123".into(),
        comment_id: Some("c0ffee00-0000-4000-8000-000000000001".into()),
    }
}

pub fn slack_target() -> ReplyTarget {
    ReplyTarget::Slack {
        channel: "C0123456".into(),
        thread_ts: "1700000000.000100".into(),
    }
}

/// A responder that notes when each request arrived and answers from a script:
/// the n-th request gets `answers[n]` (the last one repeats).
#[derive(Clone)]
pub struct Scripted {
    pub arrivals: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
    answers: Vec<wiremock::ResponseTemplate>,
}

impl Scripted {
    pub fn new(answers: Vec<wiremock::ResponseTemplate>) -> Self {
        Scripted {
            arrivals: Default::default(),
            answers,
        }
    }

    pub fn arrivals(&self) -> Vec<(String, std::time::Instant)> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl wiremock::Respond for Scripted {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push((request.url.path().to_owned(), std::time::Instant::now()));
        let n = (arrivals.len() - 1).min(self.answers.len() - 1);
        self.answers[n].clone()
    }
}

/// The JSON bodies of the requests `server` received on `path`.
pub async fn bodies(server: &MockServer, path: &str) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == path)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
        .collect()
}

/// A Redis string value under the test prefix.
pub async fn redis_get(store: &Store, key: &str) -> Option<String> {
    let mut conn = store.connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Sets a Redis value (to stage a crash between a post and its record).
pub async fn redis_set(store: &Store, key: &str, value: &str) {
    let mut conn = store.connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// The attempt mark key of a reply slot (as the ledger names it).
pub fn attempt_key(names: &Names, env: &TaskEnvelope, kind: ReplyKind) -> String {
    names.redis_key(&[
        "dispatch",
        "attempt",
        &format!("{}:{}", env.task_id, kind.as_str()),
    ])
}
