use crate::helpers::*;
use contexten_broker::{Outcome, Store};
use contexten_config::{Env, RedisSettings};
use contexten_envelope::{ReplyKind, ReplyTarget, Stage};
use dispatcher::DispatchHandler;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

const COMMENTS: &str = "/repos/octo/hello/issues/7/comments";

fn created(id: u64) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "id": id,
        "node_id": "IC_kwDOA",
        "html_url": format!("https://github.com/octo/hello/issues/7#issuecomment-{id}"),
        "body": "…",
        "user": {"login": "contexten[bot]", "type": "Bot"},
        "created_at": "2026-11-29T12:00:00Z"
    }))
}

#[tokio::test]
async fn a_final_answer_is_a_comment_in_the_issue_thread_with_code_links_and_footer() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .and(header(
            "authorization",
            format!("Bearer {}", github_token()).as_str(),
        ))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
        .respond_with(created(9001))
        .expect(1)
        .mount(&t.github)
        .await;
    let mut env = envelope(github_target(), ReplyKind::Final);
    env.result.as_mut().unwrap().pull_requests =
        vec!["https://github.com/octo/hello/pull/12".into()];

    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let body = bodies(&t.github, COMMENTS).await[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        body.starts_with(&format!("<!-- contexten:task={}:final -->", env.task_id)),
        "{body}"
    );
    assert!(body.contains("```rust\npub fn parse_duration"), "{body}");
    assert!(
        body.contains("[#12](https://github.com/octo/hello/pull/12)"),
        "{body}"
    );
    assert!(
        body.contains("1,234 tokens") && body.contains("4.2 s"),
        "{body}"
    );
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("\"external_id\":\"9001\""), "{record}");
}

#[tokio::test]
async fn an_acknowledgement_is_an_eyes_reaction_on_the_request_comment() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/comments/11/reactions"))
        .and(body_json(json!({"content": "eyes"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 5, "content": "eyes"})))
        .expect(1)
        .mount(&t.github)
        .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(created(1))
        .expect(0)
        .mount(&t.github)
        .await;
    let env = envelope(github_target(), ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}

#[tokio::test]
async fn without_a_request_comment_the_acknowledgement_is_a_comment() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(created(77))
        .expect(1)
        .mount(&t.github)
        .await;
    let target = ReplyTarget::Github {
        repo: "octo/hello".into(),
        number: 7,
        comment_id: None,
    };
    let env = envelope(target, ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    let body = bodies(&t.github, COMMENTS).await[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(body.contains("**On it.**"), "{body}");
}

#[tokio::test]
async fn a_redelivered_dispatch_message_posts_nothing_new() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(created(9001))
        .expect(1)
        .mount(&t.github)
        .await;
    let env = envelope(github_target(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let mut again = env.clone();
    again.hop += 3; // a re-published copy, not only a redelivery of the same hop
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert_eq!(t.handler.dispatch(again).await, Outcome::Done);
    t.github.verify().await;
}

#[tokio::test]
async fn without_redis_a_reply_waits_instead_of_posting_unrecorded() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(created(9001))
        .expect(1)
        .mount(&t.github)
        .await;
    // The same platforms, with a Redis that refuses connections.
    let redis =
        RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", "redis://127.0.0.1:1")])).unwrap();
    let store = Store::new(&redis, t.names.clone()).unwrap();
    let cut_off = DispatchHandler::new(&settings(&t.github, &t.linear, &t.slack), store).unwrap();
    let env = envelope(github_target(), ReplyKind::Final);

    let waiting = cut_off.dispatch(env.clone()).await;
    let Outcome::Forward(next) = &waiting else {
        panic!("expected the reply to come back later, got {waiting:?}");
    };
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].stage, Stage::Dispatch);
    assert!(next[0].delay.is_some_and(|d| d >= Duration::from_secs(1)));
    assert!(
        bodies(&t.github, COMMENTS).await.is_empty(),
        "posted without a ledger"
    );

    // Redis is back: the deferred copy posts once, a second copy nothing.
    let deferred = *next[0].envelope.clone();
    assert_eq!(t.handler.dispatch(deferred.clone()).await, Outcome::Done);
    assert_eq!(t.handler.dispatch(deferred).await, Outcome::Done);
    t.github.verify().await;
}

