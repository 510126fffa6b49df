use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_config::{Env, Secret};
use contexten_envelope::{ReplyKind, ReplyTarget};
use contexten_providers::callback::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSigner};
use contexten_providers::time::unix_now;
use contexten_trust::outbound::OutboundGuard;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// How long a destination the dispatcher must not reach is watched for a
/// connection after the reply was handled (a connection would have been made
/// during the handling; this covers the accept loop's scheduling).
const NO_CONNECTION_WAIT: Duration = Duration::from_millis(300);

/// A plain TCP listener on a loopback address that records the connections it
/// accepts and answers none: a destination the dispatcher must never reach.
struct Untouchable {
    addr: SocketAddr,
    accepted: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Untouchable {
    async fn bind(ip: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (seen, accepted) = watch::channel(0);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                seen.send_modify(|n| *n += 1);
                drop(stream);
            }
        });
        Ok(Untouchable {
            addr,
            accepted,
            task,
        })
    }

    /// The connections accepted so far, after waiting (bounded) for a first one.
    async fn connections(&mut self) -> usize {
        let _ = tokio::time::timeout(NO_CONNECTION_WAIT, self.accepted.wait_for(|n| *n > 0)).await;
        *self.accepted.borrow()
    }
}

impl Drop for Untouchable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn dead_reason(outcome: Outcome) -> contexten_broker::DeadReason {
    match outcome {
        Outcome::DeadLetter(reason) => reason,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

fn target_of(receiver: &MockServer) -> ReplyTarget {
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
    let env = envelope(target_of(&t.receiver), ReplyKind::Final);
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
}

#[tokio::test]
async fn a_repeated_callback_keeps_its_webhook_id_so_the_receiver_can_deduplicate() {
    let t = TestDispatch::start().await;
    let scripted = Scripted::new(vec![ResponseTemplate::new(503), ResponseTemplate::new(200)]);
    Mock::given(method("POST"))
        .respond_with(scripted.clone())
        .mount(&t.receiver)
        .await;
    let env = envelope(target_of(&t.receiver), ReplyKind::Failure);
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
}

#[tokio::test]
async fn a_gone_receiver_is_dead_lettered_and_an_unsigned_callback_is_never_sent() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&t.receiver)
        .await;
    let env = envelope(target_of(&t.receiver), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "gone"),
        other => panic!("{other:?}"),
    }
    drop(t);

    let t = TestDispatch::start_with(|s| s.callback = None).await;
    let env = envelope(target_of(&t.receiver), ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "provider_not_configured"),
        other => panic!("{other:?}"),
    }
    assert!(t.receiver.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_callback_to_loopback_is_dead_lettered_as_outbound_refused_and_never_connected() {
    // Nothing allow-listed and loopback not allowed: production settings.
    let t = TestDispatch::start_with(|s| s.outbound = OutboundGuard::default()).await;
    let mut hook = Untouchable::bind("127.0.0.1").await.unwrap();
    let port = hook.addr.port();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{port}/hook?token=receiver-token");
        let env = envelope(ReplyTarget::Callback { url }, ReplyKind::Final);
        let reason = dead_reason(t.handler.dispatch(env).await);
        assert_eq!(reason.code, "outbound_refused", "{host}: {reason:?}");
        // The detail names the host, never the path or query (a token may be there).
        assert!(reason.detail.contains(host), "{}", reason.detail);
        assert!(
            !reason.detail.contains("/hook") && !reason.detail.contains("receiver-token"),
            "{}",
            reason.detail
        );
    }
    assert_eq!(
        hook.connections().await,
        0,
        "the refused callback URL was connected to"
    );
}

#[tokio::test]
async fn a_receivers_redirect_is_not_followed_and_the_reply_is_not_delivered() {
    // The receiver is allow-listed by address (127.0.0.1); it redirects to a
    // loopback address the guard refuses (127.0.0.2) and to one it allows
    // (127.0.0.1): callbacks follow no redirect, so neither is reached.
    let t = TestDispatch::start().await;
    let mut elsewhere = vec![Untouchable::bind("127.0.0.1").await.unwrap()];
    match Untouchable::bind("127.0.0.2").await {
        Ok(listener) => elsewhere.push(listener),
        Err(error) => {
            eprintln!("skipping the redirect to 127.0.0.2: it cannot be bound here ({error})")
        }
    }
    for status in [307, 302] {
        for target in &elsewhere {
            let receiver = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(
                    ResponseTemplate::new(status)
                        .insert_header("location", format!("http://{}/hook", target.addr)),
                )
                .expect(1)
                .mount(&receiver)
                .await;
            let env = envelope(target_of(&receiver), ReplyKind::Final);
            let reason = dead_reason(t.handler.dispatch(env).await);
            assert_eq!(reason.code, "callback_redirected", "{status}: {reason:?}");
            assert!(
                reason.detail.contains(&target.addr.ip().to_string())
                    && !reason.detail.contains("/hook"),
                "{}",
                reason.detail
            );
        }
    }
    for target in &mut elsewhere {
        assert_eq!(
            target.connections().await,
            0,
            "the redirect to {} was followed",
            target.addr
        );
    }
}

#[tokio::test]
async fn a_callback_to_localhost_is_delivered_while_loopback_is_allowed() {
    // The development switch the whole-fleet tests use.
    let allow_loopback = Env::from_pairs([("CONTEXTEN_ALLOW_LOCAL_REPOS", "1")]);
    let t = TestDispatch::start_with(|s| {
        s.outbound = OutboundGuard::from_env(&allow_loopback).unwrap();
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/hooks/contexten"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&t.receiver)
        .await;
    let port = t.receiver.address().port();
    let url = format!("http://localhost:{port}/hooks/contexten");
    let env = envelope(ReplyTarget::Callback { url }, ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
}
