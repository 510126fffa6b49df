use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_envelope::ReplyKind;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// How long the fake takes to answer the acknowledgement.
const SLOW_ACK: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_final_answer_waits_for_an_acknowledgement_being_posted() {
    let t = TestDispatch::start().await;
    let ack = Scripted::new(vec![
        ResponseTemplate::new(201)
            .set_body_json(json!({"id": 5}))
            .set_delay(SLOW_ACK),
    ]);
    let comment = Scripted::new(vec![
        ResponseTemplate::new(201).set_body_json(json!({"id": 6, "html_url": ""})),
    ]);
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/comments/11/reactions"))
        .respond_with(ack.clone())
        .mount(&t.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(comment.clone())
        .mount(&t.github)
        .await;
    let acknowledgement = envelope(github_target(), ReplyKind::Ack);
    let mut answer = acknowledgement.clone();
    answer.reply = Some(ReplyKind::Final);

    let handler = t.handler.clone();
    let posting_ack = tokio::spawn(async move { handler.dispatch(acknowledgement).await });
    // Start the answer once the acknowledgement is on the wire.
    tokio::time::timeout(WAIT, async {
        while ack.arrivals().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the acknowledgement reaches the fake");
    assert_eq!(t.handler.dispatch(answer).await, Outcome::Done);
    assert_eq!(posting_ack.await.unwrap(), Outcome::Done);

    let (ack_at, answer_at) = (ack.arrivals()[0].1, comment.arrivals()[0].1);
    assert!(
        answer_at >= ack_at + SLOW_ACK,
        "the answer was posted {:?} after the ack started",
        answer_at - ack_at
    );
}

#[tokio::test]
async fn an_acknowledgement_arriving_after_the_answer_is_skipped() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 6})))
        .expect(1)
        .mount(&t.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/comments/11/reactions"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 5})))
        .expect(0)
        .mount(&t.github)
        .await;
    let answer = envelope(github_target(), ReplyKind::Final);
    let mut late_ack = answer.clone();
    late_ack.reply = Some(ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(answer).await, Outcome::Done);
    assert_eq!(t.handler.dispatch(late_ack).await, Outcome::Done);
    t.github.verify().await;
}

#[tokio::test]
async fn distinct_progress_messages_post_once_each() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 6})))
        .expect(2)
        .mount(&t.github)
        .await;
    let mut progress = envelope(github_target(), ReplyKind::Progress);
    progress.result.as_mut().unwrap().summary = "The agent is running.".into();
    progress.result.as_mut().unwrap().web_url = Some("https://codegen.com/agent/trace/1".into());
    let mut later = progress.clone();
    later.result.as_mut().unwrap().summary = "The agent opened a pull request.".into();
    for env in [progress.clone(), progress, later.clone(), later] {
        assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    }
    let sent = bodies(&t.github, "/repos/octo/hello/issues/7/comments").await;
    assert!(
        sent[0]["body"]
            .as_str()
            .unwrap()
            .contains("[View the run](https://codegen.com/agent/trace/1)")
    );
    t.github.verify().await;
}

#[tokio::test]
async fn concurrent_deliveries_of_one_reply_post_it_once() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": 6}))
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&t.github)
        .await;
    let env = envelope(github_target(), ReplyKind::Final);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let handler = t.handler.clone();
            let env = env.clone();
            tokio::spawn(async move { handler.dispatch(env).await })
        })
        .collect();
    let mut done = 0;
    for run in runs {
        match run.await.unwrap() {
            Outcome::Done => done += 1,
            // The others found the reply being posted and look again later.
            Outcome::Forward(next) => assert!(next[0].delay.is_some()),
            other => panic!("{other:?}"),
        }
    }
    assert!(done >= 1);
    t.github.verify().await;
}
