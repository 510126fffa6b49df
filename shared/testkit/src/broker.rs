//! A test's own slice of a broker and Redis (feature `broker`): a
//! [`TestPrefix`], the fleet's topology declared under it, a channel to peek
//! and publish with, a publisher and a store. The topology and the prefix's
//! Redis keys are deleted when the fixture is dropped, panic or not.

use crate::prefix::{TestPrefix, machine_amqp_url, machine_redis_url};
use contexten_broker::{
    BrokerError, CancellationToken, Handler, PublishedMessage, Publisher, Store, WorkerOptions,
    run_worker, topology,
};
use contexten_config::{BrokerSettings, Env, ExposeSecret, RedisSettings};
use contexten_envelope::{Names, ReplyTarget, Request, Source, SourceKind, Stage, TaskEnvelope};
use contexten_telemetry::health::Readiness;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Publishes `env` to the dead-letter exchange as the runtime sets aside
/// `stage`'s message (its message id, the given headers), and waits for the
/// broker's confirmation: a dead letter for operator tests to find.
pub async fn dead_letter(
    publisher: &Publisher,
    names: &Names,
    stage: Stage,
    env: &TaskEnvelope,
    headers: FieldTable,
) {
    publisher
        .publish_raw(PublishedMessage {
            exchange: names.dead_letter_exchange(),
            routing_key: stage.as_str().into(),
            body: env.to_json(),
            properties: BasicProperties::default()
                .with_message_id(env.message_id(stage).into())
                .with_headers(headers),
        })
        .await
        .expect("publishing a dead letter");
}

/// Longest a worker may take to stop when told (a loaded machine included).
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A worker runtime started on the test's runtime; cancel `shutdown` (or call
/// [`stop`](Self::stop)) to end it.
pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub join: JoinHandle<Result<(), BrokerError>>,
    /// What the runtime reports to its health server.
    pub readiness: Readiness,
}

impl RunningWorker {
    /// Starts `run_worker` with `options`, `store` and `handler`.
    pub fn spawn<H: Handler>(options: WorkerOptions, store: Store, handler: H) -> RunningWorker {
        Self::spawn_with(options, store, handler, CancellationToken::new())
    }

    /// [`spawn`](Self::spawn) with a given shutdown token (a handler that
    /// stops its own worker holds a clone).
    pub fn spawn_with<H: Handler>(
        options: WorkerOptions,
        store: Store,
        handler: H,
        shutdown: CancellationToken,
    ) -> RunningWorker {
        let readiness = options.readiness.clone();
        let join = tokio::spawn(run_worker(options, store, handler, shutdown.clone()));
        RunningWorker {
            shutdown,
            join,
            readiness,
        }
    }

    /// Stops the worker and waits for it to return; panics if it does not
    /// stop in time or returns an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STOP_WITHIN, self.join)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("worker result");
    }
}

/// How to build a [`BrokerFixture`].
#[derive(Debug, Clone)]
pub struct FixtureBuilder {
    label: &'static str,
    name: Option<String>,
    amqp: Option<String>,
    redis: Option<String>,
    pairs: Vec<(String, String)>,
    prefetch: u16,
    publisher_store: bool,
}

/// See the module documentation. Fields are public so tests reach what they
/// need; the prefix is dropped (and cleaned) after the connection closes.
pub struct BrokerFixture {
    pub names: Names,
    /// The environment the settings were read from (for a crate's own
    /// settings, e.g. `AgentSettings::from_env`).
    pub env: Env,
    pub settings: BrokerSettings,
    pub redis: RedisSettings,
    pub store: Store,
    pub connection: Connection,
    pub channel: Channel,
    pub publisher: Publisher,
    pub prefix: TestPrefix,
}

impl Default for FixtureBuilder {
    fn default() -> Self {
        FixtureBuilder {
            label: "test",
            name: None,
            amqp: None,
            redis: None,
            pairs: Vec::new(),
            prefetch: 8,
            publisher_store: true,
        }
    }
}

