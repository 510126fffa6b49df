//! A burst of 5xx opens the shared breaker for every replica; one probe closes it.

use crate::fake::{CreateRule, error};
use crate::helpers::{TestFleet, WAIT, task};
use contexten_envelope::ReplyKind;
use contexten_testkit::eventually;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const OPEN_MS: u64 = 1500;
const PROBE_TAKES: Duration = Duration::from_millis(600);

#[tokio::test]
async fn a_burst_of_5xx_opens_the_breaker_for_every_replica_and_one_probe_closes_it() {
    let open = OPEN_MS.to_string();
    let fleet = TestFleet::start(&[
        ("CODEGEN_BREAKER_FAILURES", "5"),
        ("CODEGEN_BREAKER_OPEN_MS", &open),
        ("MAX_ATTEMPTS", "20"),
    ])
    .await;
    // Five failures in both error shapes, then a slow success (the probe).
    for (status, shape) in [
        (503, "message"),
        (500, "detail"),
        (502, "message"),
        (504, "detail"),
        (500, "message"),
    ] {
        fleet.fake.rule(CreateRule {
            needle: None,
            times: Some(1),
            response: error(status, shape, "upstream unavailable"),
            status,
        });
    }
    fleet.fake.default_statuses(&["COMPLETE"]);
    let (first, first_counts) = fleet.spawn_counted();
    let (second, second_counts) = fleet.spawn_counted();

    let burst: Vec<_> = (0..5).map(|i| task(&format!("burst {i}"))).collect();
    for t in &burst {
        fleet.publish(t).await;
    }
    eventually(WAIT, "the breaker opened", || async {
        fleet.breaker_state().await.as_deref() == Some("open")
    })
    .await;
    let opened = Instant::now();
    // Every answer from now on takes a while, so a request sent while the probe
    // is in flight would show in the timeline.
    fleet.fake.slow_down(PROBE_TAKES);
    let later: Vec<_> = (0..5).map(|i| task(&format!("later {i}"))).collect();
    for t in &later {
        fleet.publish(t).await;
    }
    let ids: Vec<_> = burst.iter().chain(&later).map(|t| t.task_id).collect();
    let finals = fleet.finals(&ids, WAIT).await;
    assert!(
        finals.values().all(|a| a.reply == Some(ReplyKind::Final)),
        "no task was dropped"
    );

    let creates = fleet.fake.creates();
    let statuses: Vec<u16> = creates.iter().map(|c| c.status).collect();
    assert_eq!(&statuses[..5], &[503, 500, 502, 504, 500]);
    assert_eq!(
        creates.len(),
        5 + 10,
        "each task created once after the failures"
    );
    // Nobody reached Codegen while the breaker was open...
    let after: Vec<_> = fleet
        .fake
        .timeline()
        .into_iter()
        .filter(|(at, _)| *at > opened)
        .collect();
    let (probe_at, probe) = after[0];
    assert!(
        probe_at >= opened + Duration::from_millis(OPEN_MS) - Duration::from_millis(200),
        "first request after opening ({probe}) came {:?} after it",
        probe_at - opened
    );
    // ...and while the single probe was in flight, nothing else was sent.
    let (next_at, next) = after[1];
    assert!(
        next_at >= probe_at + PROBE_TAKES,
        "{next} overlapped the probe ({probe}) by {:?}",
        probe_at + PROBE_TAKES - next_at
    );
    assert_eq!(fleet.breaker_state().await.as_deref(), Some("closed"));

    let (a, b) = (&first_counts, &second_counts);
    assert!(
        a.deliveries.load(Ordering::SeqCst) > 0 && b.deliveries.load(Ordering::SeqCst) > 0,
        "both replicas worked"
    );
    let deferred = a.deferrals.load(Ordering::SeqCst) + b.deferrals.load(Ordering::SeqCst);
    assert!(
        deferred > 0,
        "tasks were delayed while the breaker was open"
    );
    first.stop().await;
    second.stop().await;
}
