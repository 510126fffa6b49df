use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::{Priority, ReplyKind, ReplyTarget, SourceKind, Stage, Strategy};
use ingest::intake::{ACK_HOP, TASK_HOP};

fn delivery() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn github_command_comment_becomes_exactly_one_task_and_one_acknowledgement() {
    let ingest = TestIngest::start().await;
    let body = github_comment(
        7,
        "/contexten agent please refactor the parser",
        "octocat",
        "MEMBER",
    );
    let id = delivery();
    let answer = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(answer.status, 202, "{}", answer.json);

    let (task, ack) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(answer.json["task_id"], task.task_id.to_string());
    assert_eq!(task.source.kind, SourceKind::GITHUB);
    assert_eq!(task.source.delivery_id.as_deref(), Some(id.as_str()));
    assert_eq!(task.source.requested_by.as_deref(), Some("octocat"));
    assert_eq!(
        task.source.reply_to,
        ReplyTarget::Github {
            repo: REPO.into(),
            number: 7,
            comment_id: Some(1362007)
        }
    );
    assert_eq!(task.strategy, Strategy::Agent);
    assert_eq!(task.strategy_rule.as_deref(), Some("command:agent"));
    assert_eq!(task.priority, Priority::Normal);
    assert_eq!(task.request.text, "please refactor the parser");
    assert_eq!(task.request.repository.as_ref().unwrap().url, CLONE_URL);
    assert_eq!(task.source.extra["installation_id"], 2311213);
    let conversation = task.conversation.as_ref().unwrap();
    assert_eq!(conversation.id, format!("github:{REPO}#7"));
    assert_eq!(conversation.previous_task_id, None);
    assert_eq!((task.hop, task.reply), (TASK_HOP, None));
    assert_eq!((ack.hop, ack.reply), (ACK_HOP, Some(ReplyKind::Ack)));

    assert_eq!(
        status_field(&ingest, &task, "state").await.as_deref(),
        Some("queued:context")
    );
    let summary: serde_json::Value =
        serde_json::from_str(&status_field(&ingest, &task, "summary").await.unwrap()).unwrap();
    assert_eq!(summary["source"], "github");
    assert_eq!(summary["strategy"], "agent");
    assert_eq!(summary["strategy_rule"], "command:agent");
    assert_eq!(summary["priority"], "normal");
    assert!(
        status_field(&ingest, &task, "timing:ingest")
            .await
            .is_some()
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn redelivered_github_delivery_creates_nothing_new() {
    let ingest = TestIngest::start().await;
    let body = github_comment(
        8,
        "/contexten generate a slugify function",
        "octocat",
        "OWNER",
    );
    let id = delivery();
    let first = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(first.status, 202);
    let (task, _ack) = ingest.take_task_and_ack(Stage::Generate).await;
    assert_eq!(task.strategy, Strategy::Simple);

    // GitHub's manual redelivery carries the same X-GitHub-Delivery.
    let again = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["task_id"], task.task_id.to_string());
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn follow_up_in_the_same_issue_carries_the_previous_task_id() {
    let ingest = TestIngest::start().await;
    let first = github_comment(
        9,
        "@contexten-bot speed up `parse_duration`",
        "octocat",
        "MEMBER",
    );
    assert_eq!(
        ingest
            .github("issue_comment", &delivery(), &first)
            .await
            .status,
        202
    );
    let (task1, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(task1.strategy_rule.as_deref(), Some("rules:one-function"));

    let second = github_comment(9, "/contexten agent now open a PR", "octocat", "MEMBER");
    assert_eq!(
        ingest
            .github("issue_comment", &delivery(), &second)
            .await
            .status,
        202
    );
    let (task2, _) = ingest.take_task_and_ack(Stage::Context).await;
    let conversation = task2.conversation.unwrap();
    assert_eq!(conversation.id, format!("github:{REPO}#9"));
    assert_eq!(conversation.previous_task_id, Some(task1.task_id));
}

#[tokio::test]
async fn bot_authored_and_unaddressed_comments_are_ignored() {
    let ingest = TestIngest::start().await;
    let cases = [
        (
            github_comment(10, "/contexten agent loop forever", BOT_LOGIN, "MEMBER"),
            "own_event",
        ),
        (
            github_comment(10, "/contexten agent loop", "dependabot[bot]", "MEMBER"),
            "bot_sender",
        ),
        (
            github_comment(10, "just a normal comment", "octocat", "MEMBER"),
            "not_addressed_to_bot",
        ),
        (
            github_comment(10, "/contexten do it", "drive-by", "NONE"),
            "author_not_allowed",
        ),
        (
            github_comment(10, "/contextenfoo do it", "octocat", "OWNER"),
            "not_addressed_to_bot",
        ),
    ];
    for (body, reason) in cases {
        let answer = ingest.github("issue_comment", &delivery(), &body).await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(answer.json["reason"], reason);
    }
    let mut edited = github_comment(10, "/contexten go", "octocat", "OWNER");
    edited["action"] = "edited".into();
    let answer = ingest.github("issue_comment", &delivery(), &edited).await;
    assert_eq!(answer.json["reason"], "action_not_handled");
    let answer = ingest
        .github(
            "star",
            &delivery(),
            &serde_json::json!({"action": "created"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.json["reason"].as_str()),
        (200, Some("event_not_handled"))
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn labeled_issues_and_pull_requests_become_tasks_with_the_label_strategy() {
    let ingest = TestIngest::start().await;
    let answer = ingest
        .github(
            "issues",
            &delivery(),
            &github_issue_labeled(11, "contexten"),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(
        task.request.text,
        "Add a --since flag\n\nThe CLI should accept `--since 1h` in src/cli.rs."
    );
    assert_eq!(task.request.hints.paths, vec!["src/cli.rs"]);
    assert_eq!(task.source.requested_by.as_deref(), Some("maintainer"));

    let answer = ingest
        .github(
            "pull_request",
            &delivery(),
            &github_pr_labeled(12, "contexten:agent"),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(task.strategy, Strategy::Agent);
    assert_eq!(task.strategy_rule.as_deref(), Some("label:contexten:agent"));
    // A PR from a fork is read from the base repository, where GitHub keeps
    // its head as refs/pull/12/head: the fork's URL is never fetched.
    let repo = task.request.repository.unwrap();
    assert_eq!(repo.url, "https://github.com/octo-org/hello-world.git");
    assert_eq!(repo.reference.as_deref(), Some("refs/pull/12/head"));
    assert_eq!(task.request.extra["github_pull_request"], 12);
    assert_eq!(task.conversation.unwrap().id, format!("github:{REPO}#12"));

    let answer = ingest
        .github("issues", &delivery(), &github_issue_labeled(13, "wontfix"))
        .await;
    assert_eq!(
        (answer.status, answer.json["reason"].as_str()),
        (200, Some("label_not_ours"))
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn github_ping_is_answered_and_creates_nothing() {
    let ingest = TestIngest::start().await;
    let answer = ingest.github("ping", &delivery(), &github_ping()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["zen"], "Design for failure.");
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn github_bad_input_gets_the_right_4xx_with_a_reason() {
    let ingest = TestIngest::start_with(&[("INGEST_MAX_BODY_BYTES", "4096")]).await;
    let body =
        serde_json::to_vec(&github_comment(14, "/contexten go", "octocat", "OWNER")).unwrap();

    // Wrong signature (signed by another secret).
    let mut headers = github_headers("issue_comment", &delivery(), &body);
    headers[5].1 = format!(
        "sha256={}",
        ingest::verify::sign_hex(&secret("other"), &body)
    );
    let a = ingest
        .post("/webhooks/github", &headers, body.clone())
        .await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    // Missing signature.
    headers.remove(5);
    let a = ingest
        .post("/webhooks/github", &headers, body.clone())
        .await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    // Malformed JSON, correctly signed.
    let junk = b"{\"action\": \"created\", ".to_vec();
    let a = ingest
        .post(
            "/webhooks/github",
            &github_headers("issue_comment", &delivery(), &junk),
            junk,
        )
        .await;
    assert_eq!((a.status, a.error()), (400, "malformed_json"));
    // Wrong content type (a hook configured for form encoding).
    let mut headers = github_headers("issue_comment", &delivery(), &body);
    headers[0].1 = "application/x-www-form-urlencoded".into();
    let a = ingest
        .post("/webhooks/github", &headers, body.clone())
        .await;
    assert_eq!((a.status, a.error()), (415, "unsupported_media_type"));
    // Over the limit: with Content-Length, and streamed without one.
    let big = vec![b' '; 5000];
    let a = ingest
        .post(
            "/webhooks/github",
            &github_headers("issue_comment", &delivery(), &big),
            big.clone(),
        )
        .await;
    assert_eq!((a.status, a.error()), (413, "body_too_large"));
    // Chunked, so only the streaming limit can catch it.
    let mut head = String::from(
        "POST /webhooks/github HTTP/1.1\r\nhost: ingest\r\ntransfer-encoding: chunked\r\nconnection: close\r\n",
    );
    for (k, v) in github_headers("issue_comment", &delivery(), &big) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    for chunk in big.chunks(1000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_http(&ingest.url, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    // Missing delivery id.
    let mut headers = github_headers("issue_comment", &delivery(), &body);
    headers.retain(|(k, _)| *k != "x-github-delivery");
    let a = ingest
        .post("/webhooks/github", &headers, body.clone())
        .await;
    assert_eq!((a.status, a.error()), (400, "missing_header"));
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn githubs_documented_test_vector_passes_the_http_signature_check() {
    // docs.github.com "Validating webhook deliveries": the payload is not JSON,
    // so getting past 401 to 400 shows the signature was accepted.
    let secret = ["It's a Secret", " to Everybody"].concat();
    let ingest = TestIngest::start_with(&[("GITHUB_WEBHOOK_SECRET", secret.as_str())]).await;
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-github-event", "issue_comment".to_owned()),
        ("x-github-delivery", delivery()),
        (
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned(),
        ),
    ];
    let a = ingest
        .post("/webhooks/github", &headers, b"Hello, World!".to_vec())
        .await;
    assert_eq!((a.status, a.error()), (400, "malformed_json"));
    let a = ingest
        .post("/webhooks/github", &headers, b"Hello, World?".to_vec())
        .await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
}

#[tokio::test]
async fn a_provider_without_its_secret_is_disabled_not_open() {
    let ingest = TestIngest::start_with(&[("SLACK_SIGNING_SECRET", "")]).await;
    let a = ingest
        .slack(
            &serde_json::json!({"type": "url_verification", "challenge": "x"}),
            &[],
        )
        .await;
    assert_eq!((a.status, a.error()), (404, "provider_disabled"));
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("SLACK_SIGNING_SECRET")
    );
}

/// Sends raw bytes over one connection and returns the whole answer.
async fn raw_http(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
