use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_envelope::ReplyKind;
use dispatcher::SLACK_EVENT_TYPE;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const POST: &str = "/api/chat.postMessage";

fn posted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true, "channel": "C0123456", "ts": "1700000001.000200",
        "message": {"type": "message", "subtype": "bot_message", "text": "…", "ts": "1700000001.000200"}
    }))
}

fn not_ok(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": error}))
}

#[tokio::test]
async fn a_final_answer_is_a_message_in_the_requests_thread_with_blocks_and_metadata() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .and(header(
            "authorization",
            format!("Bearer {}", slack_token()).as_str(),
        ))
        .and(body_partial_json(
            json!({"channel": "C0123456", "thread_ts": "1700000000.000100"}),
        ))
        .respond_with(posted())
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = envelope(slack_target(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let sent = &bodies(&t.slack, POST).await[0];
    assert_eq!(sent["metadata"]["event_type"], SLACK_EVENT_TYPE);
    assert_eq!(
        sent["metadata"]["event_payload"]["key"],
        format!("{}:final", env.task_id)
    );
    assert!(sent["text"].as_str().unwrap().contains("parse_duration"));
    let blocks = sent["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("```\npub fn parse_duration")
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("C0123456/1700000001.000200"), "{record}");
}

#[tokio::test]
async fn an_acknowledgement_is_a_reaction_on_the_thread_parent() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/api/reactions.add"))
        .and(body_partial_json(
            json!({"channel": "C0123456", "timestamp": "1700000000.000100", "name": "eyes"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = envelope(slack_target(), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn an_existing_reaction_counts_as_acknowledged() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/api/reactions.add"))
        .respond_with(not_ok("already_reacted"))
        .mount(&t.slack)
        .await;
    let env = envelope(slack_target(), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn ok_false_at_http_200_is_a_permanent_error_with_slacks_code() {
    for error in [
        "channel_not_found",
        "invalid_auth",
        "not_in_channel",
        "is_archived",
    ] {
        let t = TestDispatch::start().await;
        Mock::given(method("POST"))
            .and(path(POST))
            .respond_with(not_ok(error))
            .expect(1)
            .mount(&t.slack)
            .await;
        let env = envelope(slack_target(), ReplyKind::Final);
        match t.handler.dispatch(env).await {
            Outcome::DeadLetter(reason) => assert_eq!(reason.code, error),
            other => panic!("{error}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_429_with_retry_after_and_ratelimited_at_200_are_retried_after_the_delay() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "3")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(not_ok("ratelimited").insert_header("retry-after", "2"))
        .mount(&t.slack)
        .await;
    let env = envelope(slack_target(), ReplyKind::Final);
    for expected in [3, 2] {
        match t.handler.dispatch(env.clone()).await {
            Outcome::RetryAfter(delay, reason) => {
                assert_eq!(delay, Duration::from_secs(expected));
                assert_eq!(reason.code, "rate_limited");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn after_an_uncertain_post_the_thread_is_searched_by_metadata() {
    let t = TestDispatch::start().await;
    let env = envelope(slack_target(), ReplyKind::Final);
    redis_set(
        &t.store,
        &attempt_key(&t.names, &env, ReplyKind::Final),
        "1764000000",
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/conversations.replies"))
        .and(query_param("channel", "C0123456"))
        .and(query_param("ts", "1700000000.000100"))
        .and(query_param("include_all_metadata", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "has_more": false,
            "messages": [
                {"type": "message", "ts": "1700000000.000100", "text": "@contexten please"},
                {"type": "message", "ts": "1700000005.000300", "text": "done",
                 "metadata": {"event_type": SLACK_EVENT_TYPE, "event_payload": {"key": format!("{}:final", env.task_id)}}}
            ]
        })))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted())
        .expect(0)
        .mount(&t.slack)
        .await;
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("1700000005.000300"), "{record}");
    t.slack.verify().await;
}

#[tokio::test]
async fn a_second_message_to_a_busy_channel_is_rescheduled_instead_of_held() {
    let t = TestDispatch::start_with(|s| {
        s.limits.slack_per_channel_per_second = 1;
        s.limits.max_wait = Duration::ZERO;
    })
    .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted())
        .expect(1)
        .mount(&t.slack)
        .await;
    let first = envelope(slack_target(), ReplyKind::Final);
    let second = envelope(slack_target(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(first).await, Outcome::Done);
    match t.handler.dispatch(second.clone()).await {
        Outcome::Forward(next) => {
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].stage, contexten_envelope::Stage::Dispatch);
            assert_eq!(next[0].envelope.task_id, second.task_id);
            let delay = next[0].delay.expect("a delayed redelivery");
            assert!(
                delay > Duration::ZERO && delay <= Duration::from_secs(1),
                "{delay:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    t.slack.verify().await;
}
