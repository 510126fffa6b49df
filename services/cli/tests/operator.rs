//! The operator operations against the real RabbitMQ and Redis.

use contexten_broker::{Publisher, Store};
use contexten_cli::{
    DeadAction, DeadFilter, dead_letters, list_dead, queue_stats, redis_report, task_status,
};
use contexten_config::{Env, QueueType, RedisSettings};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, Names, ReplyTarget, SourceKind, Stage,
    TaskEnvelope,
};
use contexten_testkit::broker::{BrokerFixture, envelope_from, source};
use contexten_testkit::{TestPrefix, machine_redis_url};
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};

/// A prefix with the topology declared (removed on drop) and a publisher as
/// the CLI's (no payload offload).
async fn setup() -> BrokerFixture {
    BrokerFixture::builder()
        .prefetch(1)
        .plain_publisher()
        .start()
        .await
}

fn envelope(text: &str) -> TaskEnvelope {
    envelope_from(source(SourceKind::OPERATOR, ReplyTarget::None), text)
}

async fn dead_letter(publisher: &Publisher, names: &Names, env: &TaskEnvelope, reason: &str) {
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_DEAD_REASON.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        HEADER_DEAD_DETAIL.into(),
        AMQPValue::LongString("the fake provider said 503".into()),
    );
    headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(4));
    contexten_testkit::broker::dead_letter(publisher, names, Stage::Generate, env, headers).await;
}

