//! `TestFleet`: a unique prefix, the topology declared under it, a fake Codegen,
//! agent workers started on demand, the dispatch queue read back, and cleanup.

use crate::fake::{FakeCodegen, ORG_ID};
use agent_worker::{AgentHandler, AgentSettings};
use contexten_broker::{
    CancellationToken, Handler, Outcome, Publisher, Store, WorkerOptions, run_worker, topology,
};
use contexten_config::{BrokerSettings, Env, ExposeSecret, RedisSettings};
use contexten_envelope::{
    Names, ReplyKind, ReplyTarget, Request, Source, SourceKind, Stage, Strategy, TaskEnvelope,
    TaskId,
};
use contexten_telemetry::health::Readiness;
use lapin::options::BasicGetOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(30);
/// Short delay tiers so polls and retries are quick.
pub const TIERS_MS: &str = "100,300,1000";
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(1500);

pub struct TestFleet {
    pub names: Names,
    pub broker: BrokerSettings,
    pub redis: RedisSettings,
    pub agent: AgentSettings,
    pub store: Store,
    pub connection: Connection,
    pub channel: Channel,
    pub publisher: Publisher,
    pub fake: FakeCodegen,
}

impl TestFleet {
    /// A fleet whose agent settings are the test defaults overridden by `extra`.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        // Built at run time so no token-shaped literal sits in the source.
        let token = format!("{}_{}", "cg", uuid::Uuid::now_v7().simple());
        let fake = FakeCodegen::start(&token).await;
        let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
        let amqp = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let uri = fake.uri();
        let org = ORG_ID.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &amqp),
            ("REDIS_URL", &redis),
            ("CONTEXTEN_PREFIX", &prefix),
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
        ];
        pairs.extend_from_slice(extra);
        let env = Env::from_pairs(pairs);
        let broker = BrokerSettings::from_env(&env, 16).expect("test broker settings");
        let redis = RedisSettings::from_env(&env).expect("redis settings");
        let agent = AgentSettings::from_env(&env).expect("agent settings");
        let names = Names::new(prefix);
        let store = Store::new(&redis, names.clone()).expect("redis client");
        let connection = Connection::connect(
            broker.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ on AMQP_URL (run `make services`)");
        let channel = connection.create_channel().await.unwrap();
        topology::declare(&channel, &names, &broker.retry_tiers)
            .await
            .unwrap();
        let publisher = Publisher::new(
            &connection,
            names.clone(),
            Some(store.clone()),
            broker.payload_inline_limit,
        )
        .await
        .unwrap();
        TestFleet {
            names,
            broker,
            redis,
            agent,
            store,
            connection,
            channel,
            publisher,
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
        let shutdown = CancellationToken::new();
        let options = WorkerOptions {
            service: "agent-worker-test",
            stage: Stage::Agent,
            broker: self.broker.clone(),
            readiness: Readiness::new(&["broker"]),
        };
        let join = tokio::spawn(run_worker(
            options,
            self.store.clone(),
            handler,
            shutdown.clone(),
        ));
        RunningWorker { shutdown, join }
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

    /// Messages ready in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Deletes the topology and every Redis key under the prefix.
    pub async fn cleanup(self) {
        let _ = topology::delete(&self.channel, &self.names, &self.broker.retry_tiers).await;
        let pattern = format!("{}:*", self.names.prefix());
        let client = redis::Client::open(self.redis.url.expose_secret()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
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

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub join: JoinHandle<Result<(), contexten_broker::BrokerError>>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.join)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("worker result");
    }
}

/// An agent task as the context stage forwards it.
pub fn task(text: &str) -> TaskEnvelope {
    let source = Source {
        kind: SourceKind::GITHUB,
        delivery_id: Some(format!("delivery-{}", uuid::Uuid::now_v7())),
        requested_by: Some("octocat".into()),
        reply_to: ReplyTarget::Github {
            repo: "octo/hello".into(),
            number: 7,
            comment_id: None,
        },
        extra: Default::default(),
    };
    let mut envelope = TaskEnvelope::new(
        source,
        Request {
            text: text.into(),
            ..Request::default()
        },
    );
    envelope.strategy = Strategy::Agent;
    envelope
}
