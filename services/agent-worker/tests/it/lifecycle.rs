//! Create → status checks → answer on the dispatch queue, through the real broker.

use crate::helpers::{TestFleet, WAIT, task};
use contexten_envelope::{ContextItem, ReplyKind, ResultKind, TaskContext};
use std::time::Duration;

#[tokio::test]
async fn a_run_goes_from_create_through_polls_to_a_final_answer_on_dispatch() {
    let fleet = TestFleet::start(&[
        ("AGENT_POLL_INITIAL_MS", "100"),
        ("AGENT_POLL_MAX_MS", "400"),
    ])
    .await;
    fleet.fake.statuses_for(
        "UPPER",
        &["PENDING", "RUNNING", "ACTIVE", "EVALUATION", "COMPLETE"],
    );
    fleet.fake.statuses_for(
        "lower",
        &[
            "queued",
            "in_progress",
            "running",
            "Unheard_Of",
            "completed",
        ],
    );
    let worker = fleet.spawn_agent();

    let mut upper = task("UPPER: refactor the parser into a module");
    upper.context = Some(TaskContext {
        items: vec![ContextItem {
            path: "src/parse.rs".into(),
            score: 0.91,
            symbols: vec!["parse_duration".into()],
            reasons: vec!["named in the request".into()],
        }],
        prompt: "## src/parse.rs\nfn parse_duration(s: &str) {}".into(),
        ..TaskContext::default()
    });
    let lower = task("lower: add tests for the parser");
    fleet.publish(&upper).await;
    fleet.publish(&lower).await;

    let answers = fleet
        .answers_until(WAIT, |taken| {
            taken
                .iter()
                .filter(|a| a.reply == Some(ReplyKind::Final))
                .count()
                == 2
        })
        .await;
    for env in [&upper, &lower] {
        let mine: Vec<_> = answers
            .iter()
            .filter(|a| a.task_id == env.task_id)
            .collect();
        eprintln!(
            "DBG {:?}",
            answers
                .iter()
                .map(|a| (a.task_id, a.reply, a.hop))
                .collect::<Vec<_>>()
        );
        assert_eq!(mine.len(), 2, "one progress and one final answer: {mine:?}");
        assert_eq!(
            mine[0].reply,
            Some(ReplyKind::Progress),
            "progress comes first"
        );
        let progress = mine[0].result.as_ref().unwrap();
        let url = progress
            .web_url
            .clone()
            .expect("progress carries the run link");
        assert!(progress.summary.contains(&url), "{}", progress.summary);

        let last = mine[1].result.as_ref().unwrap();
        assert_eq!(mine[1].reply, Some(ReplyKind::Final));
        assert_eq!(last.kind, ResultKind::AgentRun);
        assert_eq!(last.web_url.as_deref(), Some(url.as_str()));
        let id = url.rsplit('/').next().unwrap();
        assert_eq!(last.summary, format!("Run {id} opened a pull request"));
        assert_eq!(
            last.text.as_deref(),
            Some(format!("Run {id}: refactored the parser and added tests.").as_str())
        );
        assert_eq!(
            last.pull_requests,
            vec![format!("https://github.com/octo/hello/pull/{id}")]
        );
        assert!(mine[1].agent_run.is_none());
        assert!(
            mine[1].cost.agent_calls >= 6,
            "create + 5 status checks counted"
        );
    }

    let creates = fleet.fake.creates();
    assert_eq!(creates.len(), 2, "one run per task");
    let body = &creates
        .iter()
        .find(|c| {
            c.body["prompt"]
                .as_str()
                .unwrap()
                .contains("<untrusted-data source=\"request\">\nUPPER")
        })
        .unwrap()
        .body;
    let prompt = body["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("1. src/parse.rs (score 0.91); symbols: parse_duration"),
        "{prompt}"
    );
    assert!(prompt.contains("fn parse_duration(s: &str) {}"), "{prompt}");
    assert_eq!(body["metadata"]["task_id"], upper.task_id.to_string());
    assert_eq!(body["metadata"]["correlation_id"], upper.correlation_id);

    // Five checks per run (the fifth finds it finished), spaced by a growing backoff.
    let gets = fleet.fake.gets();
    assert_eq!(gets.len(), 10, "{gets:?}");
    let run_id = gets[0].1;
    let times: Vec<_> = gets
        .iter()
        .filter(|(_, id)| *id == run_id)
        .map(|(t, _)| *t)
        .collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] < Duration::from_millis(380), "{gaps:?}");
    assert!(
        gaps[3] >= Duration::from_millis(380),
        "the backoff reaches the maximum: {gaps:?}"
    );

    worker.stop().await;
}

