//! `TestBroker`: a unique prefix, the topology declared under it, a test-side
//! channel to publish and peek, workers started on demand, and cleanup on drop.

use contexten_broker::Handler;
use contexten_broker::service::WorkerConfig;
use contexten_config::{BrokerSettings, Env};
use contexten_envelope::{ReplyTarget, SourceKind, Stage, TaskEnvelope};
use contexten_testkit::TcpProxy;
pub use contexten_testkit::broker::RunningWorker;
use contexten_testkit::broker::{BrokerFixture, envelope_from, source};
use lapin::message::BasicGetMessage;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::HashMap;
use std::time::Duration;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(15);
/// The delay tiers tests use (short, so retries are quick).
pub const TIERS_MS: &str = "200,1000";

/// The broker crate's fixture: the testkit's (prefix, topology, publisher,
/// store; all removed on drop) with this crate's test settings.
pub struct TestBroker {
    fixture: BrokerFixture,
}

impl std::ops::Deref for TestBroker {
    type Target = BrokerFixture;
    fn deref(&self) -> &BrokerFixture {
        &self.fixture
    }
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        contexten_telemetry::init_for_tests();
        let fixture = BrokerFixture::builder()
            .env(&[
                ("RETRY_TIERS_MS", TIERS_MS),
                ("MAX_ATTEMPTS", "3"),
                ("SHUTDOWN_TIMEOUT_SECS", "10"),
            ])
            .env(extra)
            .start()
            .await;
        TestBroker { fixture }
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
        self.fixture
            .spawn_worker("test-worker", stage, settings, handler)
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
        self.fixture.take(queue, WAIT).await
    }

    /// Takes one message from any of `stage`'s work queues (every lane in
    /// quorum mode, the highest first), waiting up to `within`.
    pub async fn take_from_stage(&self, stage: Stage, within: Duration) -> Option<BasicGetMessage> {
        let queues =
            contexten_broker::topology::work_queues(&self.names, self.settings.queue_type, stage);
        let until = tokio::time::Instant::now() + within;
        loop {
            for (queue, _) in &queues {
                if let Some(got) = self.fixture.take_within(queue, Duration::ZERO).await {
                    return Some(got);
                }
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A sample envelope.
pub fn envelope(text: &str) -> TaskEnvelope {
    let mut source = source(
        SourceKind::API,
        ReplyTarget::Callback {
            url: "http://127.0.0.1:9/hook".into(),
        },
    );
    source.requested_by = Some("tester".into());
    envelope_from(source, text)
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

/// The testkit's TCP proxy in front of RabbitMQ, with its AMQP URL.
pub struct CuttableProxy {
    pub url: String,
    proxy: TcpProxy,
}

impl CuttableProxy {
    pub async fn start(upstream: &str) -> Self {
        let proxy = TcpProxy::start(upstream).await.expect("a loopback proxy");
        CuttableProxy {
            url: format!("amqp://guest:guest@{}/%2f", proxy.addr()),
            proxy,
        }
    }

    /// Drops every open connection (new ones are still accepted).
    pub fn cut(&self) {
        self.proxy.cut();
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
