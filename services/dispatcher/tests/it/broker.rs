//! Through the real broker: the dispatcher worker on a unique prefix.

use crate::helpers::*;
use contexten_broker::{CancellationToken, Publisher, Store, WorkerOptions, run_worker, topology};
use contexten_config::{BrokerSettings, Env, ExposeSecret};
use contexten_envelope::{HEADER_DEAD_REASON, Names, ReplyKind, Stage, TaskEnvelope};
use contexten_telemetry::health::Readiness;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// A dispatcher worker consuming `<prefix>.dispatch`, and a channel to look.
struct Fleet {
    settings: BrokerSettings,
    names: Names,
    store: Store,
    connection: Connection,
    channel: Channel,
    publisher: Publisher,
    shutdown: CancellationToken,
    worker: JoinHandle<Result<(), contexten_broker::BrokerError>>,
}

impl Fleet {
    async fn start(t: &TestDispatch) -> Self {
        let amqp = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let env = Env::from_pairs([
            ("AMQP_URL", amqp.as_str()),
            ("CONTEXTEN_PREFIX", t.names.prefix()),
            ("RETRY_TIERS_MS", "200,1000"),
            ("MAX_ATTEMPTS", "3"),
            ("SHUTDOWN_TIMEOUT_SECS", "10"),
        ]);
        let settings = BrokerSettings::from_env(&env, 8).unwrap();
        let connection = Connection::connect(
            settings.amqp_url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ on AMQP_URL");
        let channel = connection.create_channel().await.unwrap();
        topology::declare(&channel, &t.names, &settings.retry_tiers)
            .await
            .unwrap();
        let publisher = Publisher::new(
            &connection,
            t.names.clone(),
            None,
            settings.payload_inline_limit,
        )
        .await
        .unwrap();
        let shutdown = CancellationToken::new();
        let options = WorkerOptions {
            service: "dispatcher-test",
            stage: Stage::Dispatch,
            broker: settings.clone(),
            readiness: Readiness::new(&["broker"]),
        };
        let worker = tokio::spawn(run_worker(
            options,
            t.store.clone(),
            t.handler.clone(),
            shutdown.clone(),
        ));
        Fleet {
            settings,
            names: t.names.clone(),
            store: t.store.clone(),
            connection,
            channel,
            publisher,
            shutdown,
            worker,
        }
    }

    async fn publish(&self, env: &TaskEnvelope) {
        self.publisher.publish(Stage::Dispatch, env).await.unwrap();
    }

    /// Whether the dispatch stage completed this message (task and hop).
    async fn completed(&self, env: &TaskEnvelope) -> bool {
        self.store
            .is_complete(Stage::Dispatch, env)
            .await
            .unwrap_or(false)
    }

    async fn ready(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Stops the worker after its in-flight deliveries finish, then deletes the
    /// topology.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.worker)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
        let _ = topology::delete(&self.channel, &self.names, &self.settings.retry_tiers).await;
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

/// Polls `check` until it holds or [`WAIT`] passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_ack_then_a_final_arrive_in_order_and_republishing_posts_nothing() {
    let t = TestDispatch::start().await;
    let reactions = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 5})),
    ]);
    let comments = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/comments/11/reactions"))
        .respond_with(reactions.clone())
        .mount(&t.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let fleet = Fleet::start(&t).await;

    let mut ack = envelope(github_target(), ReplyKind::Ack);
    ack.hop = 1;
    let mut answer = ack.clone();
    answer.reply = Some(ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&ack).await;
    fleet.publish(&answer).await;
    eventually("both replies", || async {
        fleet.completed(&answer).await && fleet.completed(&ack).await
    })
    .await;
    assert_eq!(reactions.arrivals().len(), 1);
    assert_eq!(comments.arrivals().len(), 1);
    assert!(
        reactions.arrivals()[0].1 < comments.arrivals()[0].1,
        "the acknowledgement came first"
    );

    // The same message again (a redelivery), and the same reply re-published
    // under a new hop (an upstream worker that published twice).
    let mut republished = answer.clone();
    republished.hop = 9;
    fleet.publish(&answer).await;
    fleet.publish(&ack).await;
    fleet.publish(&republished).await;
    eventually("the re-published copy", || fleet.completed(&republished)).await;
    let queue = fleet.names.stage_queue(Stage::Dispatch);
    eventually("an empty dispatch queue", || async {
        fleet.ready(&queue).await == 0
    })
    .await;
    fleet.stop().await;
    assert_eq!(reactions.arrivals().len(), 1, "no second reaction");
    assert_eq!(comments.arrivals().len(), 1, "no second comment");
    t.cleanup().await;
}

