//! Through the real broker: the dispatcher worker on a unique prefix.

use crate::helpers::*;
use contexten_broker::WorkerOptions;
use contexten_config::Env;
use contexten_envelope::{HEADER_DEAD_REASON, ReplyKind, Stage, TaskEnvelope};
use contexten_telemetry::health::Readiness;
use contexten_testkit::broker::{BrokerFixture, RunningWorker};
use contexten_testkit::{RedisNode, eventually, keys_matching};
use lapin::types::AMQPValue;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// A dispatcher worker consuming `<prefix>.dispatch`, and the testkit's
/// fixture over the test's prefix (its topology removed on drop).
struct Fleet {
    worker: Option<RunningWorker>,
    broker: BrokerFixture,
}

impl Fleet {
    async fn start(t: &TestDispatch) -> Self {
        let broker = BrokerFixture::builder()
            .prefix(&t.prefix)
            .env(&[
                ("RETRY_TIERS_MS", "200,1000"),
                ("MAX_ATTEMPTS", "3"),
                ("SHUTDOWN_TIMEOUT_SECS", "10"),
            ])
            .plain_publisher()
            .start()
            .await;
        // The dispatcher's own store: records and caches where the test put them.
        let options = WorkerOptions {
            service: "dispatcher-test",
            stage: Stage::Dispatch,
            broker: broker.settings.clone(),
            readiness: Readiness::new(&["broker"]),
        };
        let worker = RunningWorker::spawn(options, t.store.clone(), t.handler.clone());
        Fleet {
            worker: Some(worker),
            broker,
        }
    }

    async fn publish(&self, env: &TaskEnvelope) {
        self.broker
            .publisher
            .publish(Stage::Dispatch, env)
            .await
            .unwrap();
    }

    /// Whether the dispatch stage completed this message (task and hop).
    async fn completed(&self, env: &TaskEnvelope) -> bool {
        self.broker
            .store
            .is_complete(Stage::Dispatch, env)
            .await
            .unwrap_or(false)
    }

    /// Waits until the dispatch queue holds no ready message.
    async fn drained(&self) {
        let queue = self.broker.names.stage_queue(Stage::Dispatch);
        eventually(WAIT, "an empty dispatch queue", || async {
            self.broker.depth(&queue).await == 0
        })
        .await;
    }

    /// Stops the worker after its in-flight deliveries finish (the topology
    /// stays until the fleet is dropped).
    async fn stop(&mut self) {
        self.worker.take().expect("a running worker").stop().await;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown.cancel();
            worker.join.abort();
        }
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
    let mut fleet = Fleet::start(&t).await;

    let mut ack = envelope(github_target(), ReplyKind::Ack);
    ack.hop = 1;
    let mut answer = ack.clone();
    answer.reply = Some(ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&ack).await;
    fleet.publish(&answer).await;
    eventually(WAIT, "both replies", || async {
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
    eventually(WAIT, "the re-published copy", || {
        fleet.completed(&republished)
    })
    .await;
    fleet.drained().await;
    fleet.stop().await;
    assert_eq!(reactions.arrivals().len(), 1, "no second reaction");
    assert_eq!(comments.arrivals().len(), 1, "no second comment");
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
    let mut fleet = Fleet::start(&t).await;
    let answer = envelope(github_target(), ReplyKind::Final);
    fleet.publish(&answer).await;
    eventually(WAIT, "the retried post", || async {
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
    eventually(WAIT, "the recorded reply", || async {
        redis_get(
            &t.store,
            &t.names.reply_key(answer.task_id, ReplyKind::Final),
        )
        .await
        .is_some()
    })
    .await;
    fleet.stop().await;
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
    let mut fleet = Fleet::start(&t).await;
    let answer = envelope(slack_target(), ReplyKind::Final);
    fleet.publish(&answer).await;
    let dead_queue = fleet.broker.names.dead_queue(Stage::Dispatch);
    let dead = fleet.broker.take(&dead_queue, WAIT).await;
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
    let queue = fleet.broker.names.stage_queue(Stage::Dispatch);
    assert_eq!(
        fleet.broker.depth(&queue).await,
        0,
        "no failure answer for a dispatch dead letter"
    );
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
    let cache = RedisNode::small("noeviction").await;
    cache.fill_until_oom().await.expect("the test Redis full");
    let t = TestDispatch::start_on(split_redis(&redis_url(), &cache.url()), |_| {}).await;
    let comments = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let mut fleet = Fleet::start(&t).await;
    let mut answer = envelope(github_target(), ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&answer).await;
    eventually(WAIT, "the answer", || fleet.completed(&answer)).await;

    // A redelivery of the same message, and the same answer under a new hop.
    let mut republished = answer.clone();
    republished.hop = 9;
    fleet.publish(&answer).await;
    fleet.publish(&republished).await;
    eventually(WAIT, "the re-published copy", || {
        fleet.completed(&republished)
    })
    .await;
    fleet.drained().await;
    fleet.stop().await;
    assert_eq!(comments.arrivals().len(), 1, "no second comment");
    let keys = keys_matching(&cache.url(), &format!("{}:*", t.names.prefix()))
        .await
        .unwrap();
    assert!(keys.is_empty(), "no record in the cache Redis: {keys:?}");
}

#[tokio::test]
async fn a_records_redis_refusing_writes_delays_the_answer_and_it_is_posted_once_after() {
    let records = RedisNode::small("noeviction").await;
    records.fill_until_oom().await.expect("the test Redis full");
    let t = TestDispatch::start_on(split_redis(&records.url(), &redis_url()), |_| {}).await;
    let comments = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comments.clone())
        .mount(&t.github)
        .await;
    let mut fleet = Fleet::start(&t).await;
    let mut answer = envelope(github_target(), ReplyKind::Final);
    answer.hop = 4;
    fleet.publish(&answer).await;
    // No reply lock, no attempt mark: nothing is posted, the message waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(comments.arrivals().is_empty(), "posted without a record");

    // Room again (an operator raised maxmemory): the retried message posts once.
    records.config_set("maxmemory", "64mb").await.unwrap();
    eventually(WAIT, "the answer posted", || async {
        !comments.arrivals().is_empty()
    })
    .await;
    fleet.publish(&answer).await;
    fleet.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.stop().await;
    assert_eq!(comments.arrivals().len(), 1, "posted exactly once");
}