#[tokio::test]
async fn dead_letters_are_listed_in_place_then_replayed_with_attempts_reset() {
    let fx = setup().await;
    let (channel, publisher, names) = (&fx.channel, &fx.publisher, &fx.names);
    let (first, second) = (envelope("first"), envelope("second"));
    dead_letter(publisher, names, &first, "retries_exhausted").await;
    dead_letter(publisher, names, &second, "invalid_request").await;

    let letters = list_dead(channel, names, Stage::Generate, 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason, "retries_exhausted");
    assert_eq!(letters[0].detail, "the fake provider said 503");
    assert_eq!(
        letters[0].task_id.as_deref(),
        Some(first.task_id.to_string().as_str())
    );
    assert_eq!(letters[1].reason, "invalid_request");
    let again = list_dead(channel, names, Stage::Generate, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "listing leaves them in place");

    let stats = queue_stats(channel, names, QueueType::Classic)
        .await
        .unwrap();
    let dead = stats
        .iter()
        .find(|q| q.queue == names.dead_queue(Stage::Generate))
        .unwrap();
    assert_eq!(dead.ready, 2);

    let only_second = DeadFilter {
        task: Some(second.task_id.to_string()),
        ..DeadFilter::default()
    };
    let moved = dead_letters(
        channel,
        names,
        Stage::Generate,
        &only_second,
        usize::MAX,
        DeadAction::Replay(publisher),
    )
    .await
    .unwrap()
    .done
    .len();
    assert_eq!(moved, 1);
    let replayed = channel
        .basic_get(
            names.stage_queue(Stage::Generate).as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("replayed to the work queue");
    let back = TaskEnvelope::from_json(&replayed.delivery.data).unwrap();
    assert_eq!(back.task_id, second.task_id);
    assert_eq!(replayed.delivery.properties.priority(), &Some(3));
    let headers = replayed.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get(HEADER_ATTEMPT),
        Some(&AMQPValue::LongUInt(0))
    );
    assert!(!headers.contains_key(HEADER_DEAD_REASON));

    let purged = dead_letters(
        channel,
        names,
        Stage::Generate,
        &DeadFilter::default(),
        usize::MAX,
        DeadAction::Purge,
    )
    .await
    .unwrap();
    assert_eq!(purged.done.len(), 1);
    assert!(
        list_dead(channel, names, Stage::Generate, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_task_status_shows_its_timings_and_history() {
    // The status record goes with the prefix.
    let prefix = TestPrefix::new().clean_machine_redis();
    let url = machine_redis_url();
    let store = Store::new(
        &RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", url.as_str())])).unwrap(),
        Names::new(prefix.as_str()),
    )
    .unwrap();
    let mut env = envelope("status");
    assert!(task_status(&store, env.task_id).await.unwrap().is_none());
    env.timings.push(contexten_envelope::StageTiming {
        stage: Stage::Context,
        started_at_ms: 10,
        finished_at_ms: Some(25),
    });
    store
        .record_completion(Stage::Context, &env, "queued:generate")
        .await
        .unwrap();
    let status = task_status(&store, env.task_id).await.unwrap().unwrap();
    assert_eq!(status["state"], "queued:generate");
    assert_eq!(status["timings"]["context"]["finished_at_ms"], 25);
    assert_eq!(status["history"][0]["step"], "context:0");
}

#[tokio::test]
async fn the_redis_check_warns_when_records_may_be_evicted_or_a_cache_cannot_evict() {
    use contexten_testkit::{RedisNode, RedisOptions};
    // Wrong for both roles: records that may be evicted and lost on a restart,
    // a cache that refuses writes when full.
    let records = RedisNode::start(RedisOptions::default().policy("volatile-lru"))
        .await
        .unwrap();
    let cache = RedisNode::start(RedisOptions::default().policy("noeviction"))
        .await
        .unwrap();
    let settings = |records: &str, cache: &str| {
        RedisSettings::from_env(&Env::from_pairs([
            ("REDIS_URL", cache),
            ("REDIS_RECORDS_URL", records),
        ]))
        .unwrap()
    };
    let names = Names::new(format!("test-{}", uuid::Uuid::now_v7().simple()));
    let store = Store::new(&settings(&records.url(), &cache.url()), names.clone()).unwrap();
    let reports = redis_report(&store).await.unwrap();
    let roles: Vec<_> = reports.iter().map(|r| r.role).collect();
    assert_eq!(roles, ["records", "cache"]);
    assert_eq!(reports[0].policy.as_deref(), Some("volatile-lru"));
    let warnings = |i: usize| reports[i].warnings.join("; ");
    assert!(warnings(0).contains("noeviction"), "{}", warnings(0));
    assert!(warnings(0).contains("appendonly"), "{}", warnings(0));
    assert!(warnings(1).contains("allkeys-lru"), "{}", warnings(1));

    // What the chart deploys: nothing to say.
    let records = RedisNode::start(
        RedisOptions::default()
            .policy("noeviction")
            .appendonly(true),
    )
    .await
    .unwrap();
    let cache = RedisNode::start(RedisOptions::default().policy("allkeys-lru"))
        .await
        .unwrap();
    let store = Store::new(&settings(&records.url(), &cache.url()), names.clone()).unwrap();
    let reports = redis_report(&store).await.unwrap();
    assert!(reports.iter().all(|r| r.warnings.is_empty()), "{reports:?}");

    // One Redis for both roles: one report.
    let store = Store::new(&settings(&records.url(), &records.url()), names).unwrap();
    assert_eq!(redis_report(&store).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_reopening_replay_clears_only_the_dead_lettered_completion_mark() {
    let fx = setup().await;
    let (channel, publisher, names, store) = (&fx.channel, &fx.publisher, &fx.names, &fx.store);
    let (dead, done) = (envelope("dead"), envelope("done"));
    // What the runtime records when it dead-letters a message, and a real completion.
    store
        .record_completion(Stage::Generate, &dead, "dead_lettered:retries_exhausted")
        .await
        .unwrap();
    store
        .record_completion(Stage::Generate, &done, "queued:dispatch")
        .await
        .unwrap();
    dead_letter(publisher, names, &dead, "retries_exhausted").await;
    dead_letter(publisher, names, &done, "retries_exhausted").await;
    let touched = dead_letters(
        channel,
        names,
        Stage::Generate,
        &DeadFilter::default(),
        10,
        DeadAction::ReplayReopening(publisher, store),
    )
    .await
    .unwrap();
    assert_eq!(touched.done.len(), 2, "{:?}", touched.failed);
    let history = |status: serde_json::Value| status["history"].clone();
    let reopened = task_status(store, dead.task_id).await.unwrap().unwrap();
    assert_eq!(history(reopened), serde_json::json!([]), "the mark is gone");
    let kept = task_status(store, done.task_id).await.unwrap().unwrap();
    assert_eq!(history(kept)[0]["outcome"], "queued:dispatch");
}

/// Quorum mode (docs/design.md §3): every priority lane is listed, a letter
/// the broker dead-lettered at its delivery limit reads as `poison`, and a
/// replay lands in the stage's operator lane.
#[tokio::test]
async fn in_quorum_mode_lanes_are_listed_and_a_replay_lands_in_the_operator_lane() {
    let fx = BrokerFixture::builder()
        .prefetch(1)
        .plain_publisher()
        .env(&[("QUEUE_TYPE", "quorum")])
        .start()
        .await;
    let (channel, publisher, names) = (&fx.channel, &fx.publisher, &fx.names);

    let stats = queue_stats(channel, names, QueueType::Quorum)
        .await
        .unwrap();
    let lanes = contexten_broker::topology::work_queues(names, QueueType::Quorum, Stage::Generate);
    assert_eq!(lanes.len(), 4, "four priority lanes");
    for (lane, _) in &lanes {
        assert!(
            stats.iter().any(|q| &q.queue == lane && !q.dead),
            "{lane} is listed"
        );
    }

    // As the broker dead-letters at x-delivery-limit: only its x-death table.
    let env = envelope("poisoned");
    let mut death = FieldTable::default();
    death.insert(
        "reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
    );
    contexten_testkit::broker::dead_letter(publisher, names, Stage::Generate, &env, headers).await;
    let letters = list_dead(channel, names, Stage::Generate, 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "poison");

    let replayed = dead_letters(
        channel,
        names,
        Stage::Generate,
        &DeadFilter::default(),
        usize::MAX,
        DeadAction::Replay(publisher),
    )
    .await
    .unwrap();
    assert_eq!(replayed.done.len(), 1);
    let operator_lane = lanes
        .iter()
        .find(|(_, p)| *p == contexten_envelope::Priority::Operator)
        .map(|(q, _)| q.clone())
        .unwrap();
    let back = fx
        .take_envelope(&operator_lane, std::time::Duration::from_secs(5))
        .await;
    assert_eq!(back.task_id, env.task_id);
}