#[tokio::test]
async fn a_post_that_failed_ambiguously_is_found_by_its_marker_instead_of_posted_twice() {
    let t = TestDispatch::start().await;
    let env = envelope(github_target(), ReplyKind::Final);
    // The first POST reaches GitHub, which creates the comment but answers 502.
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .expect(1)
        .mount(&t.github)
        .await;
    let listed = json!([
        {"id": 1, "html_url": "https://github.com/octo/hello/issues/7#issuecomment-1", "body": "unrelated"},
        {"id": 4242, "html_url": "https://github.com/octo/hello/issues/7#issuecomment-4242",
         "body": format!("<!-- contexten:task={}:final -->\n✅ done", env.task_id)}
    ]);
    Mock::given(method("GET"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(listed))
        .expect(1)
        .mount(&t.github)
        .await;

    let first = t.handler.dispatch(env.clone()).await;
    assert!(
        matches!(&first, Outcome::RetryAfter(_, r) if r.code == "provider_unavailable"),
        "{first:?}"
    );
    assert!(
        redis_get(&t.store, &attempt_key(&t.names, &env, ReplyKind::Final))
            .await
            .is_some()
    );

    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("4242"), "{record}");
    let search = &t.github.received_requests().await.unwrap()[1];
    assert!(
        search.url.query().unwrap_or("").contains("since="),
        "{}",
        search.url
    );
    t.github.verify().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_delay_and_posts_without_a_search() {
    let t = TestDispatch::start().await;
    let scripted = Scripted::new(vec![
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_json(json!({"message": "slow down"})),
        created(3),
    ]);
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(scripted.clone())
        .mount(&t.github)
        .await;
    Mock::given(method("GET"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&t.github)
        .await;
    let env = envelope(github_target(), ReplyKind::Final);
    let outcome = t.handler.dispatch(env.clone()).await;
    match outcome {
        Outcome::RetryAfter(delay, reason) => {
            assert_eq!(delay, Duration::from_secs(7));
            assert_eq!(reason.code, "rate_limited");
        }
        other => panic!("{other:?}"),
    }
    // Nothing was applied, so the next delivery posts straight away.
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert_eq!(scripted.arrivals().len(), 2);
    t.github.verify().await;
}

#[tokio::test]
async fn secondary_limits_on_403_wait_for_the_reset_or_a_minute() {
    let t = TestDispatch::start().await;
    let reset = contexten_providers::time::unix_now() + 30;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .up_to_n_times(1)
        .mount(&t.github)
        .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
        })))
        .mount(&t.github)
        .await;
    let env = envelope(github_target(), ReplyKind::Final);
    match t.handler.dispatch(env.clone()).await {
        Outcome::RetryAfter(delay, reason) => {
            assert!((28..=30).contains(&delay.as_secs()), "{delay:?}");
            assert_eq!(reason.code, "rate_limited");
        }
        other => panic!("{other:?}"),
    }
    match t.handler.dispatch(env).await {
        Outcome::RetryAfter(delay, _) => assert_eq!(delay, Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn permanent_errors_are_dead_lettered_with_their_reason() {
    for (status, code) in [
        (404, "not_found"),
        (410, "gone"),
        (422, "unprocessable"),
        (403, "forbidden"),
    ] {
        let t = TestDispatch::start().await;
        Mock::given(method("POST"))
            .and(path(COMMENTS))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_json(json!({"message": "Resource not accessible by integration"})),
            )
            .expect(1)
            .mount(&t.github)
            .await;
        let env = envelope(github_target(), ReplyKind::Final);
        match t.handler.dispatch(env.clone()).await {
            Outcome::DeadLetter(reason) => {
                assert_eq!(reason.code, code, "HTTP {status}");
                assert!(
                    reason.detail.contains("github refused the final reply"),
                    "{}",
                    reason.detail
                );
            }
            other => panic!("HTTP {status}: {other:?}"),
        }
        assert!(
            redis_get(&t.store, &attempt_key(&t.names, &env, ReplyKind::Final))
                .await
                .is_none()
        );
    }
}

#[tokio::test]
async fn without_credentials_replies_are_dead_lettered_as_not_configured() {
    let t = TestDispatch::start_with(|s| s.github = None).await;
    let env = envelope(github_target(), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "provider_not_configured"),
        other => panic!("{other:?}"),
    }
    assert!(t.github.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn content_creation_beyond_the_per_minute_budget_is_rescheduled() {
    let t = TestDispatch::start_with(|s| {
        s.limits.github_per_minute = 2;
        s.limits.max_wait = Duration::from_millis(100);
    })
    .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(created(1))
        .expect(2)
        .mount(&t.github)
        .await;
    for _ in 0..2 {
        let env = envelope(github_target(), ReplyKind::Final);
        assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    }
    let third = envelope(github_target(), ReplyKind::Final);
    match t.handler.dispatch(third).await {
        Outcome::Forward(next) => {
            let delay = next[0].delay.expect("a delayed redelivery");
            assert!(
                delay > Duration::from_secs(50) && delay <= Duration::from_secs(60),
                "{delay:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    t.github.verify().await;
}
