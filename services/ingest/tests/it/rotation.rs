//! Rotating a webhook secret through its `_FILE` while ingest runs: old and
//! new signatures are both accepted during the overlap, only the new one after.

use crate::fixtures::github_ping;
use crate::helpers::*;
use contexten_testkit::{eventually, replace_file};
use ingest::verify::sign_hex;
use std::time::Duration;

/// Longer than the secret file's reload interval (1 s) with room for a slow machine.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

fn old_secret() -> String {
    ["gh-rotate-", "old-", "0001"].concat()
}
fn new_secret() -> String {
    ["gh-rotate-", "new-", "0002"].concat()
}

/// The status of a GitHub ping signed with `key`.
async fn ping_signed_with(ingest: &TestIngest, key: &str) -> u16 {
    let body = serde_json::to_vec(&github_ping()).unwrap();
    let delivery = uuid::Uuid::now_v7().to_string();
    let mut headers = github_headers("ping", &delivery, &body);
    let signature = headers
        .iter_mut()
        .find(|(name, _)| *name == "x-hub-signature-256")
        .unwrap();
    signature.1 = format!("sha256={}", sign_hex(&secret(key), &body));
    ingest.post("/webhooks/github", &headers, body).await.status
}

/// Waits (bounded) until a ping signed with `key` is answered `status`.
async fn until_answered(ingest: &TestIngest, key: &str, status: u16) {
    eventually(
        RELOAD_WAIT,
        &format!("a ping answered {status}"),
        || async { ping_signed_with(ingest, key).await == status },
    )
    .await;
}

#[tokio::test]
async fn a_rotated_github_webhook_secret_file_accepts_both_during_the_overlap_then_only_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("github-webhook-secret");
    replace_file(&path, &format!("{}\n", old_secret()));
    let shown = path.display().to_string();
    let ingest = TestIngest::start_with(&[
        ("GITHUB_WEBHOOK_SECRET", ""),
        ("GITHUB_WEBHOOK_SECRET_FILE", &shown),
    ])
    .await;
    assert_eq!(ping_signed_with(&ingest, &old_secret()).await, 200);
    assert_eq!(ping_signed_with(&ingest, &new_secret()).await, 401);

    // The new secret is added as a second line: both verify.
    replace_file(&path, &format!("{}\n{}\n", old_secret(), new_secret()));
    until_answered(&ingest, &new_secret(), 200).await;
    assert_eq!(ping_signed_with(&ingest, &old_secret()).await, 200);

    // The old line is removed: only the new one verifies.
    replace_file(&path, &format!("{}\n", new_secret()));
    until_answered(&ingest, &old_secret(), 401).await;
    assert_eq!(ping_signed_with(&ingest, &new_secret()).await, 200);

    // A file that disappears keeps the last secret instead of refusing everything.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ping_signed_with(&ingest, &new_secret()).await, 200);
}
