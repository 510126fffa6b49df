//! At most `AGENT_MAX_RUNS_PER_REQUESTER` runs in progress per requester,
//! whole fleet: more wait (rescheduled, not failed), then get an answer; slots
//! come back when a run ends or cannot start, and leases free lost ones.

use crate::fake::{CreateRule, error};
use crate::helpers::{TestFleet, WAIT, task};
use agent_worker::slots::{RequesterSlots, Slot};
use contexten_envelope::{ReplyKind, ResultKind, TaskEnvelope, TaskId};
use std::time::{Duration, Instant};

/// A lease short enough to watch it run out.
const SHORT_LEASE: Duration = Duration::from_millis(300);
/// Longer than [`SHORT_LEASE`], Redis clock included.
const PAST_THE_LEASE: Duration = Duration::from_millis(450);

fn task_by(who: &str, text: &str) -> TaskEnvelope {
    let mut t = task(text);
    t.source.requested_by = Some(who.into());
    t
}

/// When the fake Codegen saw the create of `task`.
fn created_at(fleet: &TestFleet, task: TaskId) -> Instant {
    let id = task.to_string();
    fleet
        .fake
        .creates()
        .iter()
        .find(|c| c.status == 200 && c.body["metadata"]["task_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no create for {id}"))
        .at
}

/// When the run of `answer` (a final answer with the run's link) last reported.
fn finished_at(fleet: &TestFleet, answer: &TaskEnvelope) -> Instant {
    let url = answer.result.as_ref().unwrap().web_url.clone().unwrap();
    let run: u64 = url.rsplit('/').next().unwrap().parse().unwrap();
    fleet
        .fake
        .gets()
        .iter()
        .filter(|(_, id)| *id == run)
        .map(|(at, _)| *at)
        .max()
        .unwrap()
}

#[tokio::test]
async fn slots_are_per_requester_idempotent_given_back_and_freed_by_their_lease() {
    let fleet = TestFleet::start(&[]).await;
    let slots = RequesterSlots::new(fleet.store.clone(), 2, SHORT_LEASE * 100);
    let [a, b, c] = [1, 2, 3].map(|n| task_by("octocat", &format!("task {n}")));
    assert_eq!(slots.acquire(&a).await.unwrap(), Slot::Held);
    assert_eq!(slots.acquire(&b).await.unwrap(), Slot::Held);
    assert_eq!(
        slots.acquire(&c).await.unwrap(),
        Slot::Full { in_progress: 2 }
    );
    // A redelivery of a task that holds a slot keeps it.
    assert_eq!(slots.acquire(&a).await.unwrap(), Slot::Held);
    // Another requester, or the same name from another source, is not counted.
    assert_eq!(
        slots.acquire(&task_by("hubot", "x")).await.unwrap(),
        Slot::Held
    );
    let mut slack = task_by("octocat", "from slack");
    slack.source.kind = contexten_envelope::SourceKind::SLACK;
    assert_eq!(slots.acquire(&slack).await.unwrap(), Slot::Held);
    slots.release(&a).await;
    assert_eq!(slots.acquire(&c).await.unwrap(), Slot::Held);

    // A slot never given back (a crashed worker) is freed when its lease ends.
    let leased = RequesterSlots::new(fleet.store.clone(), 1, SHORT_LEASE);
    let [lost, next] = [1, 2].map(|n| task_by("mona", &format!("lease {n}")));
    assert_eq!(leased.acquire(&lost).await.unwrap(), Slot::Held);
    assert_eq!(
        leased.acquire(&next).await.unwrap(),
        Slot::Full { in_progress: 1 }
    );
    tokio::time::sleep(PAST_THE_LEASE).await;
    assert_eq!(leased.acquire(&next).await.unwrap(), Slot::Held);
}

