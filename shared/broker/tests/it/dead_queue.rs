//! Dead queues are bounded (`DEAD_QUEUE_MAX_LENGTH`, `reject-publish`), and a
//! dead queue declared before the bound existed is kept.

use crate::helpers::{TestBroker, WAIT, envelope};
use contexten_broker::{Outcome, Publisher, topology};
use contexten_envelope::Reason;
use contexten_envelope::{Names, ReplyKind, Stage, TaskEnvelope};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

#[tokio::test]
async fn a_full_dead_queue_refuses_more_dead_letters_and_every_requester_is_still_answered() {
    let broker = TestBroker::start_with(&[("DEAD_QUEUE_MAX_LENGTH", "1")]).await;
    let worker = broker.spawn_worker(Stage::Generate, |_env: TaskEnvelope| async {
        Outcome::dead(Reason::InvalidRequest, "no text")
    });
    let tasks = [envelope("one"), envelope("two"), envelope("three")];
    for task in &tasks {
        broker
            .publisher
            .publish(Stage::Generate, task)
            .await
            .unwrap();
    }
    let dispatch = broker.names.stage_queue(Stage::Dispatch);
    let mut answered = Vec::new();
    for _ in &tasks {
        let answer = TaskEnvelope::from_json(&broker.take(&dispatch).await.delivery.data).unwrap();
        assert_eq!(answer.reply, Some(ReplyKind::Failure));
        answered.push(answer.task_id);
    }
    answered.sort();
    let mut expected: Vec<_> = tasks.iter().map(|t| t.task_id).collect();
    expected.sort();
    assert_eq!(answered, expected);
    // One kept, the others refused (logged and counted), none left to loop.
    let dead = broker.names.dead_queue(Stage::Generate);
    assert_eq!(broker.depth(&dead).await, 1);
    assert_eq!(
        broker
            .depth(&broker.names.stage_queue(Stage::Generate))
            .await,
        0
    );
    assert!(broker.take_within(&dispatch, WAIT / 15).await.is_none());
    worker.stop().await;
}

#[tokio::test]
async fn a_dead_queue_declared_without_a_limit_is_kept_and_still_bound() {
    contexten_telemetry::init_for_tests();
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let names = Names::new(format!("test-{}", uuid::Uuid::now_v7().simple()));
    let env = contexten_config::Env::from_pairs([("CONTEXTEN_PREFIX", names.prefix())]);
    let settings = contexten_config::BrokerSettings::from_env(&env, 1).unwrap();
    // As a release before the limit declared it.
    let channel = connection.create_channel().await.unwrap();
    let dead = names.dead_queue(Stage::Generate);
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    topology::declare_for(&connection, &names, &settings)
        .await
        .expect("the old dead queue is kept");
    // Still bound: a dead letter reaches it (the publish is `mandatory`).
    let publisher = Publisher::new(&connection, names.clone(), None, usize::MAX)
        .await
        .unwrap();
    publisher
        .publish_raw(contexten_broker::PublishedMessage {
            exchange: names.dead_letter_exchange(),
            routing_key: Stage::Generate.as_str().into(),
            body: b"{}".to_vec(),
            properties: lapin::BasicProperties::default(),
        })
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(dead.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(queue.message_count(), 1);
    topology::delete(&channel, &names, &settings.retry_tiers)
        .await
        .unwrap();
    let _ = connection.close(200, "test done".into()).await;
}