#[tokio::test]
async fn a_429_is_retried_through_the_delay_queue_after_the_advertised_delay() {
    let t = TestDispatch::start().await;
    let comments = Scripted::new(vec![
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"message": "slow down"})),
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let fleet = Fleet::start(&t).await;
    let answer = envelope(github_target(), ReplyKind::Final);
    fleet.publish(&answer).await;
    eventually("the retried post", || async {
        comments.arrivals().len() == 2
    })
    .await;
    let arrivals = comments.arrivals();
    let gap = arrivals[1].1 - arrivals[0].1;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After"
    );
    assert!(
        gap < Duration::from_secs(5),
        "retried after {gap:?}, far beyond Retry-After"
    );
    eventually("the recorded reply", || async {
        redis_get(
            &t.store,
            &t.names.reply_key(answer.task_id, ReplyKind::Final),
        )
        .await
        .is_some()
    })
    .await;
    fleet.stop().await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_permanent_slack_error_is_dead_lettered_with_its_reason_and_no_new_answer() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .expect(1)
        .mount(&t.slack)
        .await;
    let fleet = Fleet::start(&t).await;
    let answer = envelope(slack_target(), ReplyKind::Final);
    fleet.publish(&answer).await;
    let dead_queue = fleet.names.dead_queue(Stage::Dispatch);
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let got = fleet
            .channel
            .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        match got {
            Some(message) => break message,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            None => panic!("no dead letter in {dead_queue}"),
        }
    };
    let reason = dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(HEADER_DEAD_REASON).cloned());
    assert!(
        matches!(&reason, Some(AMQPValue::LongString(s)) if s.to_string() == "channel_not_found"),
        "{reason:?}"
    );
    fleet.stop().await;
    assert_eq!(fleet_ready_after_stop(&t).await, 0);
    t.cleanup().await;
}

/// Messages left in the dispatch queue (no failure answer was produced for a
/// dispatch dead letter).
async fn fleet_ready_after_stop(t: &TestDispatch) -> u32 {
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = channel
        .queue_declare(
            t.names.stage_queue(Stage::Dispatch).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or(0);
    let _ = connection.close(200, "done".into()).await;
    count
}

/// Writes values under `filler:*` into a Redis of the test's own
/// (`noeviction`) until it refuses even a small one with `OOM` (the request
/// itself counts towards used memory, so big values are refused first).
async fn fill_until_refused(url: &str) -> redis::aio::MultiplexedConnection {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut refused = false;
    for size in [64 << 10, 4 << 10, 256, 16] {
        let value = vec![b'x'; size];
        for i in 0..4_000 {
            let written: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("filler:{size}:{i}"))
                .arg(&value)
                .query_async(&mut conn)
                .await;
            if written.is_err_and(|e| e.to_string().contains("OOM")) {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the test Redis never filled up");
    // Pinned full: below what it holds, so no freed buffer lets a small write
    // through (an operator's Redis at its limit).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query_async(&mut conn)
        .await
        .unwrap();
    conn
}

/// Records on `records`, caches on `cache` (README "Redis: records and caches").
fn split_redis(records: &str, cache: &str) -> contexten_config::RedisSettings {
    contexten_config::RedisSettings::from_env(&Env::from_pairs([
        ("REDIS_URL", cache),
        ("REDIS_RECORDS_URL", records),
    ]))
    .unwrap()
}

#[tokio::test]
async fn with_the_cache_redis_full_a_redelivered_answer_is_posted_once() {
    let cache = contexten_testkit::RedisNode::start(
        contexten_testkit::RedisOptions::default()
            .maxmemory("2mb")
            .policy("noeviction"),
    )
    .await
    .expect("a Redis of the test's own");
    let mut cache_conn = fill_until_refused(&cache.url()).await;
    let t = TestDispatch::start_on(split_redis(&redis_url(), &cache.url()), |_| {}).await;
    let comments = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let fleet = Fleet::start(&t).await;
    let mut answer = envelope(github_target(), ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&answer).await;
    eventually("the answer", || fleet.completed(&answer)).await;

    // A redelivery of the same message, and the same answer under a new hop.
    let mut republished = answer.clone();
    republished.hop = 9;
    fleet.publish(&answer).await;
    fleet.publish(&republished).await;
    eventually("the re-published copy", || fleet.completed(&republished)).await;
    let queue = fleet.names.stage_queue(Stage::Dispatch);
    eventually("an empty dispatch queue", || async {
        fleet.ready(&queue).await == 0
    })
    .await;
    fleet.stop().await;
    assert_eq!(comments.arrivals().len(), 1, "no second comment");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", t.names.prefix()))
        .query_async(&mut cache_conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "no record in the cache Redis: {keys:?}");
    t.cleanup().await;
}

#[tokio::test]
async fn a_records_redis_refusing_writes_delays_the_answer_and_it_is_posted_once_after() {
    let records = contexten_testkit::RedisNode::start(
        contexten_testkit::RedisOptions::default()
            .maxmemory("2mb")
            .policy("noeviction"),
    )
    .await
    .expect("a Redis of the test's own");
    let mut records_conn = fill_until_refused(&records.url()).await;
    let t = TestDispatch::start_on(split_redis(&records.url(), &redis_url()), |_| {}).await;
    let comments = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let fleet = Fleet::start(&t).await;
    let mut answer = envelope(github_target(), ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&answer).await;
    // No reply lock, no attempt mark: nothing is posted, the message waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(comments.arrivals().is_empty(), "posted without a record");

    // Room again (an operator raised maxmemory): the retried message posts once.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("64mb")
        .query_async(&mut records_conn)
        .await
        .unwrap();
    eventually("the answer posted", || async {
        !comments.arrivals().is_empty()
    })
    .await;
    fleet.publish(&answer).await;
    let queue = fleet.names.stage_queue(Stage::Dispatch);
    eventually("an empty dispatch queue", || async {
        fleet.ready(&queue).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.stop().await;
    assert_eq!(comments.arrivals().len(), 1, "posted exactly once");
    drop(records);
    t.cleanup().await;
}
