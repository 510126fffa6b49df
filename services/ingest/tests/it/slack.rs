use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::{Priority, ReplyKind, ReplyTarget, SourceKind, Stage, Strategy, now_ms};
use serde_json::json;

fn event_id() -> String {
    format!("Ev{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn slack_mention_becomes_an_interactive_task_answered_in_its_thread() {
    let ingest = TestIngest::start().await;
    let body = slack_callback(
        &event_id(),
        slack_mention(
            "C0123",
            "1712345678.000100",
            None,
            "<@U0BOT> generate a regex for ISO dates",
        ),
    );
    let a = ingest.slack(&body, &[]).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("accepted")),
        "{}",
        a.json
    );
    let (task, ack) = ingest.take_task_and_ack(Stage::Generate).await;
    assert_eq!(task.source.kind, SourceKind::SLACK);
    assert_eq!(task.request.text, "a regex for ISO dates");
    assert_eq!(
        (task.strategy, task.strategy_rule.as_deref()),
        (Strategy::Simple, Some("command:generate"))
    );
    assert_eq!(task.priority, Priority::Interactive);
    assert_eq!(ack.priority, Priority::Interactive);
    assert_eq!(
        task.source.reply_to,
        ReplyTarget::Slack {
            channel: "C0123".into(),
            thread_ts: "1712345678.000100".into()
        }
    );
    assert_eq!(
        task.conversation.unwrap().id,
        "slack:C0123:1712345678.000100"
    );
    assert_eq!(task.source.requested_by.as_deref(), Some("U0HUMAN"));
}

