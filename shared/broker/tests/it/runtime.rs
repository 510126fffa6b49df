use crate::helpers::*;
use contexten_broker::{Delivery, Outcome, topology};
use contexten_envelope::Reason;
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_AT_MS, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, HEADER_PAYLOAD_REF,
    Priority, ReplyKind, ResultKind, Stage, TaskEnvelope,
};
use contexten_telemetry::propagation::trace_id_of;
use contexten_testkit::{eventually, machine_amqp_url};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn declaring_the_topology_twice_is_harmless() {
    let broker = TestBroker::start().await;
    topology::declare(&broker.channel, &broker.names, &broker.settings.retry_tiers)
        .await
        .unwrap();
    topology::declare(&broker.channel, &broker.names, &broker.settings.retry_tiers)
        .await
        .unwrap();
    for stage in Stage::QUEUED {
        let env = envelope(stage.as_str());
        broker.publisher.publish(stage, &env).await.unwrap();
        let got = broker.take(&broker.names.stage_queue(stage)).await;
        let back = TaskEnvelope::from_json(&got.delivery.data).unwrap();
        assert_eq!(back.request.text, stage.as_str());
        assert_eq!(broker.depth(&broker.names.dead_queue(stage)).await, 0);
    }
}

#[tokio::test]
async fn a_delayed_message_waits_in_exactly_one_tier_and_arrives_once() {
    let broker = TestBroker::start().await;
    let deliveries = Arc::new(AtomicU32::new(0));
    let seen = deliveries.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            if env.hop == 0 {
                Outcome::later(Stage::Generate, Duration::from_millis(50), env)
            } else {
                Outcome::Done
            }
        }
    });
    broker
        .publisher
        .publish(Stage::Generate, &envelope("later"))
        .await
        .unwrap();
    eventually(WAIT, "two deliveries", || async {
        deliveries.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Long enough for copies in the other tiers (the longest is 1 s) to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        deliveries.load(Ordering::SeqCst),
        2,
        "the first delivery and one delayed copy"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error() {
    let broker = TestBroker::start().await;
    let result = broker
        .publisher
        .publish_raw(contexten_broker::PublishedMessage {
            exchange: broker.names.work_exchange(),
            routing_key: "no-such-stage".into(),
            body: b"{}".to_vec(),
            properties: Default::default(),
        })
        .await;
    assert!(
        matches!(
            result,
            Err(contexten_broker::BrokerError::Unroutable { .. })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn transient_publishes_skip_persistence_and_keep_everything_else() {
    let broker = TestBroker::start().await;
    let env = envelope("on it");
    broker
        .publisher
        .publish_transient(Stage::Dispatch, &env)
        .await
        .unwrap();
    broker
        .publisher
        .publish(Stage::Dispatch, &env)
        .await
        .unwrap();
    let queue = broker.names.stage_queue(Stage::Dispatch);
    let (transient, persistent) = (broker.take(&queue).await, broker.take(&queue).await);
    assert_eq!(transient.delivery.properties.delivery_mode(), &Some(1));
    assert_eq!(persistent.delivery.properties.delivery_mode(), &Some(2));
    for message in [&transient, &persistent] {
        let props = &message.delivery.properties;
        assert_eq!(
            props.message_id().as_ref().map(|m| m.as_str()),
            Some(env.message_id(Stage::Dispatch).as_str())
        );
        assert_eq!(props.priority(), &Some(env.priority.amqp()));
        let got = contexten_envelope::TaskEnvelope::from_json(&message.delivery.data).unwrap();
        assert_eq!(got.task_id, env.task_id);
    }
}

#[tokio::test]
async fn messages_published_together_are_confirmed_one_by_one_in_order() {
    let broker = TestBroker::start().await;
    let publisher = &broker.publisher;
    let task = envelope("parse durations");
    let mut ack = task.clone();
    ack.reply = Some(ReplyKind::Ack);
    let messages = vec![
        contexten_broker::PublishedMessage {
            exchange: broker.names.work_exchange(),
            routing_key: "no-such-stage".into(),
            body: b"{}".to_vec(),
            properties: Default::default(),
        },
        publisher
            .message(Stage::Generate, &task, Delivery::Persistent)
            .await
            .unwrap(),
        publisher
            .message(Stage::Dispatch, &ack, Delivery::Transient)
            .await
            .unwrap(),
    ];
    let pending = publisher.publish_together(messages).await.unwrap();
    assert_eq!(pending.len(), 3);
    let results = futures_util::future::join_all(pending.into_iter().map(|p| p.confirmed())).await;
    assert!(
        matches!(
            &results[0],
            Err(contexten_broker::BrokerError::Unroutable { routing_key, .. }) if routing_key == "no-such-stage"
        ),
        "only the unroutable message fails: {:?}",
        results[0]
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let generated = broker
        .take(&broker.names.stage_queue(Stage::Generate))
        .await;
    let dispatched = broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    assert_eq!(generated.delivery.properties.delivery_mode(), &Some(2));
    assert_eq!(dispatched.delivery.properties.delivery_mode(), &Some(1));
    let got_task = TaskEnvelope::from_json(&generated.delivery.data).unwrap();
    let got_ack = TaskEnvelope::from_json(&dispatched.delivery.data).unwrap();
    assert_eq!((got_task.task_id, got_task.reply), (task.task_id, None));
    assert_eq!(
        (got_ack.task_id, got_ack.reply),
        (task.task_id, Some(ReplyKind::Ack))
    );
}

#[tokio::test]
async fn a_publisher_on_several_channels_confirms_every_message_and_notices_a_closed_channel() {
    let broker = TestBroker::start().await;
    let publisher = contexten_broker::Publisher::with_channels(
        &broker.connection,
        broker.names.clone(),
        None,
        usize::MAX,
        3,
    )
    .await
    .unwrap();
    let sent: Vec<TaskEnvelope> = (0..12).map(|i| envelope(&format!("request {i}"))).collect();
    let results =
        futures_util::future::join_all(sent.iter().map(|e| publisher.publish(Stage::Generate, e)))
            .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let queue = broker.names.stage_queue(Stage::Generate);
    let mut received = std::collections::HashSet::new();
    for _ in 0..sent.len() {
        let message = broker.take(&queue).await;
        let env: TaskEnvelope = serde_json::from_slice(&message.delivery.data).unwrap();
        received.insert(env.task_id);
    }
    assert_eq!(
        received,
        sent.iter().map(|e| e.task_id).collect(),
        "every message arrived once"
    );
    assert!(publisher.is_connected());
    // A channel-level error (publishing to a missing exchange) closes one channel.
    let mut failed = false;
    for _ in 0..3 {
        let r = publisher
            .publish_raw(contexten_broker::PublishedMessage {
                exchange: "no-such-exchange".into(),
                routing_key: "x".into(),
                body: b"{}".to_vec(),
                properties: Default::default(),
            })
            .await;
        failed |= r.is_err();
        if !publisher.is_connected() {
            break;
        }
    }
    assert!(failed, "publishing to a missing exchange fails");
    assert!(
        !publisher.is_connected(),
        "a closed channel makes the publisher report itself disconnected"
    );
}

#[tokio::test]
async fn an_envelope_passes_two_stages_intact_with_its_trace_context() {
    let broker = TestBroker::start().await;
    let context = broker.spawn_worker(Stage::Context, |env: TaskEnvelope| async move {
        Outcome::forward(Stage::Generate, env)
    });
    let generate = broker.spawn_worker(Stage::Generate, |env: TaskEnvelope| async move {
        Outcome::forward(Stage::Dispatch, env)
    });
    let mut sent = envelope("add a parse_duration function");
    sent.priority = Priority::Interactive;
    sent.extra
        .insert("from_the_future".into(), serde_json::json!({"kept": true}));
    broker
        .publish_raw(
            Stage::Context,
            &sent.to_json(),
            &[("traceparent", TRACEPARENT)],
        )
        .await;

    let got = broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    let received = TaskEnvelope::from_json(&got.delivery.data).unwrap();
    assert_eq!(received.task_id, sent.task_id);
    assert_eq!(received.request, sent.request);
    assert_eq!(received.source, sent.source);
    assert_eq!(
        received.extra["from_the_future"],
        serde_json::json!({"kept": true})
    );
    assert_eq!(received.hop, 2);
    let stages: Vec<Stage> = received.timings.iter().map(|t| t.stage).collect();
    assert_eq!(stages, vec![Stage::Context, Stage::Generate]);
    assert!(
        received
            .timings
            .iter()
            .all(|t| t.finished_at_ms >= Some(t.started_at_ms))
    );

    let props = &got.delivery.properties;
    assert_eq!(props.priority(), &Some(Priority::Interactive.amqp()));
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(
        props.message_id().as_ref().map(|m| m.as_str().to_owned()),
        Some(received.message_id(Stage::Dispatch))
    );
    let traceparent = headers(&got)
        .remove("traceparent")
        .expect("traceparent header");
    assert_eq!(
        trace_id_of(&traceparent),
        trace_id_of(TRACEPARENT),
        "same trace: {traceparent}"
    );
    assert_ne!(traceparent, TRACEPARENT, "each hop is a new span");

    // The status record follows the task; it is written right after the
    // successor is confirmed, so it may trail the message by a moment.
    let conn = broker.store.connection().await.unwrap();
    let state: String = eventually(WAIT, "the generate stage's timing recorded", || {
        let mut conn = conn.clone();
        let key = broker.names.status_key(sent.task_id);
        async move {
            redis::cmd("HGET")
                .arg(key)
                .arg("timing:generate")
                .query_async::<Option<String>>(&mut conn)
                .await
                .unwrap()
        }
    })
    .await;
    assert!(state.contains("started_at_ms"), "{state}");

    context.stop().await;
    generate.stop().await;
}

#[tokio::test]
async fn a_retried_message_returns_after_the_delay_and_is_dead_lettered_after_the_maximum() {
    let broker = TestBroker::start().await;
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let record = seen.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let record = record.clone();
        async move {
            record.lock().await.push((env.attempt, Instant::now()));
            Outcome::retry(
                Duration::from_millis(150),
                Reason::ProviderUnavailable,
                "the fake provider said 503",
            )
        }
    });
    let sent = envelope("flaky");
    broker
        .publisher
        .publish(Stage::Generate, &sent)
        .await
        .unwrap();

    let dead = broker.take(&broker.names.dead_queue(Stage::Generate)).await;
    let dead_headers = headers(&dead);
    assert_eq!(dead_headers[HEADER_DEAD_REASON], "retries_exhausted");
    assert!(
        dead_headers[HEADER_DEAD_DETAIL].contains("provider_unavailable"),
        "{dead_headers:?}"
    );
    assert_eq!(dead_headers[HEADER_ATTEMPT], "2");
    // When it was dead-lettered: the operator CLI's `--older-than`.
    let dead_at =
        dead.delivery.properties.headers().as_ref().unwrap().inner()[HEADER_DEAD_AT_MS].clone();
    let now = i64::try_from(contexten_envelope::now_ms()).unwrap();
    assert!(
        matches!(dead_at, lapin::types::AMQPValue::LongLongInt(at) if now - at < 60_000),
        "{dead_at:?}"
    );
    assert_eq!(
        TaskEnvelope::from_json(&dead.delivery.data)
            .unwrap()
            .task_id,
        sent.task_id
    );

    let seen = seen.lock().await.clone();
    let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        attempts,
        vec![0, 1, 2],
        "MAX_ATTEMPTS=3 runs, each with the attempt count raised"
    );
    for pair in seen.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= Duration::from_millis(150),
            "waited the delay"
        );
    }

    // The requester still gets an answer: a failure through dispatch.
    let answer = broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    let answer = TaskEnvelope::from_json(&answer.delivery.data).unwrap();
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    let result = answer.result.unwrap();
    assert_eq!(result.kind, ResultKind::Failure);
    assert_eq!(result.reason.as_deref(), Some("retries_exhausted"));
    assert!(
        result.summary.contains("`provider_unavailable`")
            && !result.summary.contains("fake provider"),
        "the last code, not its words: {}",
        result.summary
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_task_is_answered_with_its_reason_code_and_none_of_the_detail() {
    let broker = TestBroker::start().await;
    let detail = "git fetch failed: fatal: unable to access 'http://10.1.2.3/x': \
                  /var/lib/contexten/repos/ab12.git: Permission denied\n\
                  stack backtrace:\n   0: context_worker::fetch at src/lib.rs:42";
    let worker = broker.spawn_worker(Stage::Context, move |_env: TaskEnvelope| async move {
        Outcome::dead(Reason::RepositoryNotFound, detail)
    });
    let sent = envelope("read my repository");
    broker
        .publisher
        .publish(Stage::Context, &sent)
        .await
        .unwrap();

    let answer = broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    let answer = TaskEnvelope::from_json(&answer.delivery.data).unwrap();
    assert_eq!(answer.task_id, sent.task_id);
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    let answered = String::from_utf8_lossy(&answer.to_json()).into_owned();
    let result = answer.result.unwrap();
    assert_eq!(result.reason.as_deref(), Some("repository_not_found"));
    assert_eq!(
        result.summary,
        "Sorry, your request could not be completed: the repository could not be found, \
         or this deployment has no access to it."
    );
    for leak in [
        "git fetch",
        "fatal",
        "10.1.2.3",
        "/var/lib/contexten",
        "Permission denied",
        "backtrace",
        "src/lib.rs",
    ] {
        assert!(!answered.contains(leak), "{leak:?} reached the answer");
    }
    // The detail is kept where operators look: the dead letter's header.
    let dead = broker.take(&broker.names.dead_queue(Stage::Context)).await;
    let dead_headers = headers(&dead);
    assert_eq!(dead_headers[HEADER_DEAD_REASON], "repository_not_found");
    assert!(dead_headers[HEADER_DEAD_DETAIL].contains("10.1.2.3"));
    worker.stop().await;
}

#[tokio::test]
async fn unknown_versions_and_non_json_are_dead_lettered_with_a_reason() {
    let broker = TestBroker::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let worker = broker.spawn_worker(Stage::Context, move |_env: TaskEnvelope| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Outcome::Done }
    });
    let mut future = serde_json::to_value(envelope("from v2")).unwrap();
    future["v"] = serde_json::json!(2);
    let future = serde_json::to_vec(&future).unwrap();
    broker
        .publish_raw(Stage::Context, b"\xff not json at all", &[])
        .await;
    broker.publish_raw(Stage::Context, &future, &[]).await;

    let dead_queue = broker.names.dead_queue(Stage::Context);
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let dead = broker.take(&dead_queue).await;
        let h = headers(&dead);
        reasons.push((h[HEADER_DEAD_REASON].clone(), dead.delivery.data.clone()));
    }
    reasons.sort();
    assert_eq!(reasons[0].0, "invalid_json");
    assert_eq!(
        reasons[0].1, b"\xff not json at all",
        "the bytes are kept for inspection"
    );
    assert_eq!(reasons[1].0, "unknown_version");
    assert_eq!(reasons[1].1, future);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never sees them"
    );
    worker.stop().await;
}

