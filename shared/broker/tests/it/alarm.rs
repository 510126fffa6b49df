//! Publishing while the broker blocks publishers: the test's own RabbitMQ node
//! (never the machine's) with its memory alarm raised.

use contexten_broker::{BrokerError, Publisher, topology};
use contexten_envelope::{Names, Stage};
use contexten_testkit::{RabbitNode, RabbitOptions, eventually};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

use crate::helpers::{WAIT, envelope};

/// The confirm timeout the test sets (short, so the test is quick).
const CONFIRM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Room for a loaded machine on top of the timeout.
const SLACK: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_publish_under_a_memory_alarm_times_out_and_works_again_once_it_clears() {
    contexten_telemetry::init_for_tests();
    let node = RabbitNode::start(RabbitOptions::default())
        .await
        .expect("a RabbitMQ node of the test's own");
    let connection = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let names = Names::new(format!("test-{}", uuid::Uuid::now_v7().simple()));
    let channel = connection.create_channel().await.unwrap();
    topology::declare(&channel, &names, &[Duration::from_millis(200)])
        .await
        .unwrap();
    let publisher = Publisher::new(&connection, names.clone(), None, usize::MAX)
        .await
        .unwrap()
        .with_confirm_timeout(CONFIRM_TIMEOUT);
    publisher
        .publish(Stage::Generate, &envelope("before the alarm"))
        .await
        .unwrap();

    node.set_memory_alarm(true).await.unwrap();
    // The broker blocks a connection when it next publishes (a publish it has
    // read may still be confirmed); from then on nothing is confirmed.
    let mut sent = vec!["before the alarm".to_owned()];
    let mut refused = None;
    for i in 0..5 {
        let text = format!("during the alarm {i}");
        let started = tokio::time::Instant::now();
        let result = publisher.publish(Stage::Generate, &envelope(&text)).await;
        let waited = started.elapsed();
        assert!(waited <= CONFIRM_TIMEOUT + SLACK, "waited {waited:?}");
        tracing::info!(i, ?waited, ok = result.is_ok(), "publish under the alarm");
        match result {
            Ok(()) => sent.push(text),
            // Written, so it arrives once the alarm clears.
            Err(BrokerError::ConfirmTimeout(_)) => {
                sent.push(text);
                refused = Some(waited);
                break;
            }
            Err(BrokerError::Blocked) => {
                refused = Some(waited);
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused.is_some(), "every publish was confirmed: {sent:?}");
    // The broker has said so (connection.blocked): the next publish fails at once.
    let started = tokio::time::Instant::now();
    let again = publisher
        .publish(Stage::Generate, &envelope("refused at once"))
        .await;
    assert!(
        matches!(again, Err(BrokerError::Blocked)),
        "{again:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(publisher.is_blocked());

    node.set_memory_alarm(false).await.unwrap();
    let after = envelope("after the alarm");
    eventually(WAIT, "a publish after the alarm", || {
        publisher.publish(Stage::Generate, &after)
    })
    .await;
    // Every message written is in the queue, in order (a timed-out one's frames
    // left when the alarm cleared); the ones refused at once are not.
    sent.push("after the alarm".to_owned());
    let queue = names.stage_queue(Stage::Generate);
    let mut texts = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let env = contexten_envelope::TaskEnvelope::from_json(&message.delivery.data).unwrap();
        texts.push(env.request.text);
    }
    assert_eq!(texts, sent, "queue {queue}");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    assert!(
        channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok()
    );
    let _ = connection.close(200, "test done".into()).await;
}
