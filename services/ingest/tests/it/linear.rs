use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::{Priority, ReplyTarget, SourceKind, Stage, Strategy, now_ms};
use serde_json::json;

const HUMAN: &str = "7a1b2c3d-0000-4000-8000-000000000h00";

fn delivery() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn linear_label_newly_added_becomes_one_task_and_an_existing_label_does_not() {
    let ingest = TestIngest::start_with(&[(
        "CONTEXTEN_ROUTING_RULES",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/rules-with-linear-team.toml"
        ),
    )])
    .await;
    let data = linear_issue_data(
        "issue-1",
        &[("lbl-ctx", "contexten"), ("lbl-bug", "Bug")],
        None,
    );
    let added = linear_issue(
        "update",
        data.clone(),
        Some(json!({"labelIds": ["lbl-bug"], "updatedAt": "2026-11-29T11:00:00.000Z"})),
        HUMAN,
    );
    let a = ingest.linear(&added, &delivery()).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("accepted")),
        "{}",
        a.json
    );
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(task.source.kind, SourceKind::LINEAR);
    assert_eq!(
        task.source.reply_to,
        ReplyTarget::Linear {
            issue_id: "issue-1".into(),
            comment_id: None
        }
    );
    assert_eq!(task.conversation.as_ref().unwrap().id, "linear:issue-1");
    assert_eq!(task.priority, Priority::Normal);
    assert_eq!(
        task.request.repository.as_ref().unwrap().url,
        "https://github.com/acme/linear-team.git"
    );
    assert_eq!(task.request.hints.paths, vec!["src/time.rs"]);
    assert_eq!(task.strategy_rule.as_deref(), Some("rules:one-function"));

    // Another update (title edit) while the label is already there: not a new trigger.
    let edit = linear_issue("update", data, Some(json!({"title": "old title"})), HUMAN);
    let a = ingest.linear(&edit, &delivery()).await;
    assert_eq!(
        (a.status, a.json["reason"].as_str()),
        (200, Some("not_assigned_or_labeled"))
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn linear_assignment_to_the_bot_becomes_a_task_and_a_comment_mention_a_follow_up() {
    let ingest = TestIngest::start().await;
    let data = linear_issue_data(
        "issue-2",
        &[("lbl-agent", "contexten:agent")],
        Some(LINEAR_BOT),
    );
    let assigned = linear_issue("update", data, Some(json!({"assigneeId": null})), HUMAN);
    assert_eq!(
        ingest.linear(&assigned, &delivery()).await.json["status"],
        "accepted"
    );
    let (first, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(first.strategy, Strategy::Agent);
    assert_eq!(
        first.strategy_rule.as_deref(),
        Some("label:contexten:agent")
    );

    let comment = linear_comment(
        "issue-2",
        "comment-9",
        "@contexten-bot also add tests please",
        HUMAN,
    );
    let a = ingest.linear(&comment, &delivery()).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("accepted")),
        "{}",
        a.json
    );
    // No repository is known for the comment's team: simple generation.
    let (second, _) = ingest.take_task_and_ack(Stage::Generate).await;
    assert_eq!(second.strategy_rule.as_deref(), Some("rules:no-repository"));
    assert_eq!(
        second.source.reply_to,
        ReplyTarget::Linear {
            issue_id: "issue-2".into(),
            comment_id: Some("comment-9".into())
        }
    );
    assert_eq!(
        second.conversation.unwrap().previous_task_id,
        Some(first.task_id)
    );
}

#[tokio::test]
async fn linear_events_from_the_bot_or_not_for_it_are_ignored() {
    let ingest = TestIngest::start().await;
    let own = linear_comment(
        "issue-3",
        "comment-1",
        "@contexten-bot I'm on it",
        LINEAR_BOT,
    );
    assert_eq!(
        ingest.linear(&own, &delivery()).await.json["reason"],
        "own_event"
    );
    let chat = linear_comment("issue-3", "comment-2", "looks good to me", HUMAN);
    assert_eq!(
        ingest.linear(&chat, &delivery()).await.json["reason"],
        "not_addressed_to_bot"
    );
    let mut project = linear_comment("issue-3", "comment-3", "x", HUMAN);
    project["type"] = json!("Project");
    assert_eq!(
        ingest.linear(&project, &delivery()).await.json["reason"],
        "event_not_handled"
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn stale_or_unsigned_linear_deliveries_are_rejected_with_401() {
    let ingest = TestIngest::start().await;
    let mut stale = linear_comment("issue-4", "c", "@contexten-bot hi", HUMAN);
    stale["webhookTimestamp"] = json!(now_ms() - 61_000);
    let a = ingest.linear(&stale, &delivery()).await;
    assert_eq!((a.status, a.error()), (401, "stale_timestamp"));
    let body =
        serde_json::to_vec(&linear_comment("issue-4", "c", "@contexten-bot hi", HUMAN)).unwrap();
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        (
            "linear-signature",
            format!(
                "sha256={}",
                ingest::verify::sign_hex(&secret(&linear_secret()), &body)
            ),
        ),
    ];
    let a = ingest
        .post("/webhooks/linear", &headers, body.clone())
        .await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    let a = ingest.post("/webhooks/linear", &headers[..1], body).await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn repeated_linear_delivery_creates_nothing_new() {
    let ingest = TestIngest::start().await;
    let comment = linear_comment(
        "issue-5",
        "comment-5",
        "/contexten context summarise",
        HUMAN,
    );
    let id = delivery();
    assert_eq!(
        ingest.linear(&comment, &id).await.json["status"],
        "accepted"
    );
    ingest.take_task_and_ack(Stage::Context).await;
    let a = ingest.linear(&comment, &id).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("duplicate"))
    );
    ingest.assert_nothing_queued().await;
}