fn upstream_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5672)
    )
}

#[tokio::test]
async fn a_connection_dropped_mid_handling_loses_nothing_and_the_effect_happens_once() {
    let broker = TestBroker::start().await;
    let proxy = CuttableProxy::start(&upstream_of(&machine_amqp_url())).await;
    let started = Arc::new(Notify::new());
    let proceed = Arc::new(Notify::new());
    let calls = Arc::new(AtomicU32::new(0));
    let (s, p, c) = (started.clone(), proceed.clone(), calls.clone());
    let worker = broker.spawn_worker_with(
        broker.settings_via(&proxy.url),
        Stage::Generate,
        move |env: TaskEnvelope| {
            let (s, p, c) = (s.clone(), p.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    s.notify_one();
                    p.notified().await;
                }
                Outcome::forward(Stage::Dispatch, env)
            }
        },
    );
    let sent = envelope("survive a dropped connection");
    broker
        .publisher
        .publish(Stage::Generate, &sent)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .expect("handler started");
    assert!(worker.readiness.is_ready("broker"));
    proxy.cut();
    proceed.notify_one();

    let got = broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    assert_eq!(
        TaskEnvelope::from_json(&got.delivery.data).unwrap().task_id,
        sent.task_id
    );
    assert!(
        broker
            .take_within(
                &broker.names.stage_queue(Stage::Dispatch),
                Duration::from_secs(1)
            )
            .await
            .is_none(),
        "forwarded exactly once"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "redelivered after the reconnect"
    );
    assert_eq!(
        broker
            .depth(&broker.names.stage_queue(Stage::Generate))
            .await,
        0
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_that_was_completed_is_not_handled_again() {
    let broker = TestBroker::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let worker = broker.spawn_worker(Stage::Agent, move |env: TaskEnvelope| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Outcome::forward(Stage::Dispatch, env) }
    });
    let sent = envelope("only once");
    // The same message twice, as after a crash between the completion record and the ack.
    broker.publisher.publish(Stage::Agent, &sent).await.unwrap();
    broker
        .take(&broker.names.stage_queue(Stage::Dispatch))
        .await;
    // The successor is confirmed before the completion record is written: wait
    // for the record, as a real redelivery comes after it.
    eventually(WAIT, "completion recorded", || async {
        broker.store.is_complete(Stage::Agent, &sent).await.unwrap()
    })
    .await;
    broker.publisher.publish(Stage::Agent, &sent).await.unwrap();
    eventually(WAIT, "the agent queue drained", || async {
        broker.depth(&broker.names.stage_queue(Stage::Agent)).await == 0
    })
    .await;
    assert!(
        broker
            .take_within(
                &broker.names.stage_queue(Stage::Dispatch),
                Duration::from_millis(500)
            )
            .await
            .is_none()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    worker.stop().await;
}

