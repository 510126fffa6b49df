use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_config::Secret;
use contexten_envelope::ReplyKind;
use contexten_providers::linear::LinearAuth;
use dispatcher::{ReplySlot, linear_comment_id};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

fn created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "data": {"commentCreate": {"success": true, "comment": {
            "id": id, "body": "…", "url": format!("https://linear.app/acme/issue/ENG-123#comment-{id}"),
            "user": {"id": "u1", "name": "contexten"}
        }}}
    }))
}

fn slot(env: &contexten_envelope::TaskEnvelope, kind: ReplyKind) -> ReplySlot {
    ReplySlot {
        task: env.task_id,
        kind,
        discriminator: None,
    }
}

#[tokio::test]
async fn a_reply_is_a_threaded_comment_sent_with_the_raw_api_key() {
    let t = TestDispatch::start().await;
    let env = envelope(linear_target(), ReplyKind::Final);
    let id = linear_comment_id(&slot(&env, ReplyKind::Final));
    Mock::given(method("POST"))
        .and(path("/graphql"))
        .and(header("authorization", linear_key().as_str()))
        .and(body_partial_json(json!({"variables": {"input": {
            "issueId": "ENG-123",
            "parentId": "c0ffee00-0000-4000-8000-000000000001",
            "id": id,
        }}})))
        .respond_with(created(&id))
        .expect(1)
        .mount(&t.linear)
        .await;
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let sent = &bodies(&t.linear, "/graphql").await[0];
    assert!(
        sent["query"]
            .as_str()
            .unwrap()
            .contains("commentCreate(input: $input)")
    );
    let body = sent["variables"]["input"]["body"].as_str().unwrap();
    assert!(body.contains("```rust\npub fn parse_duration"), "{body}");
    assert!(body.contains("_contexten · task"), "{body}");
    assert!(!body.contains("<!--"), "no HTML in Linear: {body}");
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 4, "Linear wants a v4-shaped id");
}

#[tokio::test]
async fn an_oauth_token_is_sent_as_bearer() {
    let token = ["lin", "_oauth_", "token"].concat();
    let auth = LinearAuth::from_setting(&Secret::from(token.clone()));
    let t = TestDispatch::start_with(move |s| s.linear = Some(auth)).await;
    Mock::given(method("POST"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(created("c1"))
        .expect(1)
        .mount(&t.linear)
        .await;
    let env = envelope(linear_target(), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn a_ratelimited_graphql_error_waits_for_the_window_reset() {
    let t = TestDispatch::start().await;
    let reset_ms = (contexten_providers::time::unix_now() + 20) * 1000;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-ratelimit-requests-reset", reset_ms.to_string().as_str())
                .set_body_json(json!({"errors": [{
                    "message": "Rate limit exceeded",
                    "extensions": {"code": "RATELIMITED", "type": "ratelimited", "userPresentableMessage": "Too many requests"}
                }]})),
        )
        .mount(&t.linear)
        .await;
    let env = envelope(linear_target(), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::RetryAfter(delay, reason) => {
            assert_eq!(reason.code, "rate_limited");
            assert!(
                delay > Duration::from_secs(15) && delay <= Duration::from_secs(20),
                "{delay:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_forbidden_graphql_error_is_dead_lettered_with_its_code() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"errors": [{
            "message": "You don't have access to this team",
            "extensions": {"code": "FORBIDDEN"}
        }]})))
        .mount(&t.linear)
        .await;
    // The create is refused; the check for an own earlier comment finds none.
    let env = envelope(linear_target(), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "forbidden"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn after_an_uncertain_create_the_comment_id_is_looked_up_instead_of_created_again() {
    let t = TestDispatch::start().await;
    let env = envelope(linear_target(), ReplyKind::Final);
    let id = linear_comment_id(&slot(&env, ReplyKind::Final));
    // The process died after sending commentCreate: only the attempt mark is left.
    redis_set(
        &t.store,
        &attempt_key(&t.names, &env, ReplyKind::Final),
        "1764000000",
    )
    .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"variables": {"id": id}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"comment": {"id": id, "url": "https://linear.app/acme/issue/ENG-123#comment-x"}}
        })))
        .expect(1)
        .mount(&t.linear)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"variables": {"input": {"issueId": "ENG-123"}}}),
        ))
        .respond_with(created(&id))
        .expect(0)
        .mount(&t.linear)
        .await;
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains(&id), "{record}");
    t.linear.verify().await;
}
