use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_config::Secret;
use contexten_envelope::{ReplyKind, ReplyTarget};
use contexten_providers::callback::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSigner};
use contexten_providers::time::unix_now;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn target(receiver: &wiremock::MockServer) -> ReplyTarget {
    ReplyTarget::Callback {
        url: format!("{}/hooks/contexten?tenant=a", receiver.uri()),
    }
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_callbacks_signature_verifies_with_the_receivers_secret() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/contexten"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.receiver)
        .await;
    let env = envelope(target(&t.receiver), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let requests = t.receiver.received_requests().await.unwrap();
    let request = &requests[0];
    assert_eq!(header(request, "content-type"), "application/json");
    let (id, timestamp, signature) = (
        header(request, HEADER_ID),
        header(request, HEADER_TIMESTAMP),
        header(request, HEADER_SIGNATURE),
    );
    assert_eq!(id, format!("msg_{}_final", env.task_id));
    assert!(signature.starts_with("v1,"), "{signature}");
    let receiver = WebhookSigner::new(&Secret::from(callback_secret())).unwrap();
    assert!(receiver.verify(id, timestamp, signature, &request.body, unix_now()));
    let other = WebhookSigner::new(&Secret::from(
        ["another secret ", "of 32 bytes....."].concat(),
    ))
    .unwrap();
    assert!(!other.verify(id, timestamp, signature, &request.body, unix_now()));
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert!(!receiver.verify(id, timestamp, signature, &tampered, unix_now()));

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "task.final");
    assert_eq!(body["data"]["task_id"], env.task_id.to_string());
    assert_eq!(body["data"]["result"]["kind"], "code");
    assert_eq!(body["data"]["total_ms"], 4200);
    t.cleanup().await;
}

#[tokio::test]
async fn a_repeated_callback_keeps_its_webhook_id_so_the_receiver_can_deduplicate() {
    let t = TestDispatch::start().await;
    let scripted = Scripted::new(vec![ResponseTemplate::new(503), ResponseTemplate::new(200)]);
    Mock::given(method("POST"))
        .respond_with(scripted.clone())
        .mount(&t.receiver)
        .await;
    let env = envelope(target(&t.receiver), ReplyKind::Failure);
    let first = t.handler.dispatch(env.clone()).await;
    assert!(
        matches!(&first, Outcome::RetryAfter(_, r) if r.code == "provider_unavailable"),
        "{first:?}"
    );
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    let requests = t.receiver.received_requests().await.unwrap();
    assert_eq!(
        requests.len(),
        2,
        "the recorded reply is not sent a third time"
    );
    assert_eq!(
        header(&requests[0], HEADER_ID),
        header(&requests[1], HEADER_ID)
    );
    t.cleanup().await;
}

#[tokio::test]
async fn a_gone_receiver_is_dead_lettered_and_an_unsigned_callback_is_never_sent() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&t.receiver)
        .await;
    let env = envelope(target(&t.receiver), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "gone"),
        other => panic!("{other:?}"),
    }
    t.cleanup().await;

    let t = TestDispatch::start_with(|s| s.callback = None).await;
    let env = envelope(target(&t.receiver), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "provider_not_configured"),
        other => panic!("{other:?}"),
    }
    assert!(t.receiver.received_requests().await.unwrap().is_empty());
    t.cleanup().await;
}
