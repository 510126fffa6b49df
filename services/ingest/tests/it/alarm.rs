//! A broker that blocks publishers (memory alarm on the test's own RabbitMQ
//! node, never the machine's): a webhook gets 503 with `Retry-After` within
//! 5 s, and the provider's retry is accepted once the alarm clears.

use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::{Stage, TaskEnvelope};
use contexten_testkit::{RabbitNode, RabbitOptions, eventually};
use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// The bound for a 503 while the broker blocks publishers.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn under_a_broker_memory_alarm_a_webhook_gets_503_within_5_s_and_is_accepted_once_it_clears()
{
    let node = RabbitNode::start(RabbitOptions::default())
        .await
        .expect("a RabbitMQ node of the test's own");
    // ingest publishes to the node (the default PUBLISH_CONFIRM_TIMEOUT_MS).
    let ingest = TestIngest::start_with(&[("AMQP_URL", &node.amqp_url())]).await;
    node.set_memory_alarm(true).await.unwrap();

    let body = github_comment(31, "/contexten generate a CSV reader", "octocat", "MEMBER");
    let delivery = uuid::Uuid::now_v7().to_string();
    for attempt in 0..2 {
        let started = tokio::time::Instant::now();
        let a = ingest.github("issue_comment", &delivery, &body).await;
        let took = started.elapsed();
        assert_eq!(
            (a.status, a.error()),
            (503, "broker_unavailable"),
            "attempt {attempt}: {}",
            a.json
        );
        assert_eq!(a.headers["retry-after"], "2");
        assert!(took < ANSWER_WITHIN, "attempt {attempt} took {took:?}");
        tracing::info!(attempt, ?took, "503 under the alarm");
    }

    node.set_memory_alarm(false).await.unwrap();
    let accepted = eventually(WAIT, "accepted once the alarm clears", || async {
        let a = ingest.github("issue_comment", &delivery, &body).await;
        if a.status != 202 {
            assert_eq!(a.status, 503, "{}", a.json);
            return None;
        }
        Some(a)
    })
    .await;
    let task_id = accepted.json["task_id"].as_str().unwrap().to_owned();

    // The task reached the node's generate queue (a publish that timed out
    // during the alarm may have left it there too, under the same task id).
    let connection = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = ingest.names.stage_queue(Stage::Generate);
    let mut tasks = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        tasks.push(
            TaskEnvelope::from_json(&message.delivery.data)
                .unwrap()
                .task_id
                .to_string(),
        );
    }
    assert!(!tasks.is_empty(), "nothing in {queue}");
    assert!(
        tasks.iter().all(|t| *t == task_id),
        "{tasks:?} vs {task_id}"
    );
    let _ = connection.close(200, "test done".into()).await;
}
