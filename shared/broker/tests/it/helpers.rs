//! `TestBroker`: a unique prefix, the topology declared under it, a test-side
//! channel to publish and peek, workers started on demand, and cleanup.

use contexten_broker::service::WorkerConfig;
use contexten_broker::{
    CancellationToken, Handler, Publisher, Store, WorkerOptions, run_worker, topology,
};
use contexten_config::{BrokerSettings, Env, ExposeSecret, RedisSettings};
use contexten_envelope::{Names, ReplyTarget, Request, Source, SourceKind, Stage, TaskEnvelope};
use contexten_telemetry::health::Readiness;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(15);
/// The delay tiers tests use (short, so retries are quick).
pub const TIERS_MS: &str = "200,1000";

pub struct TestBroker {
    pub names: Names,
    pub settings: BrokerSettings,
    pub redis: RedisSettings,
    pub store: Store,
    pub connection: Connection,
    pub channel: Channel,
    pub publisher: Publisher,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
        let amqp = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut pairs: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &amqp),
            ("REDIS_URL", &redis),
            ("CONTEXTEN_PREFIX", &prefix),
            ("RETRY_TIERS_MS", TIERS_MS),
            ("MAX_ATTEMPTS", "3"),
            ("SHUTDOWN_TIMEOUT_SECS", "10"),
        ];
        pairs.extend_from_slice(extra);
        let env = Env::from_pairs(pairs);
        let settings = BrokerSettings::from_env(&env, 8).expect("test settings");
        let redis = RedisSettings::from_env(&env).expect("redis settings");
        let names = Names::new(prefix);
        let store = Store::new(&redis, names.clone()).expect("redis pool");
        let connection = Connection::connect(
            settings.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ on AMQP_URL (run `make services`)");
        let channel = connection.create_channel().await.unwrap();
        topology::declare_for(&connection, &names, &settings)
            .await
            .unwrap();
        let publisher = Publisher::new(
            &connection,
            names.clone(),
            Some(store.clone()),
            settings.payload_inline_limit,
        )
        .await
        .unwrap();
        TestBroker {
            names,
            settings,
            redis,
            store,
            connection,
            channel,
            publisher,
        }
    }

    /// Settings pointing at another AMQP address (a proxy), same prefix.
    pub fn settings_via(&self, amqp_url: &str) -> BrokerSettings {
        let mut settings = self.settings.clone();
        settings.amqp_url = amqp_url.to_owned().into();
        settings
    }

    /// The test settings with another prefetch.
    pub fn settings_with_prefetch(&self, prefetch: u16) -> BrokerSettings {
        let mut settings = self.settings.clone();
        settings.prefetch = prefetch;
        settings
    }

    /// Starts a worker for `stage`; cancel the token to stop it.
    pub fn spawn_worker<H: Handler>(&self, stage: Stage, handler: H) -> RunningWorker {
        self.spawn_worker_with(self.settings.clone(), stage, handler)
    }

    pub fn spawn_worker_with<H: Handler>(
        &self,
        settings: BrokerSettings,
        stage: Stage,
        handler: H,
    ) -> RunningWorker {
        let shutdown = CancellationToken::new();
        let readiness = Readiness::new(&["broker"]);
        let options = WorkerOptions {
            service: "test-worker",
            stage,
            broker: settings,
            readiness: readiness.clone(),
        };
        let join = tokio::spawn(run_worker(
            options,
            self.store.clone(),
            handler,
            shutdown.clone(),
        ));
        RunningWorker {
            shutdown,
            join,
            readiness,
        }
    }

    /// Publishes raw bytes to a stage queue with `headers`.
    pub async fn publish_raw(&self, stage: Stage, body: &[u8], headers: &[(&str, &str)]) {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        self.publisher
            .publish_raw(contexten_broker::PublishedMessage {
                exchange: self.names.work_exchange(),
                routing_key: stage.as_str().into(),
                body: body.to_vec(),
                properties: lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(table),
            })
            .await
            .expect("publish");
    }

    /// Takes one message from `queue`, waiting up to `WAIT`.
    pub async fn take(&self, queue: &str) -> BasicGetMessage {
        self.take_within(queue, WAIT)
            .await
            .unwrap_or_else(|| panic!("nothing arrived in {queue}"))
    }

    pub async fn take_within(&self, queue: &str, wait: Duration) -> Option<BasicGetMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if got.is_some() || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Messages ready in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        let q = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        q.message_count()
    }

    /// Deletes the topology and every Redis key under the prefix.
    pub async fn cleanup(self) {
        let _ = topology::delete(&self.channel, &self.names, &self.settings.retry_tiers).await;
        let pattern = format!("{}:*", self.names.prefix());
        let client = redis::Client::open(redis_url(&self.redis)).unwrap();
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

fn redis_url(settings: &RedisSettings) -> String {
    settings.url.expose_secret().to_owned()
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub join: JoinHandle<Result<(), contexten_broker::BrokerError>>,
    pub readiness: Readiness,
}

impl RunningWorker {
    /// Stops the worker and waits for it to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.join)
            .await
            .expect("worker stops in time")
            .unwrap()
            .unwrap();
    }
}

/// A sample envelope.
pub fn envelope(text: &str) -> TaskEnvelope {
    let source = Source {
        kind: SourceKind::Api,
        delivery_id: None,
        requested_by: Some("tester".into()),
        reply_to: ReplyTarget::Callback {
            url: "http://127.0.0.1:9/hook".into(),
        },
        extra: Default::default(),
    };
    TaskEnvelope::new(
        source,
        Request {
            text: text.into(),
            ..Request::default()
        },
    )
}

/// String headers of a message.
pub fn headers(message: &BasicGetMessage) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(table) = message.delivery.properties.headers() {
        for (k, v) in table.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::LongUInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            map.insert(k.as_str().to_owned(), text);
        }
    }
    map
}

/// A TCP proxy in front of RabbitMQ whose connections a test can cut.
pub struct CuttableProxy {
    pub url: String,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let tracked = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tracked.lock().unwrap().push(link);
            }
        });
        CuttableProxy {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            links,
            accept,
        }
    }

    /// Drops every open connection (new ones are still accepted).
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Settings of a worker config, for tests of the service helpers.
#[allow(dead_code)]
pub fn worker_config(broker: &TestBroker, stage: Stage) -> WorkerConfig {
    WorkerConfig {
        service: "test-worker",
        stage,
        broker: broker.settings.clone(),
        redis: broker.redis.clone(),
        health_addr: "127.0.0.1:0".parse().unwrap(),
        telemetry: contexten_config::TelemetrySettings::from_env(&Env::default(), "test").unwrap(),
    }
}
