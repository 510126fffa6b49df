//! `QUEUE_TYPE=quorum` on the machine's single RabbitMQ node (quorum queues
//! need no cluster): every queue is a quorum queue, each stage has one queue
//! per priority lane, and the broker's delivery limit backs poison handling.
//! Each test's queues are under its own prefix and deleted with it.

use crate::helpers::{TestBroker, WAIT, envelope, headers};
use contexten_broker::{Outcome, dead_letter_reason, topology};
use contexten_config::QueueType;
use contexten_envelope::{HEADER_DEAD_REASON, Priority, ReplyKind, Stage, TaskEnvelope};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long the dispatch queue must stay quiet to count its messages as all.
const QUIET: Duration = Duration::from_secs(2);

pub async fn quorum(extra: &[(&str, &str)]) -> TestBroker {
    let mut env = vec![("QUEUE_TYPE", "quorum")];
    env.extend_from_slice(extra);
    TestBroker::start_with(&env).await
}

fn queue_type(kind: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(kind.as_bytes().to_vec())),
    );
    args
}

/// Declares `queue` durable with `args` on a channel of its own: `Ok` when
/// the broker agrees, else the reply code (406 = PRECONDITION_FAILED).
async fn redeclare(broker: &TestBroker, queue: &str, args: FieldTable) -> Result<(), u16> {
    let channel = broker.connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await;
    match declared {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(())
        }
        Err(error) => match error.kind() {
            lapin::ErrorKind::ProtocolError(e) => Err(e.get_id()),
            other => panic!("declaring {queue}: {other:?}"),
        },
    }
}

#[tokio::test]
async fn quorum_mode_declares_every_queue_as_a_quorum_queue_with_a_lane_per_priority() {
    let broker = quorum(&[]).await;
    assert_eq!(broker.settings.queue_type, QueueType::Quorum);
    let mut queues = Vec::new();
    for stage in Stage::QUEUED {
        let lanes = topology::work_queues(&broker.names, QueueType::Quorum, stage);
        assert_eq!(lanes.len(), 4, "one queue per priority lane");
        assert_eq!(lanes[3].0, broker.names.stage_queue(stage), "batch lane");
        queues.extend(lanes.into_iter().map(|(q, _)| q));
        queues.push(broker.names.dead_queue(stage));
    }
    for tier in &broker.settings.retry_tiers {
        queues.push(broker.names.retry_queue(*tier));
    }
    for queue in &queues {
        // The broker refuses to see an existing quorum queue as a classic one.
        assert_eq!(
            redeclare(&broker, queue, queue_type("classic")).await,
            Err(406),
            "{queue} is not a quorum queue"
        );
    }
    // Declaring the same topology again is a no-op.
    topology::declare_for(&broker.connection, &broker.names, &broker.settings)
        .await
        .expect("redeclared");
}

#[tokio::test]
async fn classic_mode_stays_one_classic_priority_queue_per_stage() {
    let broker = TestBroker::start().await;
    assert_eq!(broker.settings.queue_type, QueueType::Classic);
    let queue = broker.names.stage_queue(Stage::Generate);
    assert_eq!(
        redeclare(&broker, &queue, queue_type("quorum")).await,
        Err(406)
    );
    let lane = topology::lane_queue(&broker.names, Stage::Generate, Priority::Operator);
    assert!(topology::work_queues(&broker.names, QueueType::Classic, Stage::Generate).len() == 1);
    // No lane queues exist in classic mode: a passive declare of one fails.
    let channel = broker.connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    assert!(
        channel
            .queue_declare(lane.as_str().into(), passive, FieldTable::default())
            .await
            .is_err(),
        "{lane} exists in classic mode"
    );
    // Every priority still reaches the one queue.
    for priority in topology::LANES {
        let mut env = envelope("any lane");
        env.priority = priority;
        broker
            .publisher
            .publish(Stage::Generate, &env)
            .await
            .unwrap();
    }
    assert_eq!(broker.depth(&queue).await, 4);
}

#[tokio::test]
async fn the_publisher_routes_each_priority_to_its_lane() {
    let broker = quorum(&[]).await;
    for priority in topology::LANES {
        let mut env = envelope(priority.as_str());
        env.priority = priority;
        broker
            .publisher
            .publish(Stage::Context, &env)
            .await
            .unwrap();
    }
    for (queue, priority) in topology::work_queues(&broker.names, QueueType::Quorum, Stage::Context)
    {
        let got = broker.take(&queue).await;
        let env = TaskEnvelope::from_json(&got.delivery.data).unwrap();
        assert_eq!(env.priority, priority, "{queue}");
        assert_eq!(broker.depth(&queue).await, 0, "{queue}");
    }
}

/// Without any worker: a message returned more often than the delivery limit
/// is dead-lettered by the broker itself, kept (at-least-once), and read back
/// as `poison`.
#[tokio::test]
async fn the_broker_dead_letters_a_message_past_its_delivery_limit_as_poison() {
    let broker = quorum(&[("QUORUM_DELIVERY_LIMIT", "2")]).await;
    let mut env = envelope("returned again and again");
    env.priority = Priority::Interactive;
    broker
        .publisher
        .publish(Stage::Generate, &env)
        .await
        .unwrap();
    let lane = topology::lane_queue(&broker.names, Stage::Generate, Priority::Interactive);
    let channel = broker.connection.create_channel().await.unwrap();
    let mut deliveries = 0;
    let mut counts = Vec::new();
    while let Some(got) = channel
        .basic_get(lane.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        deliveries += 1;
        counts.push(headers(&got).get("x-delivery-count").cloned());
        assert!(deliveries <= 10, "never dead-lettered: {counts:?}");
        got.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
    }
    // A delivery, then one per allowed return: the last one carries the limit.
    assert_eq!(deliveries, 3, "{counts:?}");
    let dead = broker.take(&broker.names.dead_queue(Stage::Generate)).await;
    let reason = dead_letter_reason(dead.delivery.properties.headers().as_ref());
    assert_eq!(reason.as_deref(), Some("poison"));
    assert_eq!(
        TaskEnvelope::from_json(&dead.delivery.data)
            .unwrap()
            .task_id,
        env.task_id
    );
}

