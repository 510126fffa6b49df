//! Trust boundaries at the door: requester allow-lists, replayed deliveries,
//! per-requester limits and the repository policy (README "Security model").

use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::{ReplyKind, ResultKind, Stage};
use serde_json::json;

#[tokio::test]
async fn an_event_from_a_foreign_slack_workspace_or_app_creates_nothing() {
    let ingest =
        TestIngest::start_with(&[("SLACK_TEAM_IDS", "T0001"), ("SLACK_APP_ID", "A0001")]).await;
    let mention = |ts: &str| slack_mention("C0PUB", ts, None, "<@U0BOT> explain src/cli.rs");
    let mut foreign = slack_callback("Ev1", mention("1712.0001"));
    foreign["team_id"] = json!("T0OTHER");
    let a = ingest.slack(&foreign, &[]).await;
    assert_eq!((a.status, &a.json["reason"]), (200, &json!("foreign_team")));
    // A Slack Connect guest writes from their own workspace into our channel.
    let mut guest = slack_callback("Ev2", mention("1712.0002"));
    guest["event"]["user_team"] = json!("T0GUEST");
    let a = ingest.slack(&guest, &[]).await;
    assert_eq!(a.json["reason"], "foreign_team");
    let mut other_app = slack_callback("Ev3", mention("1712.0003"));
    other_app["api_app_id"] = json!("A0OTHER");
    let a = ingest.slack(&other_app, &[]).await;
    assert_eq!(a.json["reason"], "foreign_app");
    ingest.assert_nothing_queued().await;
    // Our own workspace and app still get through.
    let a = ingest
        .slack(&slack_callback("Ev4", mention("1712.0004")), &[])
        .await;
    assert_eq!(a.json["status"], "accepted", "{}", a.json);
    ingest.take_task_and_ack(Stage::Generate).await;
}

#[tokio::test]
async fn a_linear_webhook_from_another_organisation_creates_nothing() {
    let ingest = TestIngest::start_with(&[(
        "LINEAR_ORGANIZATION_ID",
        "0c1d2e3f-0000-4000-8000-000000000001",
    )])
    .await;
    let mention = format!("@{BOT_LOGIN} explain the parser");
    let mut body = linear_comment("issue-1", "comment-1", &mention, "user-1");
    body["organizationId"] = json!("ffffffff-0000-4000-8000-000000000009");
    let a = ingest.linear(&body, "delivery-foreign").await;
    assert_eq!(a.json["reason"], "foreign_organization", "{}", a.json);
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_replayed_github_body_or_an_old_event_creates_nothing() {
    let ingest = TestIngest::start().await;
    let body = github_comment(41, "/contexten explain src/cli.rs", "octocat", "OWNER");
    let first = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        ingest.github("issue_comment", &first, &body).await.status,
        202
    );
    ingest.take_task_and_ack(Stage::Context).await;
    // The same signed body under a new delivery id is a replay.
    let replay = uuid::Uuid::now_v7().to_string();
    let a = ingest.github("issue_comment", &replay, &body).await;
    assert_eq!(
        (a.status, &a.json["reason"]),
        (200, &json!("replayed_body"))
    );
    // GitHub's own retry keeps its delivery id: a duplicate, as before.
    let a = ingest.github("issue_comment", &first, &body).await;
    assert_eq!(a.json["status"], "duplicate", "{}", a.json);
    // An event signed longer ago than deliveries are remembered.
    let mut old = github_comment(42, "/contexten explain src/cli.rs", "octocat", "OWNER");
    old["comment"]["created_at"] = json!(rfc3339(contexten_envelope::now_ms() / 1000 - 4 * 86_400));
    let a = ingest
        .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &old)
        .await;
    assert_eq!(a.json["reason"], "stale_event", "{}", a.json);
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn one_requester_over_the_limit_is_told_to_slow_down_once() {
    let ingest = TestIngest::start_with(&[
        ("INGEST_REQUESTER_LIMIT", "2"),
        ("INGEST_REQUESTER_WINDOW_SECS", "600"),
    ])
    .await;
    for n in 1..=2 {
        let ts = format!("1712.100{n}");
        let body = slack_callback(
            &format!("Ev{n}"),
            slack_mention("C0PUB", &ts, None, "<@U0BOT> explain src/cli.rs"),
        );
        assert_eq!(ingest.slack(&body, &[]).await.json["status"], "accepted");
        ingest.take_task_and_ack(Stage::Generate).await;
    }
    let body = slack_callback(
        "Ev3",
        slack_mention("C0PUB", "1712.1003", None, "<@U0BOT> once more"),
    );
    assert_eq!(ingest.slack(&body, &[]).await.status, 200);
    let (answer, _) = ingest.take(Stage::Dispatch).await;
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    let result = answer.result.as_ref().unwrap();
    assert_eq!(
        (result.kind, result.reason.as_deref()),
        (ResultKind::Failure, Some("rate_limited"))
    );
    assert!(
        result.summary.starts_with("Slow down"),
        "{}",
        result.summary
    );
    assert!(
        result.summary.contains("Try again in"),
        "{}",
        result.summary
    );
    // The next one in the same window is dropped without another answer.
    let body = slack_callback(
        "Ev4",
        slack_mention("C0PUB", "1712.1004", None, "<@U0BOT> and again"),
    );
    let a = ingest.slack(&body, &[]).await;
    assert_eq!(a.json["reason"], "rate_limited", "{}", a.json);
    ingest.assert_nothing_queued().await;
    // Another person is not affected.
    let mut other = slack_mention("C0PUB", "1712.1005", None, "<@U0BOT> explain src/cli.rs");
    other["user"] = json!("U0OTHER");
    let a = ingest.slack(&slack_callback("Ev5", other), &[]).await;
    assert_eq!(a.json["status"], "accepted", "{}", a.json);
    ingest.take_task_and_ack(Stage::Generate).await;
    // The API answers 429 with Retry-After.
    let task = json!({"text": "explain the parser"});
    for _ in 0..2 {
        assert_eq!(ingest.api(&token("submit"), &task, None).await.status, 202);
        ingest.take_task_and_ack(Stage::Generate).await;
    }
    let a = ingest.api(&token("submit"), &task, None).await;
    assert_eq!((a.status, a.error()), (429, "rate_limited"), "{}", a.json);
    assert!(a.headers.contains_key("retry-after"));
    ingest.assert_nothing_queued().await;
}