#[tokio::test]
async fn a_failed_or_cancelled_run_gets_a_failure_answer_with_its_link() {
    let fleet = TestFleet::start(&[]).await;
    fleet.fake.statuses_for("will fail", &["RUNNING", "ERROR"]);
    fleet
        .fake
        .statuses_for("will stop", &["pending", "stopped"]);
    fleet
        .fake
        .statuses_for("too long", &["ACTIVE", "MAX_ITERATIONS_REACHED"]);
    let worker = fleet.spawn_agent();
    let tasks = [
        task("this will fail"),
        task("this will stop"),
        task("this runs too long"),
    ];
    for t in &tasks {
        fleet.publish(t).await;
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.task_id).collect();
    let finals = fleet.finals(&ids, WAIT).await;
    for (t, reason) in tasks.iter().zip([
        "agent_run_failed",
        "agent_run_cancelled",
        "agent_run_limit_reached",
    ]) {
        let answer = &finals[&t.task_id];
        assert_eq!(answer.reply, Some(ReplyKind::Failure));
        let result = answer.result.as_ref().unwrap();
        assert_eq!(result.kind, ResultKind::Failure);
        assert_eq!(result.reason.as_deref(), Some(reason));
        let url = result.web_url.as_deref().expect("the run link");
        assert!(
            result.summary.starts_with("Sorry, the Codegen agent run"),
            "{}",
            result.summary
        );
        assert!(result.summary.contains(url), "{}", result.summary);
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_run_past_the_maximum_duration_gets_a_timeout_answer_with_its_link() {
    let fleet = TestFleet::start(&[("AGENT_MAX_RUN_SECS", "1")]).await;
    fleet.fake.default_statuses(&["RUNNING"]);
    let worker = fleet.spawn_agent();
    let t = task("take forever");
    fleet.publish(&t).await;
    let finals = fleet.finals(&[t.task_id], WAIT).await;
    let answer = &finals[&t.task_id];
    let result = answer.result.as_ref().unwrap();
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    assert_eq!(result.reason.as_deref(), Some("agent_run_timeout"));
    assert!(
        result.summary.contains("did not finish within 1 second"),
        "{}",
        result.summary
    );
    let url = result.web_url.as_deref().unwrap();
    assert!(result.summary.contains(url));
    assert!(
        fleet.fake.gets().len() >= 2,
        "it kept checking until the deadline"
    );
    worker.stop().await;
}

#[tokio::test]
async fn without_codegen_credentials_the_task_gets_a_clear_failure_answer() {
    let fleet = TestFleet::start(&[]).await;
    let mut settings = fleet.agent.clone();
    settings.codegen = None;
    let handler = agent_worker::AgentHandler::new(&settings, fleet.store.clone()).unwrap();
    let worker = fleet.spawn_worker(handler);
    let t = task("anything");
    fleet.publish(&t).await;
    let finals = fleet.finals(&[t.task_id], WAIT).await;
    let result = finals[&t.task_id].result.as_ref().unwrap();
    assert_eq!(result.reason.as_deref(), Some("agent_not_configured"));
    assert!(
        result.summary.contains("not configured") && !result.summary.contains("CODEGEN_ORG_ID"),
        "{}",
        result.summary
    );
    assert!(fleet.fake.creates().is_empty());
    worker.stop().await;
}
