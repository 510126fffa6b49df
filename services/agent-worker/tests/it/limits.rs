//! Codegen's rate limits: 429 with Retry-After, and the fleet-wide creation limit.

use crate::fake::{CreateRule, error, max_in_any_window};
use crate::helpers::{TestFleet, WAIT, task};
use contexten_envelope::ReplyKind;
use std::time::Duration;

#[tokio::test]
async fn a_429_backs_off_for_its_retry_after_and_does_not_trip_the_breaker() {
    // One retry tier long enough to hold the Retry-After.
    let fleet = TestFleet::start(&[
        ("RETRY_TIERS_MS", "100,300,1500"),
        ("CODEGEN_BREAKER_FAILURES", "1"),
    ])
    .await;
    fleet.fake.rule(CreateRule {
        needle: None,
        times: Some(2),
        response: error(429, "detail", "Rate limit exceeded").insert_header("Retry-After", "1"),
        status: 429,
    });
    fleet.fake.default_statuses(&["COMPLETE"]);
    let worker = fleet.spawn_agent();
    let t = task("create a PR that adds tests");
    fleet.publish(&t).await;
    let finals = fleet.finals(&[t.task_id], WAIT).await;
    assert_eq!(finals[&t.task_id].reply, Some(ReplyKind::Final));

    let creates = fleet.fake.creates();
    let statuses: Vec<u16> = creates.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    for pair in creates.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "waited for Retry-After: {gap:?}"
        );
    }
    // With a threshold of one failure, a 429 counted as one would have opened it.
    assert!(fleet.breaker_state().await.is_none_or(|s| s == "closed"));
    worker.stop().await;
}

const WINDOW_MS: u64 = 2000;
const LIMIT: usize = 10;
const TASKS: usize = 100;

#[tokio::test]
async fn three_replicas_with_a_hundred_tasks_never_exceed_the_creation_limit_in_any_window() {
    let window = WINDOW_MS.to_string();
    let limit = LIMIT.to_string();
    let fleet = TestFleet::start(&[
        ("CODEGEN_CREATE_LIMIT", &limit),
        ("CODEGEN_CREATE_WINDOW_MS", &window),
    ])
    .await;
    fleet.fake.default_statuses(&["COMPLETE"]);
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| task(&format!("task {i}: implement feature")))
        .collect();
    for t in &tasks {
        fleet.publish(t).await;
    }
    let workers = [
        fleet.spawn_agent(),
        fleet.spawn_agent(),
        fleet.spawn_agent(),
    ];
    let ids: Vec<_> = tasks.iter().map(|t| t.task_id).collect();
    // At 10 per ~2.2 s, 100 creations take about 22 s.
    let finals = fleet.finals(&ids, Duration::from_secs(90)).await;
    assert_eq!(finals.len(), TASKS);
    assert!(finals.values().all(|a| a.reply == Some(ReplyKind::Final)));

    let creates = fleet.fake.creates();
    assert_eq!(creates.len(), TASKS, "one run per task");
    let times: Vec<_> = creates.iter().map(|c| c.at).collect();
    let busiest = max_in_any_window(&times, Duration::from_millis(WINDOW_MS));
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    eprintln!(
        "{TASKS} creations by 3 replicas: busiest {WINDOW_MS} ms window {busiest}, first to last {span:?}"
    );
    assert!(
        busiest <= LIMIT,
        "{busiest} creations inside one {WINDOW_MS} ms window"
    );
    assert_eq!(busiest, LIMIT, "the limit is used, not undershot");
    for worker in workers {
        worker.stop().await;
    }
}
