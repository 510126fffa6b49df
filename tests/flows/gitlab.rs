//! GitLab through the whole fleet (docs/platforms.md, GitLab): a note to the
//! bot is answered with one note where it was asked (a reply in its
//! discussion when it had one) after an 👀 award on it; a merge request is
//! read from its source project at `last_commit.id`; a wrong
//! `X-Gitlab-Token`, a redelivered event and the bot's own notes create
//! nothing.

use contexten_fleet_tests::fakes::{Fakes, gitlab};
use contexten_fleet_tests::harness::*;
use contexten_testkit::git;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const PROJECT: u64 = 15;
const DISCUSSION: &str = "6a9c1750b37d513a43987b574953fceb50b03ce7";
/// How long a test waits for something that must not happen.
const QUIET: Duration = Duration::from_secs(3);

/// Two bare repositories under `root`, served by the harness's git server:
/// the project `acme/api.git` (`main`: app/timeutil.py) and a fork
/// `alice/api.git` whose branch `bounded-retries` adds app/retry.py with
/// `retry_backoff_seconds`; neither's default branch has that file. Returns
/// the fork branch's head commit.
fn repositories(root: &Path) -> String {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("app")).unwrap();
    std::fs::write(
        work.join("app/timeutil.py"),
        "\"\"\"Time helpers.\"\"\"\n\n\ndef format_duration(seconds: int) -> str:\n    \"\"\"Render seconds as '1h30m'.\"\"\"\n    hours, rest = divmod(seconds, 3600)\n    return f'{hours}h{rest // 60}m'\n",
    )
    .unwrap();
    std::fs::write(work.join("README.md"), "# api\nDurations.\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["checkout", "-q", "-b", "bounded-retries"]);
    std::fs::write(
        work.join("app/retry.py"),
        "def retry_backoff_seconds(attempt: int) -> int:\n    \"\"\"Seconds to wait before retry number `attempt`.\"\"\"\n    return min(300, 2 ** attempt)\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "Bound the retries"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "main"]);
    for (owner, branches) in [
        ("acme", &["main"][..]),
        ("alice", &["main", "bounded-retries"][..]),
    ] {
        std::fs::create_dir_all(root.join(owner)).unwrap();
        let bare = root.join(owner).join("api.git");
        git(
            root,
            &[
                "clone",
                "-q",
                "--bare",
                "--",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        if !branches.contains(&"bounded-retries") {
            git(&bare, &["update-ref", "-d", "refs/heads/bounded-retries"]);
        }
    }
    head
}

/// A fleet with the two repositories served; returns it, the project's and
/// the fork's clone URLs and the fork's head.
async fn start() -> (Fleet, String, String, String) {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let root = fleet.dir.path().join("git");
    let head = repositories(&root);
    fleet.fakes.serve_git(&root).await;
    let uri = fleet.fakes.github.uri();
    (
        fleet,
        format!("{uri}/acme/api.git"),
        format!("{uri}/alice/api.git"),
        head,
    )
}

fn user(username: &str) -> Value {
    json!({"id": 4, "name": username, "username": username,
           "avatar_url": "https://gitlab.example.com/uploads/avatar.png", "email": "[REDACTED]"})
}

fn project(url: &str) -> Value {
    json!({
        "id": PROJECT, "name": "api", "description": "", "web_url": "https://gitlab.example.com/acme/api",
        "git_ssh_url": "git@gitlab.example.com:acme/api.git", "git_http_url": url,
        "namespace": "acme", "visibility_level": 0, "path_with_namespace": "acme/api",
        "default_branch": "main", "http_url": url
    })
}

/// A `Note Hook` by `username` on issue `iid` of the project at `url`, in
/// `discussion` when given.
fn issue_note(
    url: &str,
    iid: u64,
    note_id: u64,
    note: &str,
    username: &str,
    discussion: Option<&str>,
) -> Value {
    json!({
        "object_kind": "note",
        "event_type": "note",
        "user": user(username),
        "project_id": PROJECT,
        "project": project(url),
        "object_attributes": {
            "id": note_id, "note": note, "noteable_type": "Issue", "author_id": 4,
            "created_at": "2026-12-06 10:00:00 UTC", "updated_at": "2026-12-06 10:00:00 UTC",
            "project_id": PROJECT, "system": false, "discussion_id": discussion,
            "type": discussion.map(|_| "DiscussionNote"), "action": "create",
            "url": format!("https://gitlab.example.com/acme/api/-/issues/{iid}#note_{note_id}")
        },
        "issue": {
            "id": 90 + iid, "iid": iid, "title": "Parse durations",
            "description": "We can format durations but not parse them.",
            "project_id": PROJECT, "state": "opened", "labels": []
        }
    })
}

fn notes_path(noteable: &str, iid: u64) -> String {
    format!("{}/projects/{PROJECT}/{noteable}/{iid}/notes", gitlab::API)
}

fn discussion_path(noteable: &str, iid: u64) -> String {
    format!(
        "{}/projects/{PROJECT}/{noteable}/{iid}/discussions/{DISCUSSION}/notes",
        gitlab::API
    )
}

fn text(seen: &gitlab::Seen) -> &str {
    seen.body["body"].as_str().unwrap_or_default()
}

/// Waits for a note at `path` containing `needle` and returns its body.
async fn note_at(fleet: &Fleet, path: &str, needle: &str) -> String {
    let found = eventually(FLOW_WITHIN, || async {
        gitlab::posted(&fleet.fakes.gitlab, path)
            .await
            .iter()
            .map(text)
            .find(|b| b.contains(needle))
            .map(str::to_owned)
    })
    .await;
    match found {
        Some(body) => body,
        None => panic!(
            "no note containing {needle:?} at {path}: {:?}\n{}",
            gitlab::requests(&fleet.fakes.gitlab).await,
            fleet.logs(60)
        ),
    }
}

/// Every request the fake GitLab got carried the fleet's token.
async fn all_with_the_token(fleet: &Fleet) {
    let requests = gitlab::requests(&fleet.fakes.gitlab).await;
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.token.as_deref(),
            Some(gitlab::token().as_str()),
            "{request:?}"
        );
    }
}

/// Nothing reached GitLab or the model.
async fn nothing_happened(fleet: &Fleet) {
    assert!(
        gitlab::requests(&fleet.fakes.gitlab).await.is_empty(),
        "{:?}",
        gitlab::requests(&fleet.fakes.gitlab).await
    );
    assert!(
        Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
            .await
            .is_empty(),
        "the model was asked"
    );
}

#[tokio::test]
async fn a_gitlab_issue_note_is_answered_with_one_note_after_an_award_on_it() {
    let (fleet, project_url, _, _) = start().await;
    let payload = issue_note(
        &project_url,
        7,
        1241,
        "/contexten context write a new module app/parsing.py with a parse_duration function",
        "alice",
        None,
    );
    let response = fleet
        .gitlab_webhook("Note Hook", &uuid::Uuid::now_v7().to_string(), &payload)
        .await;
    assert_eq!(response.status(), 202);

    let answer = note_at(&fleet, &notes_path("issues", 7), "def parse_duration").await;
    assert!(answer.contains("```python"), "{answer}");
    tokio::time::sleep(QUIET).await;
    let notes = gitlab::all_notes(&fleet.fakes.gitlab).await;
    assert_eq!(notes.len(), 1, "exactly one note: {notes:?}");
    assert_eq!(notes[0].path, notes_path("issues", 7));
    let awards = gitlab::awards(&fleet.fakes.gitlab).await;
    assert_eq!(awards.len(), 1, "{awards:?}");
    assert_eq!(
        awards[0].path,
        format!(
            "{}/projects/{PROJECT}/issues/7/notes/1241/award_emoji",
            gitlab::API
        )
    );
    assert_eq!(awards[0].body["name"], "eyes");
    all_with_the_token(&fleet).await;
    // The model read the project's default branch.
    let prompts: String = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        prompts.contains("def format_duration"),
        "the project's code"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_gitlab_note_in_a_discussion_is_answered_in_that_discussion() {
    let (fleet, project_url, _, _) = start().await;
    let payload = issue_note(
        &project_url,
        8,
        1250,
        "@contexten-bot write a new module app/parsing.py with a parse_duration function",
        "alice",
        Some(DISCUSSION),
    );
    let response = fleet
        .gitlab_webhook("Note Hook", &uuid::Uuid::now_v7().to_string(), &payload)
        .await;
    assert_eq!(response.status(), 202);

    note_at(&fleet, &discussion_path("issues", 8), "def parse_duration").await;
    tokio::time::sleep(QUIET).await;
    assert!(
        gitlab::posted(&fleet.fakes.gitlab, &notes_path("issues", 8))
            .await
            .is_empty(),
        "nothing on the plain notes endpoint"
    );
    let notes = gitlab::all_notes(&fleet.fakes.gitlab).await;
    assert_eq!(notes.len(), 1, "one reply: {notes:?}");
    all_with_the_token(&fleet).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_gitlab_merge_request_note_reads_the_source_project_at_its_last_commit() {
    let (fleet, project_url, fork_url, head) = start().await;
    let mut payload = issue_note(
        &project_url,
        3,
        1260,
        "/contexten context how long does retry_backoff_seconds wait after the third attempt?",
        "alice",
        Some(DISCUSSION),
    );
    payload["object_attributes"]["noteable_type"] = "MergeRequest".into();
    let body = payload.as_object_mut().unwrap();
    body.remove("issue");
    body.insert(
        "merge_request".into(),
        json!({
            "id": 301, "iid": 3, "target_branch": "main", "source_branch": "bounded-retries",
            "source_project_id": 16, "target_project_id": PROJECT,
            "title": "Bound the retries", "description": "Caps the backoff.",
            "state": "opened", "labels": [],
            "source": {"name": "api", "namespace": "alice", "path_with_namespace": "alice/api",
                       "git_http_url": fork_url, "default_branch": "main"},
            "target": project(&project_url),
            "last_commit": {"id": head, "message": "Bound the retries",
                            "timestamp": "2026-12-06T09:00:00+00:00"}
        }),
    );
    let response = fleet
        .gitlab_webhook("Note Hook", &uuid::Uuid::now_v7().to_string(), &payload)
        .await;
    assert_eq!(response.status(), 202);

    let answer = note_at(
        &fleet,
        &discussion_path("merge_requests", 3),
        "def parse_duration",
    )
    .await;
    assert!(
        answer.contains(&format!("Read at commit {}.", &head[..7])),
        "the answer names the head commit: {answer}"
    );
    let prompts: String = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        prompts.contains("def retry_backoff_seconds(attempt: int)"),
        "the head's file (on no default branch) is in the prompt"
    );
    assert!(
        !Fakes::requests(&fleet.fakes.github, "POST", "/alice/api.git/*")
            .await
            .is_empty(),
        "the source project was fetched"
    );
    assert!(
        Fakes::requests(&fleet.fakes.github, "POST", "/acme/api.git/*")
            .await
            .is_empty(),
        "the target project was not"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_gitlab_webhook_with_a_wrong_token_is_refused_and_creates_nothing() {
    let (fleet, project_url, _, _) = start().await;
    let payload = issue_note(
        &project_url,
        9,
        1270,
        "/contexten context add a parse_duration function",
        "alice",
        None,
    );
    let wrong = format!("{}x", gitlab_secret());
    let response = fleet
        .gitlab_webhook_with(
            "Note Hook",
            &uuid::Uuid::now_v7().to_string(),
            &wrong,
            &payload,
        )
        .await;
    assert_eq!(response.status(), 401);
    tokio::time::sleep(QUIET).await;
    nothing_happened(&fleet).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_redelivered_gitlab_event_is_answered_once() {
    let (fleet, project_url, _, _) = start().await;
    let payload = issue_note(
        &project_url,
        10,
        1280,
        "/contexten context write a new module app/parsing.py with a parse_duration function",
        "alice",
        None,
    );
    let event = uuid::Uuid::now_v7().to_string();
    let first = fleet.gitlab_webhook("Note Hook", &event, &payload).await;
    assert_eq!(first.status(), 202);
    let second = fleet.gitlab_webhook("Note Hook", &event, &payload).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["status"], "duplicate", "{second}");

    note_at(&fleet, &notes_path("issues", 10), "def parse_duration").await;
    tokio::time::sleep(QUIET).await;
    let notes = gitlab::all_notes(&fleet.fakes.gitlab).await;
    assert_eq!(notes.len(), 1, "one answer: {notes:?}");
    assert_eq!(gitlab::awards(&fleet.fakes.gitlab).await.len(), 1);
    fleet.stop().await;
}

#[tokio::test]
async fn a_note_by_the_bot_itself_is_ignored() {
    let (fleet, project_url, _, _) = start().await;
    let payload = issue_note(
        &project_url,
        11,
        1290,
        "/contexten context add a parse_duration function",
        BOT_LOGIN,
        None,
    );
    let response = fleet
        .gitlab_webhook("Note Hook", &uuid::Uuid::now_v7().to_string(), &payload)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ignored", "{body}");
    tokio::time::sleep(QUIET).await;
    nothing_happened(&fleet).await;
    fleet.stop().await;
}
