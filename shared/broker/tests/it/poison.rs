//! Poison messages: a task whose handling kills the worker is dead-lettered as
//! `poison` after `MAX_DELIVERIES` deliveries, with one failure answer, and the
//! queue moves on. The worker is a child process (`contexten-abort-worker`)
//! started again after each abort, as Kubernetes restarts a crashed pod.

use crate::helpers::{TIERS_MS, TestBroker, WAIT, envelope, headers};
use contexten_envelope::{HEADER_DEAD_REASON, ReplyKind, Stage, TaskEnvelope};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A task whose request text contains this aborts the test worker (the same
/// mark as in `tests/bin/abort_worker.rs`).
const ABORT_MARK: &str = "[abort-worker: abort]";
/// `MAX_DELIVERIES` for the test (low, so it is quick).
const MAX_DELIVERIES: u32 = 3;
/// Upper bound for the whole restart loop.
const RESTARTS_WAIT: Duration = Duration::from_secs(90);
/// How long the dispatch queue must stay quiet to count its messages as all.
const QUIET: Duration = Duration::from_secs(2);

fn start_worker(broker: &TestBroker, extra: &[(&str, &str)]) -> Child {
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Command::new(env!("CARGO_BIN_EXE_contexten-abort-worker"))
        .envs(extra.iter().copied())
        .env("AMQP_URL", amqp)
        .env("REDIS_URL", redis)
        .env("CONTEXTEN_PREFIX", broker.names.prefix())
        .env("RETRY_TIERS_MS", TIERS_MS)
        .env(
            "MAX_DELIVERIES",
            extra
                .iter()
                .find(|(k, _)| *k == "MAX_DELIVERIES")
                .map_or(MAX_DELIVERIES.to_string(), |(_, v)| (*v).to_owned()),
        )
        // One delivery at a time, so the normal task waits behind the poison one.
        .env("WORKER_PREFETCH", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the abort worker starts")
}

#[tokio::test]
async fn a_task_that_aborts_the_worker_is_dead_lettered_as_poison_with_one_failure_answer() {
    aborts_until_poison(TestBroker::start().await, &[], MAX_DELIVERIES).await;
}

/// Quorum mode: the broker counts the returns (no Redis needed), and the task
/// is set aside at `QUORUM_DELIVERY_LIMIT`, here below `MAX_DELIVERIES`.
#[tokio::test]
async fn in_quorum_mode_a_task_that_aborts_the_worker_is_set_aside_at_the_delivery_limit() {
    let extra = [
        ("QUEUE_TYPE", "quorum"),
        ("QUORUM_DELIVERY_LIMIT", "2"),
        ("MAX_DELIVERIES", "10"),
    ];
    aborts_until_poison(crate::quorum::quorum(&extra).await, &extra, 2).await;
}

/// Publishes a poison task and a normal one, restarts the abort worker (with
/// `extra` settings) after each abort, and checks the task is dead-lettered as
/// `poison` after `expected_aborts`, answered once, and the normal one handled.
async fn aborts_until_poison(broker: TestBroker, extra: &[(&str, &str)], expected_aborts: u32) {
    let poison = envelope(&format!("please {ABORT_MARK}"));
    let normal = envelope("an ordinary request");
    broker
        .publisher
        .publish(Stage::Generate, &poison)
        .await
        .unwrap();
    broker
        .publisher
        .publish(Stage::Generate, &normal)
        .await
        .unwrap();
    let dead_queue = broker.names.dead_queue(Stage::Generate);

    // Restart the worker after every abort until the task is set aside.
    let mut aborts = 0;
    let mut worker = start_worker(&broker, extra);
    let deadline = tokio::time::Instant::now() + RESTARTS_WAIT;
    while broker.depth(&dead_queue).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter after {aborts} aborts"
        );
        if let Some(status) = worker.try_wait().unwrap() {
            assert!(!status.success(), "the worker ended on its own: {status:?}");
            aborts += 1;
            assert!(
                aborts <= expected_aborts,
                "the worker aborted {aborts} times"
            );
            worker = start_worker(&broker, extra);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        aborts, expected_aborts,
        "aborts before the task was set aside"
    );

    let dead = broker.take(&dead_queue).await;
    assert_eq!(headers(&dead)[HEADER_DEAD_REASON], "poison");
    let body = TaskEnvelope::from_json(&dead.delivery.data).unwrap();
    assert_eq!(body.task_id, poison.task_id);

    // The normal task behind it is handled, and the poison task gets exactly one
    // failure answer.
    let mut answers = Vec::new();
    while let Some(message) = broker
        .take_from_stage(
            Stage::Dispatch,
            if answers.is_empty() { WAIT } else { QUIET },
        )
        .await
    {
        answers.push(TaskEnvelope::from_json(&message.delivery.data).unwrap());
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let failures: Vec<_> = answers
        .iter()
        .filter(|a| a.task_id == poison.task_id)
        .collect();
    assert_eq!(failures.len(), 1, "{answers:?}");
    assert_eq!(failures[0].reply, Some(ReplyKind::Failure));
    let result = failures[0].result.as_ref().unwrap();
    assert_eq!(
        result.summary,
        contexten_broker::failure_text(Stage::Generate, "poison", None)
    );
    assert!(
        answers.iter().any(|a| a.task_id == normal.task_id),
        "the task behind the poison one was not handled: {answers:?}"
    );
}

#[tokio::test]
async fn a_handler_that_panics_on_a_task_ends_with_a_poison_dead_letter_not_a_stuck_delivery() {
    let broker = TestBroker::start_with(&[("MAX_DELIVERIES", "2")]).await;
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = handled.clone();
    let worker = broker.spawn_worker(Stage::Generate, move |env: TaskEnvelope| {
        let count = count.clone();
        async move {
            if env.request.text.contains(ABORT_MARK) {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("a handler bug");
            }
            contexten_broker::Outcome::forward(Stage::Dispatch, env)
        }
    });
    let poison = envelope(&format!("please {ABORT_MARK}"));
    broker
        .publisher
        .publish(Stage::Generate, &poison)
        .await
        .unwrap();

    let dead = broker.take(&broker.names.dead_queue(Stage::Generate)).await;
    assert_eq!(headers(&dead)[HEADER_DEAD_REASON], "poison");
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 2);
    let dispatch = broker.names.stage_queue(Stage::Dispatch);
    let answer = TaskEnvelope::from_json(&broker.take(&dispatch).await.delivery.data).unwrap();
    assert_eq!(
        (answer.task_id, answer.reply),
        (poison.task_id, Some(ReplyKind::Failure))
    );
    assert!(broker.take_within(&dispatch, QUIET).await.is_none());
    worker.stop().await;
}
