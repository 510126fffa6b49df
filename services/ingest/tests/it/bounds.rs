//! Ingest's resource bounds (README, "How ingest bounds its resources"): a slow
//! body is cut off, requests over the concurrency cap are shed, slow headers
//! close the connection, and `/readyz` stays ready while the broker is down.

use crate::fixtures::*;
use crate::helpers::*;
use contexten_testkit::eventually;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the webhook `body` under a new delivery id until one is answered
/// `status` (at most 5 s; panics saying `what` did not happen).
async fn webhook_answered(
    status: u16,
    ingest: &TestIngest,
    body: &serde_json::Value,
    what: &str,
) -> Answer {
    eventually(Duration::from_secs(5), what, || async {
        let answer = ingest
            .github("issue_comment", &uuid::Uuid::now_v7().to_string(), body)
            .await;
        (answer.status == status).then_some(answer)
    })
    .await
}

/// Opens a connection and sends the head of a GitHub webhook announcing
/// `length` body bytes, of which it sends none.
async fn start_slow_upload(ingest: &TestIngest, length: usize) -> TcpStream {
    let host = ingest.url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         x-github-event: issue_comment\r\nx-github-delivery: {}\r\ncontent-length: {length}\r\n\r\n",
        uuid::Uuid::now_v7()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the peer closes or `within` passes; the status line's code.
async fn status_of_reply(tcp: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let ingest = TestIngest::start_with(&[("INGEST_REQUEST_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let mut tcp = start_slow_upload(&ingest, 1 << 20).await;
    tcp.write_all(b"{\"action\":").await.unwrap();
    let status = status_of_reply(&mut tcp, Duration::from_secs(10)).await;
    assert_eq!(status, Some(408), "a stalled body is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The slot it held is free again: a whole webhook is accepted.
    let body = github_comment(
        31,
        "/contexten generate a CSV splitter",
        "octocat",
        "MEMBER",
    );
    let answer = ingest
        .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &body)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    ingest
        .take_task_and_ack(contexten_envelope::Stage::Generate)
        .await;
}

#[tokio::test]
async fn requests_over_the_concurrency_cap_are_shed_with_retry_after() {
    let ingest = TestIngest::start_with(&[
        ("INGEST_MAX_CONCURRENT_REQUESTS", "2"),
        ("INGEST_REQUEST_TIMEOUT_SECS", "30"),
    ])
    .await;
    // Two slow uploads take both slots.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut tcp = start_slow_upload(&ingest, 4096).await;
        tcp.write_all(b"{").await.unwrap();
        slow.push(tcp);
    }
    let body = github_comment(32, "/contexten generate a slugifier", "octocat", "MEMBER");
    let shed = webhook_answered(
        503,
        &ingest,
        &body,
        "the third request is shed while two hold the slots",
    )
    .await;
    assert_eq!(shed.error(), "overloaded");
    assert_eq!(
        shed.headers["retry-after"], "2",
        "INGEST_RETRY_AFTER_SECS of the tests"
    );
    // The probes are outside the cap.
    let ready = ingest.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.json);
    drop(slow);
    webhook_answered(
        202,
        &ingest,
        &body,
        "accepted again once the slots are free",
    )
    .await;
    ingest
        .take_task_and_ack(contexten_envelope::Stage::Generate)
        .await;
}

#[tokio::test]
async fn a_connection_whose_headers_stall_is_closed() {
    let ingest = TestIngest::start_with(&[("INGEST_HEADER_TIMEOUT_SECS", "1")]).await;
    let host = ingest.url.trim_start_matches("http://").to_owned();
    let mut tcp = TcpStream::connect(&host).await.unwrap();
    tcp.write_all(b"POST /webhooks/github HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn readyz_stays_ready_while_the_broker_is_down_and_reports_it() {
    let ingest = TestIngest::start().await;
    ingest.wait_for_broker(true).await;
    ingest.proxy.stop();
    ingest.wait_for_broker(false).await;
    let ready = ingest.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.json);
    assert_eq!(ready.json["components"]["broker"]["ready"], false);
    assert_eq!(ready.json["components"]["broker"]["required"], false);
    assert_eq!(ready.json["components"]["serving"]["ready"], true);
    ingest.proxy.resume();
    ingest.wait_for_broker(true).await;
}

#[tokio::test]
async fn bodies_being_received_stay_within_the_memory_budget() {
    let ingest = TestIngest::start_with(&[
        ("INGEST_MAX_BODY_BYTES", "1048576"),
        ("INGEST_BODY_MEMORY_BYTES", "2097152"),
        ("INGEST_REQUEST_TIMEOUT_SECS", "30"),
    ])
    .await;
    // One upload announcing the whole budget holds it while it trickles.
    let mut slow = start_slow_upload(&ingest, 1 << 20).await;
    slow.write_all(b"{").await.unwrap();
    let body = github_comment(
        33,
        "/contexten generate a word counter",
        "octocat",
        "MEMBER",
    );
    let shed = webhook_answered(
        503,
        &ingest,
        &body,
        "a body that does not fit the budget is shed",
    )
    .await;
    assert_eq!(shed.error(), "overloaded");
    drop(slow);
    webhook_answered(202, &ingest, &body, "accepted once the budget is free").await;
    ingest
        .take_task_and_ack(contexten_envelope::Stage::Generate)
        .await;
}
