//! `POST /webhooks/gitlab`: payloads shaped like GitLab's documented `Note Hook`,
//! `Issue Hook` and `Merge Request Hook` bodies (field names and nesting from
//! GitLab's "Webhook events" page), trimmed to what ingest reads plus some it
//! must ignore. Values are synthetic.

use crate::helpers::*;
use contexten_envelope::{SourceKind, Stage, Strategy, TaskEnvelope};
use contexten_providers::gitlab::{GitlabTarget, Noteable};
use serde_json::{Value, json};

const SERVER: &str = "https://gitlab.example.com";
const PROJECT_URL: &str = "https://gitlab.example.com/acme/platform/api.git";
const FORK_URL: &str = "https://gitlab.example.com/alice/api.git";
const HEAD: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
const DISCUSSION: &str = "6a9c1750b37d513a43987b574953fceb50b03ce7";

async fn start() -> TestIngest {
    TestIngest::start_with(&[("CONTEXTEN_GIT_SERVERS", SERVER)]).await
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A delivery with `token` in `X-Gitlab-Token`.
async fn send_with(
    ingest: &TestIngest,
    event: &str,
    uuid: &str,
    token: &str,
    body: &Value,
) -> Answer {
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-gitlab-event", event.to_owned()),
        ("x-gitlab-event-uuid", uuid.to_owned()),
        (
            "x-gitlab-webhook-uuid",
            "2d8e1a0c-0000-4000-8000-00000000f00d".to_owned(),
        ),
        ("x-gitlab-instance", SERVER.to_owned()),
        ("x-gitlab-token", token.to_owned()),
        ("user-agent", "GitLab/17.5.0".to_owned()),
    ];
    ingest
        .post(
            "/webhooks/gitlab",
            &headers,
            serde_json::to_vec(body).unwrap(),
        )
        .await
}

async fn send(ingest: &TestIngest, event: &str, uuid: &str, body: &Value) -> Answer {
    send_with(ingest, event, uuid, &gitlab_secret(), body).await
}

fn user(username: &str) -> Value {
    json!({"id": 4, "name": username, "username": username,
           "avatar_url": "https://gitlab.example.com/uploads/avatar.png", "email": "[REDACTED]"})
}

fn project() -> Value {
    json!({
        "id": 15, "name": "api", "description": "", "web_url": "https://gitlab.example.com/acme/platform/api",
        "avatar_url": null, "git_ssh_url": "git@gitlab.example.com:acme/platform/api.git",
        "git_http_url": PROJECT_URL, "namespace": "platform", "visibility_level": 0,
        "path_with_namespace": "acme/platform/api", "default_branch": "main",
        "homepage": "https://gitlab.example.com/acme/platform/api",
        "url": "git@gitlab.example.com:acme/platform/api.git",
        "ssh_url": "git@gitlab.example.com:acme/platform/api.git", "http_url": PROJECT_URL
    })
}

fn label(title: &str) -> Value {
    json!({"id": 206, "title": title, "color": "#dc143c", "project_id": 15,
           "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
           "template": false, "description": null, "type": "ProjectLabel", "group_id": null})
}

/// A `Note Hook` on issue 7 by `username`.
fn issue_note(note_id: u64, note: &str, username: &str) -> Value {
    json!({
        "object_kind": "note",
        "event_type": "note",
        "user": user(username),
        "project_id": 15,
        "project": project(),
        "repository": {"name": "api", "url": PROJECT_URL, "description": "",
                       "homepage": "https://gitlab.example.com/acme/platform/api"},
        "object_attributes": {
            "id": note_id, "note": note, "noteable_type": "Issue", "author_id": 4,
            "created_at": "2026-12-06 10:00:00 UTC", "updated_at": "2026-12-06 10:00:00 UTC",
            "project_id": 15, "attachment": null, "line_code": null, "commit_id": "",
            "noteable_id": 92, "system": false, "st_diff": null,
            "discussion_id": DISCUSSION, "type": null, "action": "create",
            "url": format!("https://gitlab.example.com/acme/platform/api/-/issues/7#note_{note_id}")
        },
        "issue": {
            "id": 92, "iid": 7, "title": "Retries are not bounded", "description": "See `retry.rs`.",
            "project_id": 15, "state": "opened", "labels": [label("bug")],
            "created_at": "2026-12-01 09:00:00 UTC", "updated_at": "2026-12-06 10:00:00 UTC"
        }
    })
}

