//! GitLab replies against a fake speaking GitLab's REST v4: the
//! acknowledgement is an award emoji, answers are notes (replies in the
//! trigger's discussion), an uncertain post is found by its marker, long
//! answers are cut at the note limit, and errors become outcomes.

use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_envelope::{ReplyKind, ReplyTarget, ResultKind};
use contexten_providers::gitlab::{GitlabTarget, NOTE_LIMIT, Noteable};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const DISCUSSION: &str = "6a9c1750b37d513a43987b574953fceb50b03ce7";
const ISSUE_NOTES: &str = "/api/v4/projects/15/issues/7/notes";

fn issue_target(note_id: Option<u64>) -> ReplyTarget {
    GitlabTarget {
        project_id: 15,
        noteable: Noteable::Issue,
        iid: 7,
        discussion_id: None,
        note_id,
    }
    .reply_target()
}

fn merge_request_in_discussion() -> ReplyTarget {
    GitlabTarget {
        project_id: 15,
        noteable: Noteable::MergeRequest,
        iid: 3,
        discussion_id: Some(DISCUSSION.into()),
        note_id: Some(1244),
    }
    .reply_target()
}

fn note(id: u64, body: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "DiscussionNote",
        "body": body,
        "author": {"id": 1, "username": "contexten-bot"},
        "created_at": "2026-11-29T12:00:00.000Z",
        "system": false,
        "noteable_iid": 7
    })
}

fn created(id: u64) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(note(id, "…"))
}

#[tokio::test]
async fn an_acknowledgement_is_an_award_emoji_on_the_trigger_note_once() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/api/v4/projects/15/merge_requests/3/notes/1244/award_emoji",
        ))
        .and(header("private-token", gitlab_token().as_str()))
        .and(body_json(json!({"name": "eyes"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 4, "name": "eyes", "awardable_id": 1244, "awardable_type": "Note"
        })))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    let env = envelope(merge_request_in_discussion(), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    // A redelivery finds the record: nothing is awarded again.
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn without_a_trigger_note_the_award_goes_on_the_issue_and_an_existing_one_counts() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/issues/7/award_emoji"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "message": "404 Award Emoji Name has already been taken Not Found"
        })))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    let env = envelope(issue_target(None), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn a_final_answer_is_one_note_with_its_marker_and_the_code() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(ISSUE_NOTES))
        .and(header("private-token", gitlab_token().as_str()))
        .respond_with(created(302))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    let env = envelope(issue_target(Some(11)), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let body = bodies(&t.gitlab, ISSUE_NOTES).await[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        body.starts_with(&format!("<!-- contexten:task={}:final -->", env.task_id)),
        "{body}"
    );
    assert!(body.contains("```rust\npub fn parse_duration"), "{body}");
}

#[tokio::test]
async fn in_a_discussion_the_answer_is_a_reply_in_that_discussion() {
    let t = TestDispatch::start().await;
    let thread = format!("/api/v4/projects/15/merge_requests/3/discussions/{DISCUSSION}/notes");
    Mock::given(method("POST"))
        .and(path(thread.as_str()))
        .respond_with(created(303))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/merge_requests/3/notes"))
        .respond_with(created(304))
        .expect(0)
        .mount(&t.gitlab)
        .await;
    let env = envelope(merge_request_in_discussion(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert!(bodies(&t.gitlab, &thread).await[0]["body"].is_string());
}

#[tokio::test]
async fn after_an_uncertain_post_the_note_is_found_and_not_posted_again() {
    let t = TestDispatch::start().await;
    // GitLab created the note but the answer was lost: a 502 from its proxy.
    Mock::given(method("POST"))
        .and(path(ISSUE_NOTES))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    let env = envelope(issue_target(Some(11)), ReplyKind::Final);
    let marker = format!("<!-- contexten:task={}:final -->", env.task_id);
    Mock::given(method("GET"))
        .and(path(ISSUE_NOTES))
        .and(query_param("sort", "desc"))
        .and(query_param("order_by", "created_at"))
        .and(query_param("per_page", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            note(12, "a human's note"),
            note(11, &format!("{marker}\nthe answer")),
        ])))
        .expect(1)
        .mount(&t.gitlab)
        .await;

    let first = t.handler.dispatch(env.clone()).await;
    assert!(
        matches!(&first, Outcome::RetryAfter(_, r) if r.code == "provider_unavailable"),
        "{first:?}"
    );
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    // Recorded now: a third delivery neither searches nor posts.
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn a_too_long_answer_is_cut_at_the_note_limit_with_a_closed_fence() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(ISSUE_NOTES))
        .respond_with(created(305))
        .expect(1)
        .mount(&t.gitlab)
        .await;
    let mut env = envelope(issue_target(None), ReplyKind::Final);
    let result = env.result.as_mut().unwrap();
    result.kind = ResultKind::Code;
    result.text = Some("let x = 1; // é\n".repeat(NOTE_LIMIT / 16 + 10_000));
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    let body = bodies(&t.gitlab, ISSUE_NOTES).await[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    let chars = body.chars().count();
    assert!(chars <= NOTE_LIMIT && chars > NOTE_LIMIT - 1_000, "{chars}");
    assert!(
        body.contains("**…truncated:**"),
        "{}",
        &body[body.len() - 500..]
    );
    assert!(body.contains("\n```\n\n**…truncated:**"));
}

#[tokio::test]
async fn without_a_token_replies_are_dead_lettered_as_not_configured() {
    let t = TestDispatch::start_with(|s| s.gitlab = None).await;
    let env = envelope(issue_target(Some(11)), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "provider_not_configured"),
        other => panic!("{other:?}"),
    }
    assert!(t.gitlab.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_token_is_dead_lettered_and_a_limit_waits_for_retry_after() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(ISSUE_NOTES))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_string("Retry later"),
        )
        .up_to_n_times(1)
        .mount(&t.gitlab)
        .await;
    Mock::given(method("POST"))
        .and(path(ISSUE_NOTES))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "401 Unauthorized"})),
        )
        .mount(&t.gitlab)
        .await;
    let env = envelope(issue_target(None), ReplyKind::Final);
    match t.handler.dispatch(env.clone()).await {
        Outcome::RetryAfter(delay, reason) => {
            assert_eq!(delay, Duration::from_secs(30));
            assert_eq!(reason.code, "rate_limited");
        }
        other => panic!("{other:?}"),
    }
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => {
            assert_eq!(reason.code, "unauthorized");
            assert!(
                reason.detail.contains("401 Unauthorized"),
                "{}",
                reason.detail
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_gitlab_target_without_its_fields_is_an_invalid_reply_target() {
    let t = TestDispatch::start().await;
    let target: ReplyTarget =
        serde_json::from_value(json!({"kind": "gitlab", "project_id": "not a number"})).unwrap();
    let env = envelope(target, ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => {
            assert_eq!(reason.code, "invalid_reply_target");
            assert!(reason.detail.contains("gitlab"), "{}", reason.detail);
        }
        other => panic!("{other:?}"),
    }
    assert!(t.gitlab.received_requests().await.unwrap().is_empty());
}