/// The runtime reads the broker's count: on the last delivery the limit
/// allows it sets the message aside itself, with one failure answer, even
/// though `MAX_DELIVERIES` (counted in Redis) is far from reached.
#[tokio::test]
async fn a_panicking_task_is_dead_lettered_at_the_delivery_limit_with_one_failure_answer() {
    let broker = quorum(&[("QUORUM_DELIVERY_LIMIT", "2"), ("MAX_DELIVERIES", "10")]).await;
    let handled = Arc::new(AtomicU32::new(0));
    let count = handled.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let count = count.clone();
        async move {
            if env.request.text.contains("crash") {
                count.fetch_add(1, Ordering::SeqCst);
                panic!("a handler bug");
            }
            Outcome::forward(Stage::Dispatch, env)
        }
    });
    let mut poison = envelope("please crash");
    poison.priority = Priority::Operator;
    broker
        .publisher
        .publish(Stage::Generate, &poison)
        .await
        .unwrap();

    let dead = broker.take(&broker.names.dead_queue(Stage::Generate)).await;
    assert_eq!(headers(&dead)[HEADER_DEAD_REASON], "poison");
    assert!(
        headers(&dead)["x-contexten-dead-detail"].contains("QUORUM_DELIVERY_LIMIT 2"),
        "{:?}",
        headers(&dead)
    );
    assert_eq!(handled.load(Ordering::SeqCst), 2, "handler runs");
    let answer = broker
        .take_from_stage(Stage::Dispatch, WAIT)
        .await
        .expect("an answer");
    let answer = TaskEnvelope::from_json(&answer.delivery.data).unwrap();
    assert_eq!(
        (answer.task_id, answer.reply),
        (poison.task_id, Some(ReplyKind::Failure))
    );
    assert_eq!(
        answer.result.unwrap().summary,
        contexten_broker::failure_text(Stage::Generate, "poison", None)
    );
    assert!(
        broker
            .take_from_stage(Stage::Dispatch, QUIET)
            .await
            .is_none(),
        "one answer only"
    );
    worker.stop().await;
    for (queue, _) in topology::work_queues(&broker.names, QueueType::Quorum, Stage::Generate) {
        assert_eq!(broker.depth(&queue).await, 0, "{queue}");
    }
}

/// A delayed retry goes through a quorum delay tier (per-message TTL) and
/// comes back to its own lane.
#[tokio::test]
async fn a_retry_waits_in_a_quorum_delay_tier_and_returns_to_its_lane() {
    let broker = quorum(&[]).await;
    let calls = Arc::new(AtomicU32::new(0));
    let count = calls.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let count = count.clone();
        async move {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                return Outcome::retry(
                    Duration::from_millis(300),
                    contexten_envelope::Reason::RateLimited,
                    "try later",
                );
            }
            Outcome::forward(Stage::Dispatch, env)
        }
    });
    let mut env = envelope("retry me");
    env.priority = Priority::Interactive;
    broker
        .publisher
        .publish(Stage::Generate, &env)
        .await
        .unwrap();
    let lane = topology::lane_queue(&broker.names, Stage::Dispatch, Priority::Interactive);
    let got = broker
        .take_within(&lane, WAIT)
        .await
        .expect("forwarded after the retry");
    let forwarded = TaskEnvelope::from_json(&got.delivery.data).unwrap();
    assert_eq!(forwarded.task_id, env.task_id);
    assert_eq!(forwarded.priority, Priority::Interactive);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    worker.stop().await;
}

/// A republished copy (an operator's replay, a payload retry) may carry the
/// old message's `x-delivery-count`: on a first delivery it is not the
/// broker's count of this message, and the task is handled.
#[tokio::test]
async fn a_copied_delivery_count_on_a_first_delivery_is_not_taken_for_returns() {
    let broker = quorum(&[("QUORUM_DELIVERY_LIMIT", "2")]).await;
    let worker = broker.spawn_worker(Stage::Generate, |env: TaskEnvelope| async move {
        Outcome::forward(Stage::Dispatch, env)
    });
    let env = envelope("replayed");
    let mut table = FieldTable::default();
    table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(50));
    broker
        .publisher
        .publish_raw(contexten_broker::PublishedMessage {
            exchange: broker.names.work_exchange(),
            routing_key: topology::routing_key(Stage::Generate, env.priority),
            body: env.to_json(),
            properties: lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(table),
        })
        .await
        .unwrap();
    let forwarded = broker
        .take_from_stage(Stage::Dispatch, WAIT)
        .await
        .expect("handled, not set aside");
    let forwarded = TaskEnvelope::from_json(&forwarded.delivery.data).unwrap();
    assert_eq!(forwarded.task_id, env.task_id);
    assert_eq!(
        broker
            .depth(&broker.names.dead_queue(Stage::Generate))
            .await,
        0
    );
    worker.stop().await;
}