/// A `Note Hook` on merge request 3, opened from a fork.
fn merge_request_note(note_id: u64, note: &str) -> Value {
    let mut body = issue_note(note_id, note, "alice");
    let attributes = &mut body["object_attributes"];
    attributes["noteable_type"] = "MergeRequest".into();
    attributes["type"] = "DiscussionNote".into();
    attributes["url"] =
        format!("https://gitlab.example.com/acme/platform/api/-/merge_requests/3#note_{note_id}")
            .into();
    let body_map = body.as_object_mut().unwrap();
    body_map.remove("issue");
    body_map.insert(
        "merge_request".into(),
        json!({
            "id": 301, "iid": 3, "target_branch": "main", "source_branch": "bounded-retries",
            "source_project_id": 16, "target_project_id": 15, "author_id": 4,
            "title": "Bound the retries", "description": "Caps them at five.",
            "state": "opened", "merge_status": "can_be_merged", "labels": [],
            "source": {"name": "api", "web_url": "https://gitlab.example.com/alice/api",
                       "git_ssh_url": "git@gitlab.example.com:alice/api.git",
                       "git_http_url": FORK_URL, "namespace": "alice",
                       "path_with_namespace": "alice/api", "default_branch": "main"},
            "target": project(),
            "last_commit": {"id": HEAD, "message": "Bound the retries",
                            "timestamp": "2026-12-06T09:00:00+00:00",
                            "url": format!("https://gitlab.example.com/alice/api/-/commit/{HEAD}"),
                            "author": {"name": "Alice", "email": "alice@example.com"}},
            "work_in_progress": false, "draft": false
        }),
    );
    body
}

/// An `Issue Hook` updating issue 9's labels from `previous` to `current`.
fn issue_labeled(previous: &[&str], current: &[&str]) -> Value {
    let labels = |titles: &[&str]| titles.iter().map(|t| label(t)).collect::<Vec<_>>();
    json!({
        "object_kind": "issue",
        "event_type": "issue",
        "user": user("maintainer"),
        "project": project(),
        "object_attributes": {
            "id": 93, "iid": 9, "title": "Add a --since flag",
            "description": "The CLI should accept `--since 1h` in src/cli.rs.",
            "action": "update", "state": "opened", "project_id": 15,
            "created_at": "2026-12-01 09:00:00 UTC", "updated_at": "2026-12-06 11:00:00 UTC",
            "labels": labels(current),
            "url": "https://gitlab.example.com/acme/platform/api/-/issues/9"
        },
        "labels": labels(current),
        "changes": {
            "updated_at": {"previous": "2026-12-06 10:00:00 UTC", "current": "2026-12-06 11:00:00 UTC"},
            "labels": {"previous": labels(previous), "current": labels(current)}
        },
        "repository": {"name": "api", "url": PROJECT_URL, "description": "",
                       "homepage": "https://gitlab.example.com/acme/platform/api"}
    })
}

/// Takes the task (from the first stage of the strategy the answer names)
/// and its acknowledgement.
async fn take_task(ingest: &TestIngest, answer: &Answer) -> TaskEnvelope {
    assert_eq!(answer.status, 202, "{}", answer.json);
    let strategy: Strategy = serde_json::from_value(answer.json["strategy"].clone()).unwrap();
    let (task, _ack) = ingest.take_task_and_ack(strategy.first_stage()).await;
    assert_eq!(answer.json["task_id"], task.task_id.to_string());
    task
}