impl FixtureBuilder {
    /// The prefix's first word (`test` unless set; benchmarks use `bench`).
    pub fn label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// Uses the prefix `name` (another fixture's) instead of a new one.
    pub fn prefix(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The broker (default: the machine's, `AMQP_URL`).
    pub fn amqp(mut self, url: impl Into<String>) -> Self {
        self.amqp = Some(url.into());
        self
    }

    /// The Redis (default: the machine's, `REDIS_URL`).
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// More environment, after (and so over) `AMQP_URL`, `REDIS_URL` and
    /// `CONTEXTEN_PREFIX`.
    pub fn env(mut self, pairs: &[(&str, &str)]) -> Self {
        self.pairs.extend(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self
    }

    /// The default prefetch of the broker settings (8 unless set).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// A publisher that never offloads payloads to Redis (no store, no
    /// inline limit), as the operator CLI publishes.
    pub fn plain_publisher(mut self) -> Self {
        self.publisher_store = false;
        self
    }

    /// Connects, declares the topology and builds the publisher; panics
    /// naming what is missing when the broker or Redis is not there.
    pub async fn start(self) -> BrokerFixture {
        let prefix = match &self.name {
            Some(name) => TestPrefix::named(name),
            None => TestPrefix::labelled(self.label),
        };
        let amqp = self.amqp.unwrap_or_else(machine_amqp_url);
        let redis_url = self.redis.unwrap_or_else(machine_redis_url);
        prefix.clean_redis(&redis_url);
        let mut pairs: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &amqp),
            ("REDIS_URL", &redis_url),
            ("CONTEXTEN_PREFIX", prefix.as_str()),
        ];
        pairs.extend(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let env = Env::from_pairs(pairs);
        let settings = BrokerSettings::from_env(&env, self.prefetch).expect("test broker settings");
        let redis = RedisSettings::from_env(&env).expect("test redis settings");
        let names = Names::new(prefix.as_str());
        let store = Store::new(&redis, names.clone()).expect("redis client");
        let connection = Connection::connect(
            settings.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ on AMQP_URL (run `make services`)");
        let channel = connection.create_channel().await.expect("a channel");
        {
            // Registered before declaring, so a half-declared topology goes too.
            let names = names.clone();
            let tiers = settings.retry_tiers.clone();
            let url = settings.amqp_url.expose_secret().to_owned();
            prefix.on_drop(move || async move {
                let Ok(connection) =
                    Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    let _ = topology::delete(&channel, &names, &tiers).await;
                }
                let _ = connection.close(200, "test done".into()).await;
            });
        }
        topology::declare_for(&connection, &names, &settings)
            .await
            .expect("declare the topology");
        let publisher = if self.publisher_store {
            Publisher::new(
                &connection,
                names.clone(),
                Some(store.clone()),
                settings.payload_inline_limit,
            )
            .await
        } else {
            Publisher::new(&connection, names.clone(), None, usize::MAX).await
        }
        .expect("a publisher");
        BrokerFixture {
            names,
            env,
            settings,
            redis,
            store,
            connection,
            channel,
            publisher,
            prefix,
        }
    }
}

impl BrokerFixture {
    pub fn builder() -> FixtureBuilder {
        FixtureBuilder::default()
    }

    /// The machine's broker and Redis with `extra` environment.
    pub async fn start(extra: &[(&str, &str)]) -> BrokerFixture {
        Self::builder().env(extra).start().await
    }

    /// Starts a worker for `stage` named `service` with `settings` (the
    /// fixture's, or changed ones) and the fixture's store.
    pub fn spawn_worker<H: Handler>(
        &self,
        service: &'static str,
        stage: Stage,
        settings: BrokerSettings,
        handler: H,
    ) -> RunningWorker {
        let options = WorkerOptions {
            service,
            stage,
            broker: settings,
            readiness: Readiness::new(&["broker"]),
        };
        RunningWorker::spawn(options, self.store.clone(), handler)
    }

    /// The settings pointing at another AMQP address (a proxy), same prefix.
    pub fn settings_via(&self, amqp_url: &str) -> BrokerSettings {
        let mut settings = self.settings.clone();
        settings.amqp_url = amqp_url.to_owned().into();
        settings
    }

    /// Takes one message from `queue` (acknowledged), waiting up to `within`.
    pub async fn take_within(&self, queue: &str, within: Duration) -> Option<BasicGetMessage> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if got.is_some() || tokio::time::Instant::now() >= until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes one message from `queue`, panicking when none comes within `within`.
    pub async fn take(&self, queue: &str, within: Duration) -> BasicGetMessage {
        self.take_within(queue, within)
            .await
            .unwrap_or_else(|| panic!("nothing arrived in {queue} within {within:?}"))
    }

    /// [`take`](Self::take) read as an envelope.
    pub async fn take_envelope(&self, queue: &str, within: Duration) -> TaskEnvelope {
        let message = self.take(queue, within).await;
        TaskEnvelope::from_json(&message.delivery.data).expect("an envelope")
    }

    /// Messages ready in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists")
            .message_count()
    }
}

/// A source of `kind` answered on `reply_to`, with no delivery id and no
/// requester (set them on the result when a test needs them).
pub fn source(kind: SourceKind, reply_to: ReplyTarget) -> Source {
    Source {
        kind,
        delivery_id: None,
        requested_by: None,
        reply_to,
        extra: Default::default(),
    }
}

/// A new envelope asking `text` from `source`, everything else default.
pub fn envelope_from(source: Source, text: &str) -> TaskEnvelope {
    TaskEnvelope::new(
        source,
        Request {
            text: text.into(),
            ..Request::default()
        },
    )
}
