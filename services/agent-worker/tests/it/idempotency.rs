//! A redelivered create never starts a second run.

use crate::helpers::{RunningWorker, TestFleet, WAIT, task};
use contexten_broker::Outcome;
use contexten_envelope::{ReplyKind, TaskEnvelope};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_worker_killed_between_create_and_ack_does_not_start_a_second_run() {
    let fleet = TestFleet::start(&[]).await;
    fleet.fake.default_statuses(&["RUNNING", "COMPLETE"]);
    // The first replica creates and records the run, then dies before its
    // outcome is applied: nothing is published and the delivery is never acked.
    let doomed = fleet.handler();
    let shutdown = contexten_broker::CancellationToken::new();
    let kill = shutdown.clone();
    let handled = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = handled.clone();
    let options = contexten_broker::WorkerOptions {
        service: "doomed",
        stage: contexten_envelope::Stage::Agent,
        broker: fleet.broker.clone(),
        readiness: contexten_telemetry::health::Readiness::new(&["broker"]),
    };
    let first = RunningWorker::spawn_with(
        options,
        fleet.store.clone(),
        move |env: TaskEnvelope| {
            let doomed = doomed.clone();
            let kill = kill.clone();
            let signal = signal.clone();
            async move {
                let _ = doomed.handle_envelope(env).await;
                signal.notify_one();
                kill.cancel();
                std::future::pending::<Outcome>().await
            }
        },
        shutdown,
    );
    let t = task("implement feature: export to CSV");
    fleet.publish(&t).await;
    tokio::time::timeout(WAIT, handled.notified())
        .await
        .expect("the first replica handled the task");
    // SHUTDOWN_TIMEOUT_SECS=1: the stuck delivery is abandoned and, with the
    // connection closed, requeued by the broker.
    first.stop().await;
    assert_eq!(fleet.fake.creates().len(), 1);

    let second = fleet.spawn_agent();
    let answers = fleet
        .answers_until(WAIT, |taken| {
            taken.iter().any(|a| a.reply == Some(ReplyKind::Final))
        })
        .await;
    let last = answers
        .iter()
        .find(|a| a.reply == Some(ReplyKind::Final))
        .unwrap();
    assert_eq!(last.task_id, t.task_id);
    assert_eq!(
        fleet.fake.creates().len(),
        1,
        "the redelivery reused the recorded run"
    );
    let run_id = fleet.fake.gets()[0].1;
    assert_eq!(
        last.result.as_ref().unwrap().web_url.as_deref(),
        Some(format!("https://codegen.com/agent/trace/{run_id}").as_str())
    );
    assert!(answers.iter().any(|a| a.reply == Some(ReplyKind::Progress)));
    second.stop().await;
}

#[tokio::test]
async fn a_create_interrupted_before_it_was_recorded_is_found_instead_of_repeated() {
    let fleet = TestFleet::start(&[]).await;
    fleet.fake.default_statuses(&["COMPLETE"]);
    let t = task("add tests for the exporter");
    // Codegen started the run, but the replica died before recording it: only
    // the create claim (from long ago) is left in Redis.
    let run_id = fleet.fake.insert_run(json!({
        "source": "contexten", "task_id": t.task_id.to_string(), "correlation_id": t.correlation_id
    }));
    fleet.fake.insert_run(json!({"task_id": "someone-else"}));
    let key = fleet
        .names
        .redis_key(&["agent", "run", &t.task_id.to_string()]);
    let () = fleet
        .store
        .run(|| {
            let mut p = redis::pipe();
            p.hset(&key, "creating_at", 1).ignore();
            p
        })
        .await
        .unwrap();

    let worker = fleet.spawn_agent();
    fleet.publish(&t).await;
    let finals = fleet.finals(&[t.task_id], WAIT).await;
    let result = finals[&t.task_id].result.as_ref().unwrap();
    assert_eq!(
        result.web_url.as_deref(),
        Some(format!("https://codegen.com/agent/trace/{run_id}").as_str())
    );
    assert!(fleet.fake.creates().is_empty(), "no second run");
    assert_eq!(fleet.fake.lists(), 1);
    // A later redelivery finds the recorded run without asking Codegen again.
    fleet.publish(&t).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fleet.fake.creates().is_empty());
    assert_eq!(fleet.fake.lists(), 1);
    worker.stop().await;
}