fn target(task: &TaskEnvelope) -> GitlabTarget {
    GitlabTarget::from_reply_target(&task.source.reply_to)
        .expect("a GitLab reply target")
        .expect("readable")
}

#[tokio::test]
async fn a_note_to_the_bot_on_an_issue_becomes_one_task_answered_in_its_discussion() {
    let ingest = start().await;
    let id = uuid();
    let answer = send(
        &ingest,
        "Note Hook",
        &id,
        &issue_note(
            1244,
            "/contexten agent bound the retries in `retry.rs`",
            "alice",
        ),
    )
    .await;
    let task = take_task(&ingest, &answer).await;
    assert_eq!(task.source.kind, SourceKind::named("gitlab"));
    assert_eq!(task.source.delivery_id.as_deref(), Some(id.as_str()));
    assert_eq!(task.source.requested_by.as_deref(), Some("alice"));
    assert_eq!(
        target(&task),
        GitlabTarget {
            project_id: 15,
            noteable: Noteable::Issue,
            iid: 7,
            discussion_id: Some(DISCUSSION.into()),
            note_id: Some(1244),
        }
    );
    assert_eq!(task.strategy, Strategy::Agent);
    assert_eq!(task.strategy_rule.as_deref(), Some("command:agent"));
    assert_eq!(task.request.text, "bound the retries in `retry.rs`");
    let repository = task.request.repository.as_ref().unwrap();
    assert_eq!(repository.url, PROJECT_URL);
    assert_eq!(repository.reference.as_deref(), Some("main"));
    assert_eq!(task.conversation.as_ref().unwrap().id, "gitlab:15:issue:7");
    assert_eq!(
        status_field(&ingest, &task, "state").await.as_deref(),
        Some("queued:context")
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_mention_in_a_merge_request_discussion_reads_the_merge_request_head() {
    let ingest = start().await;
    let answer = send(
        &ingest,
        "Note Hook",
        &uuid(),
        &merge_request_note(1250, "@contexten-bot agent why does this retry forever?"),
    )
    .await;
    let task = take_task(&ingest, &answer).await;
    assert_eq!(
        target(&task),
        GitlabTarget {
            project_id: 15,
            noteable: Noteable::MergeRequest,
            iid: 3,
            discussion_id: Some(DISCUSSION.into()),
            note_id: Some(1250),
        }
    );
    let repository = task.request.repository.as_ref().unwrap();
    assert_eq!(repository.url, FORK_URL);
    assert_eq!(repository.reference.as_deref(), Some(HEAD));
    assert_eq!(task.request.extra["gitlab_merge_request"], 3);
    assert_eq!(task.request.extra["gitlab_target_branch"], "main");
    assert_eq!(
        task.conversation.as_ref().unwrap().id,
        "gitlab:15:merge_request:3"
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_wrong_or_missing_gitlab_token_is_refused_with_401() {
    let ingest = start().await;
    let body = issue_note(1260, "/contexten agent fix it", "alice");
    let wrong = ["glwh-test-", "token-", "0005"].concat();
    let a = send_with(&ingest, "Note Hook", &uuid(), &wrong, &body).await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    let a = ingest
        .post(
            "/webhooks/gitlab",
            &[("content-type", "application/json".to_owned())],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!((a.status, a.error()), (401, "bad_signature"));
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("X-Gitlab-Token")
    );
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn the_same_event_uuid_twice_creates_one_task() {
    let ingest = start().await;
    let body = issue_note(1270, "/contexten agent add a test for `retry`", "alice");
    let id = uuid();
    let first = send(&ingest, "Note Hook", &id, &body).await;
    let task = take_task(&ingest, &first).await;
    let again = send(&ingest, "Note Hook", &id, &body).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["task_id"], task.task_id.to_string());
    // The same body under a new UUID (a captured request sent again) neither.
    let replayed = send(&ingest, "Note Hook", &uuid(), &body).await;
    assert_eq!(replayed.status, 200, "{}", replayed.json);
    assert_eq!(replayed.json["reason"], "replayed_body");
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn notes_by_the_bot_or_not_for_it_are_ignored() {
    let ingest = start().await;
    let cases = [
        (
            issue_note(1280, "/contexten agent on it", BOT_LOGIN),
            "own_event",
        ),
        (
            issue_note(1281, "Looks good to me.", "alice"),
            "not_addressed_to_bot",
        ),
        (
            {
                let mut snippet = issue_note(1282, "/contexten agent explain", "alice");
                snippet["object_attributes"]["noteable_type"] = "Snippet".into();
                snippet
            },
            "noteable_not_handled",
        ),
        (
            {
                let mut elsewhere = issue_note(1283, "/contexten agent explain", "alice");
                elsewhere["project"]["git_http_url"] =
                    "https://git.elsewhere.example/acme/api.git".into();
                elsewhere
            },
            "git_server_not_allowed",
        ),
    ];
    for (body, reason) in cases {
        let a = send(&ingest, "Note Hook", &uuid(), &body).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["status"], "ignored");
        assert_eq!(a.json["reason"], reason);
    }
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn an_issue_given_the_trigger_label_becomes_a_task_and_one_that_keeps_it_does_not() {
    let ingest = start().await;
    let answer = send(
        &ingest,
        "Issue Hook",
        &uuid(),
        &issue_labeled(&["bug"], &["bug", "contexten"]),
    )
    .await;
    let task = take_task(&ingest, &answer).await;
    assert_eq!(
        task.request.text,
        "Add a --since flag\n\nThe CLI should accept `--since 1h` in src/cli.rs."
    );
    assert_eq!(
        target(&task),
        GitlabTarget {
            project_id: 15,
            noteable: Noteable::Issue,
            iid: 9,
            discussion_id: None,
            note_id: None,
        }
    );
    assert_eq!(task.source.requested_by.as_deref(), Some("maintainer"));
    let repository = task.request.repository.as_ref().unwrap();
    assert_eq!(
        (repository.url.as_str(), repository.reference.as_deref()),
        (PROJECT_URL, Some("main"))
    );

    // Another label change on an issue that already has it is not a request.
    let again = send(
        &ingest,
        "Issue Hook",
        &uuid(),
        &issue_labeled(&["bug", "contexten"], &["contexten"]),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["reason"], "not_labeled");
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn gitlab_without_its_secret_is_disabled_not_open() {
    let ingest = TestIngest::start_with(&[("GITLAB_WEBHOOK_SECRET", "")]).await;
    let body = issue_note(1290, "/contexten agent fix it", "alice");
    let a = send(&ingest, "Note Hook", &uuid(), &body).await;
    assert_eq!((a.status, a.error()), (404, "provider_disabled"));
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("GITLAB_WEBHOOK_SECRET")
    );
}

#[tokio::test]
async fn the_requester_limit_applies_to_gitlab_users_too() {
    let ingest = TestIngest::start_with(&[
        ("CONTEXTEN_GIT_SERVERS", SERVER),
        ("INGEST_REQUESTER_LIMIT", "1"),
    ])
    .await;
    let first = send(
        &ingest,
        "Note Hook",
        &uuid(),
        &issue_note(1300, "/contexten agent first", "alice"),
    )
    .await;
    take_task(&ingest, &first).await;
    let second = send(
        &ingest,
        "Note Hook",
        &uuid(),
        &issue_note(1301, "/contexten agent second", "alice"),
    )
    .await;
    assert_eq!(second.status, 202, "{}", second.json);
    assert_eq!(second.json["status"], "refused");
    assert_eq!(second.json["reason"], "rate_limited");
    // Refused at the door: answered in the issue's discussion, nothing runs.
    let (answer, _) = ingest.take(Stage::Dispatch).await;
    assert_eq!(answer.reply, Some(contexten_envelope::ReplyKind::Failure));
    assert_eq!(target(&answer).note_id, Some(1301));
    assert!(answer.request.repository.is_none());
    ingest.assert_nothing_queued().await;
}