#[tokio::test]
async fn a_requester_at_the_limit_waits_for_a_run_to_end_while_others_start() {
    let fleet = TestFleet::start(&[("AGENT_MAX_RUNS_PER_REQUESTER", "1")]).await;
    fleet
        .fake
        .default_statuses(&["RUNNING", "RUNNING", "RUNNING", "COMPLETE"]);
    let worker = fleet.spawn_agent();
    let mine = [
        task_by("octocat", "first: refactor the parser"),
        task_by("octocat", "second: add tests"),
    ];
    let other = task_by("hubot", "a run for someone else");
    for t in mine.iter().chain([&other]) {
        fleet.publish(t).await;
    }
    let ids: Vec<_> = mine.iter().chain([&other]).map(|t| t.task_id).collect();
    let finals = fleet.finals(&ids, WAIT).await;
    for id in &ids {
        assert_eq!(
            finals[id].reply,
            Some(ReplyKind::Final),
            "waited, not failed"
        );
    }
    // octocat's runs did not overlap: the later one was created after the
    // earlier one's last status check; hubot's did not wait for octocat's.
    let (first, second) = {
        let (a, b) = (mine[0].task_id, mine[1].task_id);
        if created_at(&fleet, a) < created_at(&fleet, b) {
            (a, b)
        } else {
            (b, a)
        }
    };
    let first_done = finished_at(&fleet, &finals[&first]);
    assert!(created_at(&fleet, second) > first_done);
    assert!(created_at(&fleet, other.task_id) < first_done);
    worker.stop().await;
}

#[tokio::test]
async fn a_refused_create_gives_the_slot_back() {
    let fleet = TestFleet::start(&[("AGENT_MAX_RUNS_PER_REQUESTER", "1")]).await;
    fleet.fake.rule(CreateRule {
        needle: Some("refused".into()),
        times: None,
        response: error(
            403,
            "detail",
            "You do not have access to this organization.",
        ),
        status: 403,
    });
    fleet.fake.default_statuses(&["COMPLETE"]);
    let worker = fleet.spawn_agent();
    let refused = task_by("octocat", "this one is refused");
    fleet.publish(&refused).await;
    let finals = fleet.finals(&[refused.task_id], WAIT).await;
    assert_eq!(finals[&refused.task_id].reply, Some(ReplyKind::Failure));
    let next = task_by("octocat", "this one runs");
    fleet.publish(&next).await;
    let finals = fleet.finals(&[next.task_id], WAIT).await;
    assert_eq!(finals[&next.task_id].reply, Some(ReplyKind::Final));
    worker.stop().await;
}

#[tokio::test]
async fn a_task_that_waits_too_long_is_told_how_many_runs_are_in_progress() {
    let fleet = TestFleet::start(&[("AGENT_MAX_RUNS_PER_REQUESTER", "1")]).await;
    fleet.fake.default_statuses(&["RUNNING"]);
    let mut settings = fleet.agent.clone();
    settings.requester_wait = Duration::from_millis(500);
    let handler = agent_worker::AgentHandler::new(&settings, fleet.store.clone()).unwrap();
    let worker = fleet.spawn_worker(handler);
    let running = task_by("octocat", "a long refactor");
    fleet.publish(&running).await;
    fleet
        .answers_until(WAIT, |taken| {
            taken.iter().any(|a| a.reply == Some(ReplyKind::Progress))
        })
        .await;
    let waiting = task_by("octocat", "and another one");
    fleet.publish(&waiting).await;
    let finals = fleet.finals(&[waiting.task_id], WAIT).await;
    let answer = &finals[&waiting.task_id];
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    let result = answer.result.as_ref().unwrap();
    assert_eq!(result.kind, ResultKind::Failure);
    assert_eq!(result.reason.as_deref(), Some("agent_runs_in_progress"));
    assert_eq!(
        result.summary,
        "Sorry, you already have 1 agent run in progress; ask again when one of them has finished."
    );
    assert_eq!(fleet.fake.creates().len(), 1, "no second run was created");
    worker.stop().await;
}
