//! Permanent Codegen refusals end in one clear failure answer, never retries.

use crate::fake::{CreateRule, error};
use crate::helpers::{QUIET, TestFleet, WAIT, task};
use contexten_envelope::{ReplyKind, ResultKind, Stage};
use serde_json::json;
use wiremock::ResponseTemplate;

#[tokio::test]
async fn plan_limit_forbidden_not_found_and_invalid_end_in_a_failure_answer_without_retries() {
    let fleet = TestFleet::start(&[]).await;
    let cases = [
        (
            "case-402",
            402,
            error(402, "message", "Alloted agent runs for the current billing plan have been reached."),
            "codegen_limit_reached",
            "Alloted agent runs",
        ),
        (
            "case-403",
            403,
            error(403, "detail", "You do not have access to this organization."),
            "codegen_forbidden",
            "You do not have access to this organization.",
        ),
        (
            "case-404",
            404,
            error(404, "message", "No repos found in the organization. Please add a repo first."),
            "codegen_not_found",
            "No repos found in the organization",
        ),
        (
            "case-422",
            422,
            ResponseTemplate::new(422).set_body_json(json!({"detail": [
                {"loc": ["body", "agent_type"], "msg": "value is not a valid enumeration member", "type": "type_error.enum"}
            ]})),
            "codegen_invalid_request",
            "body.agent_type: value is not a valid enumeration member",
        ),
    ];
    for (needle, status, response, _, _) in &cases {
        fleet.fake.rule(CreateRule {
            needle: Some((*needle).into()),
            times: None,
            response: response.clone(),
            status: *status,
        });
    }
    let worker = fleet.spawn_agent();
    let tasks: Vec<_> = cases
        .iter()
        .map(|(needle, ..)| task(&format!("{needle}: fix the bug")))
        .collect();
    for t in &tasks {
        fleet.publish(t).await;
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.task_id).collect();
    let finals = fleet.finals(&ids, WAIT).await;

    for (t, (needle, _, _, reason, words)) in tasks.iter().zip(&cases) {
        let answer = &finals[&t.task_id];
        assert_eq!(answer.reply, Some(ReplyKind::Failure), "{needle}");
        let result = answer.result.as_ref().unwrap();
        assert_eq!(result.kind, ResultKind::Failure);
        assert_eq!(result.reason.as_deref(), Some(*reason), "{needle}");
        // The code's sentence; Codegen's own words stay in the dead letter and the log.
        assert_eq!(
            result.summary,
            contexten_broker::failure_text(Stage::Agent, reason, None),
            "{needle}"
        );
        assert!(
            !result.summary.contains(words),
            "{needle}: {}",
            result.summary
        );
    }
    // No retries: one request per task, even after the shortest retry tiers passed.
    tokio::time::sleep(QUIET).await;
    let creates = fleet.fake.creates();
    for (needle, ..) in &cases {
        let sent = creates
            .iter()
            .filter(|c| c.body["prompt"].as_str().unwrap().contains(needle))
            .count();
        assert_eq!(sent, 1, "{needle} was sent once");
    }
    assert_eq!(fleet.depth(&fleet.names.dead_queue(Stage::Agent)).await, 4);
    assert!(fleet.breaker_state().await.is_none_or(|s| s == "closed"));
    worker.stop().await;
}