#[tokio::test]
async fn high_priority_tasks_are_delivered_first() {
    high_priority_first(TestBroker::start_with(&[("WORKER_PREFETCH", "1")]).await).await;
}

/// The same test on quorum queues, which have no priorities: one queue per
/// lane, the runtime starting the highest lane first (docs/design.md §3).
#[tokio::test]
async fn high_priority_tasks_are_delivered_first_in_quorum_mode() {
    let broker = crate::quorum::quorum(&[("WORKER_PREFETCH", "1")]).await;
    high_priority_first(broker).await;
}

async fn high_priority_first(broker: TestBroker) {
    for i in 0..100 {
        let mut env = envelope(&format!("low {i}"));
        env.priority = Priority::Batch;
        broker
            .publisher
            .publish(Stage::Generate, &env)
            .await
            .unwrap();
    }
    for i in 0..10 {
        let mut env = envelope(&format!("high {i}"));
        env.priority = Priority::Interactive;
        broker
            .publisher
            .publish(Stage::Generate, &env)
            .await
            .unwrap();
    }
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = order.clone();
    let settings = TestBroker::settings_with_prefetch(&broker, 1);
    let worker = broker.spawn_worker_with(settings, Stage::Generate, move |env: TaskEnvelope| {
        let record = record.clone();
        async move {
            record.lock().await.push(env.request.text.clone());
            Outcome::Done
        }
    });
    eventually(WAIT, "110 tasks handled", || async {
        order.lock().await.len() >= 110
    })
    .await;
    let order = order.lock().await.clone();
    assert_eq!(order.len(), 110);
    assert!(
        order[..10].iter().all(|t| t.starts_with("high")),
        "{:?}",
        &order[..12]
    );
    worker.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_acks_in_flight_work() {
    let broker = TestBroker::start().await;
    let started = Arc::new(AtomicU32::new(0));
    let counter = started.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            Outcome::forward(Stage::Dispatch, env)
        }
    });
    for i in 0..3 {
        broker
            .publisher
            .publish(Stage::Generate, &envelope(&format!("slow {i}")))
            .await
            .unwrap();
    }
    eventually(WAIT, "three in flight", || async {
        started.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(started.load(Ordering::SeqCst), 3, "all three in flight");
    worker.stop().await;
    // Stopped: everything in flight was finished, forwarded and acked.
    assert_eq!(
        broker
            .depth(&broker.names.stage_queue(Stage::Dispatch))
            .await,
        3
    );
    assert_eq!(
        broker
            .depth(&broker.names.stage_queue(Stage::Generate))
            .await,
        0
    );
}

#[tokio::test]
async fn a_large_envelope_travels_by_reference_through_redis() {
    let broker = TestBroker::start().await;
    let worker = broker.spawn_worker(Stage::Context, |env: TaskEnvelope| async move {
        Outcome::forward(Stage::Generate, env)
    });
    let big = "x".repeat(300 * 1024);
    broker
        .publisher
        .publish(Stage::Context, &envelope(&big))
        .await
        .unwrap();
    let got = broker
        .take(&broker.names.stage_queue(Stage::Generate))
        .await;
    assert!(
        got.delivery.data.is_empty(),
        "the body stays out of the broker"
    );
    let key = headers(&got)
        .remove(HEADER_PAYLOAD_REF)
        .expect("payload reference header");
    let body = broker.store.get_payload(&key).await.unwrap();
    let env = TaskEnvelope::from_json(&body).unwrap();
    assert_eq!(env.request.text.len(), big.len());
    assert_eq!(
        env.timings.len(),
        1,
        "the worker read it through the reference"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_delay_above_the_first_tier_waits_in_its_own_tier_only() {
    // Regression: while the tier header started with `x-`, the headers exchange
    // ignored it, every tier queue got a copy, and the copy in the shortest tier
    // came back first.
    let broker = TestBroker::start().await;
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let record = seen.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let record = record.clone();
        async move {
            record.lock().await.push((env.attempt, Instant::now()));
            if env.attempt == 0 {
                Outcome::retry(Duration::from_secs(1), Reason::RateLimited, "wait a second")
            } else {
                Outcome::Done
            }
        }
    });
    broker
        .publisher
        .publish(Stage::Generate, &envelope("slow down"))
        .await
        .unwrap();
    eventually(WAIT, "the retry came back", || async {
        seen.lock().await.len() >= 2
    })
    .await;
    // A stray copy from another tier would show up within the longest tier.
    const STRAY_COPY_WINDOW: Duration = Duration::from_millis(1500);
    tokio::time::sleep(STRAY_COPY_WINDOW).await;
    let seen = seen.lock().await.clone();
    assert_eq!(seen.len(), 2, "one retry, not one per tier: {seen:?}");
    let gap = seen[1].1 - seen[0].1;
    assert!(gap >= Duration::from_secs(1), "came back after {gap:?}");
    worker.stop().await;
}