#[tokio::test]
async fn slack_retry_of_the_same_event_creates_nothing_new() {
    let ingest = TestIngest::start().await;
    let id = event_id();
    let body = slack_callback(
        &id,
        slack_mention("C0123", "1712345679.000200", None, "<@U0BOT> hello"),
    );
    assert_eq!(ingest.slack(&body, &[]).await.json["status"], "accepted");
    ingest.take_task_and_ack(Stage::Generate).await;
    let retry = [
        ("x-slack-retry-num", "1".to_owned()),
        ("x-slack-retry-reason", "http_timeout".to_owned()),
    ];
    let a = ingest.slack(&body, &retry).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("duplicate"))
    );
    // The `message` copy of the same message (another event_id) is the same request.
    let copy = slack_callback(
        &event_id(),
        slack_thread_message(
            "C0123",
            "1712345679.000200",
            "1712345679.000200",
            "<@U0BOT> hello",
        ),
    );
    let a = ingest.slack(&copy, &[]).await;
    assert_eq!(a.status, 200);
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn reply_in_a_thread_the_bot_answers_is_a_follow_up_and_other_threads_are_ignored() {
    let ingest = TestIngest::start().await;
    let parent = "1712345680.000300";
    let start = slack_callback(
        &event_id(),
        slack_mention("C0456", parent, None, "<@U0BOT> explain `retry_policy`"),
    );
    assert_eq!(ingest.slack(&start, &[]).await.json["status"], "accepted");
    let (first, _) = ingest.take_task_and_ack(Stage::Generate).await;

    let reply = slack_callback(
        &event_id(),
        slack_thread_message("C0456", "1712345690.000400", parent, "and make it async"),
    );
    let a = ingest.slack(&reply, &[]).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (200, Some("accepted")),
        "{}",
        a.json
    );
    let (follow_up, _) = ingest.take_task_and_ack(Stage::Generate).await;
    let conversation = follow_up.conversation.unwrap();
    assert_eq!(conversation.previous_task_id, Some(first.task_id));
    assert_eq!(
        follow_up.source.reply_to,
        ReplyTarget::Slack {
            channel: "C0456".into(),
            thread_ts: parent.into()
        }
    );

    let elsewhere = slack_callback(
        &event_id(),
        slack_thread_message(
            "C0456",
            "1712345699.000500",
            "1712340000.000001",
            "unrelated chat",
        ),
    );
    let a = ingest.slack(&elsewhere, &[]).await;
    assert_eq!(
        (a.status, a.json["reason"].as_str()),
        (200, Some("thread_not_ours"))
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn slack_bot_messages_and_edits_are_ignored() {
    let ingest = TestIngest::start().await;
    let mut bot = slack_mention("C0123", "1712345681.000100", None, "<@U0BOT> echo");
    bot["bot_id"] = json!("B0BOT");
    let a = ingest.slack(&slack_callback(&event_id(), bot), &[]).await;
    assert_eq!(a.json["reason"], "bot_sender");
    let mut own = slack_thread_message("C0123", "1712345682.000100", "1712345681.000100", "On it");
    own["subtype"] = json!("bot_message");
    let a = ingest.slack(&slack_callback(&event_id(), own), &[]).await;
    assert_eq!(a.json["reason"], "bot_sender");
    let mut edit = slack_thread_message("C0123", "1712345683.000100", "1712345681.000100", "x");
    edit["subtype"] = json!("message_changed");
    let a = ingest.slack(&slack_callback(&event_id(), edit), &[]).await;
    assert_eq!(a.json["reason"], "subtype_not_handled");
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_the_challenge() {
    let ingest = TestIngest::start().await;
    let body = json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let a = ingest.slack(&body, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[tokio::test]
async fn stale_or_forged_slack_requests_are_rejected_with_401() {
    let ingest = TestIngest::start().await;
    let body = serde_json::to_vec(&slack_callback(
        &event_id(),
        slack_mention("C1", "1.0", None, "<@U0BOT> hi"),
    ))
    .unwrap();
    let mut stale = slack_headers(&body, now_ms() / 1000 - 301);
    stale.push(("content-type", "application/json".into()));
    let a = ingest.post("/webhooks/slack", &stale, body.clone()).await;
    assert_eq!((a.status, a.error()), (401, "stale_timestamp"));
    let mut forged = slack_headers(b"other body", now_ms() / 1000);
    forged.push(("content-type", "application/json".into()));
    let a = ingest.post("/webhooks/slack", &forged, body.clone()).await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    let mut plain = slack_headers(&body, now_ms() / 1000);
    plain.push(("content-type", "text/plain".into()));
    let a = ingest.post("/webhooks/slack", &plain, body).await;
    assert_eq!((a.status, a.error()), (415, "unsupported_media_type"));
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn slack_slash_command_becomes_a_task_in_its_channel() {
    let ingest = TestIngest::start().await;
    let form = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&channel_id=C2147483705&channel_name=test&user_id=U2147483697&user_name=Steve&command=%2Fcontexten&text=agent+migrate+the+config+loader+https%3A%2F%2Fgithub.com%2Focto-org%2Fhello-world&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let mut headers = slack_headers(form.as_bytes(), now_ms() / 1000);
    headers.push(("content-type", "application/x-www-form-urlencoded".into()));
    let a = ingest
        .post("/webhooks/slack", &headers, form.as_bytes().to_vec())
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    // An empty 200: Slack shows nothing, and the dispatcher's "On it" comes
    // ephemeral through the response_url.
    assert_eq!(a.json, serde_json::Value::Null);
    assert!(a.headers.get("content-type").is_none(), "{:?}", a.headers);
    let (task, ack) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(ack.reply, Some(ReplyKind::Ack));
    assert_eq!(
        ack.source.extra["slack_response_url"],
        task.source.extra["slack_response_url"]
    );
    assert_eq!(task.strategy, Strategy::Agent);
    assert_eq!(task.request.repository.unwrap().url, CLONE_URL);
    assert_eq!(task.source.requested_by.as_deref(), Some("Steve"));
    assert_eq!(
        task.source.reply_to,
        ReplyTarget::Slack {
            channel: "C2147483705".into(),
            thread_ts: String::new()
        }
    );
    assert_eq!(
        task.source.extra["slack_response_url"],
        "https://hooks.slack.com/commands/1234/5678"
    );
    let a = ingest
        .post("/webhooks/slack", &headers, form.as_bytes().to_vec())
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["response_type"], "ephemeral");
    assert_eq!(a.json["text"], "Already received.");
    ingest.assert_nothing_queued().await;
}
