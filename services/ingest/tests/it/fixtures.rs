//! Payloads shaped like the providers' real ones (field names and nesting from
//! their documentation), trimmed to what ingest reads plus some it must ignore.

use contexten_envelope::now_ms;
pub use contexten_envelope::time::rfc3339;
use serde_json::{Value, json};

pub const REPO: &str = "octo-org/hello-world";
pub const CLONE_URL: &str = "https://github.com/octo-org/hello-world.git";

fn user(login: &str, kind: &str) -> Value {
    json!({"login": login, "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==", "type": kind, "site_admin": false})
}

fn repository() -> Value {
    json!({
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": "hello-world",
        "full_name": REPO, "private": false, "owner": user("octo-org", "Organization"),
        "html_url": "https://github.com/octo-org/hello-world",
        "clone_url": CLONE_URL, "default_branch": "main"
    })
}

/// `issue_comment` `created` on issue `number` by `login`.
pub fn github_comment(number: u64, body: &str, login: &str, association: &str) -> Value {
    json!({
        "action": "created",
        "issue": {
            "url": format!("https://api.github.com/repos/{REPO}/issues/{number}"),
            "number": number, "title": "Duration parsing is slow", "state": "open",
            "body": "Parsing `1h30m` takes 2 ms.", "user": user("octocat", "User"),
            "labels": [{"id": 208045946, "name": "bug", "color": "f29513"}],
            "author_association": "OWNER"
        },
        "comment": {
            "id": 1362000 + number, "node_id": "IC_kwDOA", "body": body,
            "html_url": format!("https://github.com/{REPO}/issues/{number}#issuecomment-1"),
            "user": user(login, if login.ends_with("[bot]") { "Bot" } else { "User" }),
            "author_association": association, "created_at": rfc3339(now_ms() / 1000)
        },
        "repository": repository(),
        "organization": {"login": "octo-org", "id": 9919},
        "sender": user(login, if login.ends_with("[bot]") { "Bot" } else { "User" }),
        "installation": {"id": 2311213, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMjMxMTIxMw=="}
    })
}

/// `issues` `labeled` with `label`.
pub fn github_issue_labeled(number: u64, label: &str) -> Value {
    json!({
        "action": "labeled",
        "issue": {
            "number": number, "title": "Add a --since flag",
            "body": "The CLI should accept `--since 1h` in src/cli.rs.",
            "user": user("octocat", "User"), "state": "open",
            "labels": [{"id": 1, "name": label}], "author_association": "NONE"
        },
        "label": {"id": 1, "name": label, "color": "ededed"},
        "repository": repository(),
        "sender": user("maintainer", "User"),
        "installation": {"id": 2311213}
    })
}

/// `pull_request` `labeled` with `label`.
pub fn github_pr_labeled(number: u64, label: &str) -> Value {
    json!({
        "action": "labeled", "number": number,
        "pull_request": {
            "number": number, "title": "Speed up parsing", "body": "Please review.",
            "state": "open", "labels": [{"id": 2, "name": label}],
            "head": {"ref": "fast-parse", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
                     "repo": {"full_name": "fork-owner/hello-world", "clone_url": "https://github.com/fork-owner/hello-world.git"}},
            "base": {"ref": "main", "repo": {"full_name": REPO, "clone_url": CLONE_URL}}
        },
        "label": {"id": 2, "name": label},
        "repository": repository(),
        "sender": user("maintainer", "User")
    })
}

pub fn github_ping() -> Value {
    json!({"zen": "Design for failure.", "hook_id": 4242,
           "hook": {"type": "App", "id": 4242, "active": true, "events": ["issue_comment"], "app_id": 77},
           "sender": user("octocat", "User")})
}

/// An Events API `event_callback` wrapping `event`.
pub fn slack_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "deprecated-verification-token", "team_id": "T0001", "api_app_id": "A0001",
        "event": event, "type": "event_callback", "event_id": event_id,
        "event_time": now_ms() / 1000,
        "authorizations": [{"enterprise_id": null, "team_id": "T0001", "user_id": "U0BOT", "is_bot": true}]
    })
}

pub fn slack_mention(channel: &str, ts: &str, thread_ts: Option<&str>, text: &str) -> Value {
    let mut event = json!({
        "type": "app_mention", "user": "U0HUMAN", "text": text, "ts": ts,
        "client_msg_id": "c1a0e8b4-0000-4000-8000-000000000001",
        "channel": channel, "event_ts": ts, "team": "T0001"
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    event
}

pub fn slack_thread_message(channel: &str, ts: &str, thread_ts: &str, text: &str) -> Value {
    json!({
        "type": "message", "user": "U0HUMAN", "text": text, "ts": ts, "thread_ts": thread_ts,
        "channel": channel, "event_ts": ts, "channel_type": "channel"
    })
}

/// A Linear Issue webhook.
pub fn linear_issue(action: &str, data: Value, updated_from: Option<Value>, actor: &str) -> Value {
    let mut body = json!({
        "action": action, "type": "Issue",
        "actor": {"id": actor, "type": "user", "name": "Grace Hopper"},
        "createdAt": "2026-11-29T12:00:00.000Z", "data": data,
        "url": "https://linear.app/acme/issue/ENG-42/speed-up-parsing",
        "organizationId": "0c1d2e3f-0000-4000-8000-000000000001",
        "webhookTimestamp": now_ms(), "webhookId": "9f8e7d6c-0000-4000-8000-000000000002"
    });
    if let Some(u) = updated_from {
        body["updatedFrom"] = u;
    }
    body
}

pub fn linear_issue_data(id: &str, labels: &[(&str, &str)], assignee: Option<&str>) -> Value {
    json!({
        "id": id, "identifier": "ENG-42", "title": "Speed up parsing",
        "description": "See `parse_duration` in src/time.rs.",
        "teamId": "team-1", "stateId": "state-1", "priority": 2,
        "assigneeId": assignee,
        "labelIds": labels.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "labels": labels.iter().map(|(id, name)| json!({"id": id, "name": name, "color": "#000"})).collect::<Vec<_>>()
    })
}

pub fn linear_comment(issue_id: &str, comment_id: &str, body: &str, actor: &str) -> Value {
    json!({
        "action": "create", "type": "Comment",
        "actor": {"id": actor, "type": "user", "name": "Grace Hopper"},
        "createdAt": "2026-11-29T12:00:00.000Z",
        "data": {"id": comment_id, "body": body, "issueId": issue_id, "userId": actor,
                 "issue": {"id": issue_id, "title": "Speed up parsing", "teamId": "team-1"}},
        "url": "https://linear.app/acme/issue/ENG-42#comment-1",
        "organizationId": "0c1d2e3f-0000-4000-8000-000000000001",
        "webhookTimestamp": now_ms(), "webhookId": "9f8e7d6c-0000-4000-8000-000000000002"
    })
}
