//! `TestFleet`: a unique prefix, the topology declared under it, a fake Codegen,
//! agent workers started on demand, the dispatch queue read back, and cleanup
//! on drop.

use crate::fake::{FakeCodegen, ORG_ID};
use agent_worker::{AgentHandler, AgentSettings};
use contexten_broker::{Handler, Outcome};
use contexten_config::BrokerSettings;
use contexten_envelope::{
    ReplyKind, ReplyTarget, SourceKind, Stage, Strategy, TaskEnvelope, TaskId,
};
pub use contexten_testkit::broker::RunningWorker;
use contexten_testkit::broker::{BrokerFixture, envelope_from, source};
use lapin::options::BasicGetOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(30);
/// Short delay tiers so polls and retries are quick.
pub const TIERS_MS: &str = "100,300,1000";
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(1500);

/// The testkit's broker fixture (prefix, topology, publisher, store; removed
/// on drop) with a fake Codegen and the agent's settings.
pub struct TestFleet {
    fixture: BrokerFixture,
    /// The fixture's broker settings, as the agent replicas get them.
    pub broker: BrokerSettings,
    pub agent: AgentSettings,
    pub fake: FakeCodegen,
}

impl std::ops::Deref for TestFleet {
    type Target = BrokerFixture;
    fn deref(&self) -> &BrokerFixture {
        &self.fixture
    }
}

impl TestFleet {
    /// A fleet whose agent settings are the test defaults overridden by `extra`.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        // Built at run time so no token-shaped literal sits in the source.
        let token = format!("{}_{}", "cg", uuid::Uuid::now_v7().simple());
        let fake = FakeCodegen::start(&token).await;
        let uri = fake.uri();
        let org = ORG_ID.to_string();
        let fixture = BrokerFixture::builder()
            .prefetch(16)
            .env(&[
                ("RETRY_TIERS_MS", TIERS_MS),
                ("MAX_ATTEMPTS", "5"),
                ("SHUTDOWN_TIMEOUT_SECS", "1"),
                ("CODEGEN_API_URL", &uri),
                ("CODEGEN_ORG_ID", &org),
                ("CODEGEN_API_TOKEN", &token),
                ("CODEGEN_TIMEOUT_SECS", "2"),
                ("CODEGEN_BREAKER_PROBE_TIMEOUT_MS", "5000"),
                ("CODEGEN_REQUEST_LIMIT", "10000"),
                ("CODEGEN_REQUEST_WINDOW_MS", "1000"),
                ("CODEGEN_CREATE_LIMIT", "10000"),
                ("CODEGEN_CREATE_WINDOW_MS", "1000"),
                ("AGENT_POLL_INITIAL_MS", "50"),
                ("AGENT_POLL_MAX_MS", "200"),
                // Most tests send many tasks as one person; the requester limit
                // has its own tests (requester.rs).
                ("AGENT_MAX_RUNS_PER_REQUESTER", "100"),
            ])
            .env(extra)
            .start()
            .await;
        let agent = AgentSettings::from_env(&fixture.env).expect("agent settings");
        TestFleet {
            broker: fixture.settings.clone(),
            fixture,
            agent,
            fake,
        }
    }

    /// A handler as a replica builds it (its own client, limiter and breaker
    /// handles; the state they share lives in Redis).
    pub fn handler(&self) -> AgentHandler {
        AgentHandler::new(&self.agent, self.store.clone()).expect("handler")
    }

    /// Starts an agent replica.
    pub fn spawn_agent(&self) -> RunningWorker {
        self.spawn_worker(self.handler())
    }

    /// Starts an agent replica that counts its deliveries and deferrals.
    pub fn spawn_counted(&self) -> (RunningWorker, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let handler = self.handler();
        let seen = counts.clone();
        let worker = self.spawn_worker(move |env: TaskEnvelope| {
            let handler = handler.clone();
            let seen = seen.clone();
            async move {
                seen.deliveries.fetch_add(1, Ordering::SeqCst);
                let outcome = handler.handle_envelope(env).await;
                let deferred = matches!(&outcome, Outcome::Forward(next)
                    if next.len() == 1 && next[0].stage == Stage::Agent && next[0].envelope.agent_run.is_none());
                if deferred {
                    seen.deferrals.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            }
        });
        (worker, counts)
    }

    pub fn spawn_worker<H: Handler>(&self, handler: H) -> RunningWorker {
        self.fixture.spawn_worker(
            "agent-worker-test",
            Stage::Agent,
            self.broker.clone(),
            handler,
        )
    }

    pub async fn publish(&self, envelope: &TaskEnvelope) {
        self.publisher
            .publish(Stage::Agent, envelope)
            .await
            .expect("publish to the agent stage");
    }

    /// Takes answers from the dispatch queue until `done` holds for what was
    /// taken, within `within`; panics naming what arrived otherwise.
    pub async fn answers_until(
        &self,
        within: Duration,
        done: impl Fn(&[TaskEnvelope]) -> bool,
    ) -> Vec<TaskEnvelope> {
        let queue = self.names.stage_queue(Stage::Dispatch);
        let deadline = tokio::time::Instant::now() + within;
        let mut taken = Vec::new();
        while !done(&taken) {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "dispatch answers incomplete after {within:?}: {:?}",
                    summarise(&taken)
                );
            }
            let got = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            match got {
                Some(message) => taken
                    .push(TaskEnvelope::from_json(&message.delivery.data).expect("an envelope")),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        taken
    }

    /// Waits for the final (or failure) answer of each of `tasks`.
    pub async fn finals(
        &self,
        tasks: &[TaskId],
        within: Duration,
    ) -> HashMap<TaskId, TaskEnvelope> {
        let answers = self
            .answers_until(within, |taken| {
                tasks
                    .iter()
                    .all(|t| taken.iter().any(|a| a.task_id == *t && is_final(a)))
            })
            .await;
        answers
            .into_iter()
            .filter(is_final)
            .map(|a| (a.task_id, a))
            .collect()
    }

    /// The shared breaker's state as stored in Redis.
    pub async fn breaker_state(&self) -> Option<String> {
        let key = self.names.redis_key(&["breaker", "codegen"]);
        let (state,): (Option<String>,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.hget(&key, "state");
                p
            })
            .await
            .expect("redis");
        state
    }
}

pub fn is_final(answer: &TaskEnvelope) -> bool {
    matches!(answer.reply, Some(ReplyKind::Final | ReplyKind::Failure))
}

fn summarise(taken: &[TaskEnvelope]) -> Vec<String> {
    taken
        .iter()
        .map(|a| format!("{} {:?}", a.task_id, a.reply))
        .collect()
}

/// Deliveries and deferrals one replica handled.
#[derive(Debug, Default)]
pub struct Counts {
    pub deliveries: AtomicUsize,
    pub deferrals: AtomicUsize,
}

/// An agent task as the context stage forwards it.
pub fn task(text: &str) -> TaskEnvelope {
    let mut source = source(
        SourceKind::GITHUB,
        ReplyTarget::Github {
            repo: "octo/hello".into(),
            number: 7,
            comment_id: None,
        },
    );
    source.delivery_id = Some(format!("delivery-{}", uuid::Uuid::now_v7()));
    source.requested_by = Some("octocat".into());
    let mut envelope = envelope_from(source, text);
    envelope.strategy = Strategy::Agent;
    envelope
}