/// A policy file letting one Slack channel read `acme/secret`.
fn policy_file() -> PolicyFile {
    PolicyFile::new(
        "[[slack]]\nteam = \"T0001\"\nchannel = \"C0ALLOWED\"\nrepositories = [\"acme/secret\"]\n\n[[api]]\ntoken = \"client\"\nrepositories = [\"acme/*\"]\n",
    )
}

#[tokio::test]
async fn a_repository_the_channel_may_not_read_is_refused_in_its_thread_and_never_queued() {
    let policy = policy_file();
    let ingest = TestIngest::start_with(&[("CONTEXTEN_POLICY_FILE", &policy.path)]).await;
    let text = "<@U0BOT> explain src/auth.rs in https://github.com/acme/secret";
    let body = slack_callback("EvP1", slack_mention("C0OTHER", "1712.2001", None, text));
    let a = ingest.slack(&body, &[]).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let (answer, props) = ingest.take(Stage::Dispatch).await;
    assert_eq!(
        props.delivery_mode(),
        &Some(2),
        "a refusal is persisted like a task"
    );
    assert_eq!(answer.reply, Some(ReplyKind::Failure));
    assert_eq!(
        answer.request.repository, None,
        "nothing downstream can fetch it"
    );
    let result = answer.result.as_ref().unwrap();
    assert_eq!(result.reason.as_deref(), Some("repository_not_allowed"));
    assert!(result.summary.contains("C0OTHER"), "{}", result.summary);
    assert!(
        result.summary.contains("github.com/acme/secret"),
        "{}",
        result.summary
    );
    assert_eq!(
        answer.source.reply_to,
        contexten_envelope::ReplyTarget::Slack {
            channel: "C0OTHER".into(),
            thread_ts: "1712.2001".into()
        }
    );
    ingest.assert_nothing_queued().await;

    // The channel the policy names gets its task, with the repository.
    let body = slack_callback("EvP2", slack_mention("C0ALLOWED", "1712.2002", None, text));
    assert_eq!(ingest.slack(&body, &[]).await.json["status"], "accepted");
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(
        task.request.repository.as_ref().map(|r| r.url.as_str()),
        Some("https://github.com/acme/secret.git")
    );

    // The API: a 403 naming the missing permission, for a token without it.
    let request = json!({"text": "explain the parser", "repository_url": "https://github.com/acme/secret.git"});
    let a = ingest.api(&token("submit"), &request, None).await;
    assert_eq!(
        (a.status, a.error()),
        (403, "repository_not_allowed"),
        "{}",
        a.json
    );
    assert!(
        a.json["message"].as_str().unwrap().contains("submitter"),
        "{}",
        a.json
    );
    let a = ingest.api(&token("both"), &request, None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    ingest.take_task_and_ack(Stage::Context).await;
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn api_urls_pointing_inside_are_refused_before_anything_is_queued() {
    let ingest = TestIngest::start().await;
    for (field, url) in [
        ("repository_url", "https://127.0.0.1/octo-org/x.git"),
        ("repository_url", "https://localhost/octo-org/x.git"),
        ("repository_url", "https://169.254.169.254/octo-org/x.git"),
        (
            "repository_url",
            "https://user:pw@github.com/octo-org/x.git",
        ),
        ("callback_url", "https://10.0.0.5/hook"),
        ("callback_url", "http://[::ffff:10.0.0.1]/hook"),
        ("callback_url", "http://hooks.example.test/plain"),
    ] {
        let mut request = json!({"text": "explain the parser"});
        request[field] = json!(url);
        let a = ingest.api(&token("both"), &request, None).await;
        assert_eq!(
            (a.status, a.error()),
            (400, "outbound_refused"),
            "{url}: {}",
            a.json
        );
        assert!(
            !a.json["message"].as_str().unwrap().contains("pw"),
            "{}",
            a.json
        );
    }
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_github_comment_reads_another_repository_only_where_its_owner_may() {
    let policy =
        PolicyFile::new("[[github]]\nowner = \"octo-org\"\nrepositories = [\"octo-org/docs\"]\n");
    let ingest = TestIngest::start_with(&[("CONTEXTEN_POLICY_FILE", &policy.path)]).await;
    let ask = |number: u64, url: &str| {
        github_comment(
            number,
            &format!("/contexten explain the setup in {url}"),
            "octocat",
            "OWNER",
        )
    };
    // Granted to the owner: read instead of the event's own repository.
    let body = ask(51, "https://github.com/octo-org/docs");
    assert_eq!(
        ingest
            .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &body)
            .await
            .status,
        202
    );
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(
        task.request.repository.unwrap().url,
        "https://github.com/octo-org/docs.git"
    );
    // Not granted: the comment is answered from its own repository, the other
    // one is never queued.
    let body = ask(52, "https://github.com/someone-else/private");
    assert_eq!(
        ingest
            .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &body)
            .await
            .status,
        202
    );
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(task.request.repository.unwrap().url, CLONE_URL);
    ingest.assert_nothing_queued().await;
}
