//! Rotating a credential file while the dispatcher runs: the next reply is
//! sent with the new value, without a restart.

use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_config::SecretSource;
use contexten_envelope::ReplyKind;
use contexten_testkit::replace_file;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

const POST: &str = "/api/chat.postMessage";

fn old_token() -> String {
    ["xoxb", "-rotate-", "old-0001"].concat()
}
fn new_token() -> String {
    ["xoxb", "-rotate-", "new-0002"].concat()
}

async fn expect_post_with(t: &TestDispatch, token: &str) {
    Mock::given(method("POST"))
        .and(path(POST))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "channel": "C0123456", "ts": "1700000001.000200"
        })))
        .expect(1)
        .mount(&t.slack)
        .await;
}

#[tokio::test]
async fn a_rotated_slack_bot_token_file_is_used_by_the_next_reply() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slack-bot-token");
    replace_file(&file, &format!("{}\n", old_token()));
    // Looked at on every request here, so "the next reply" is exact; the
    // deployed interval (one second) is the config crate's to test.
    let source = SecretSource::file("SLACK_BOT_TOKEN_FILE", &file, Duration::ZERO).unwrap();
    let t = TestDispatch::start_with(move |s| s.slack = Some(source)).await;
    expect_post_with(&t, &old_token()).await;
    expect_post_with(&t, &new_token()).await;

    let first = envelope(slack_target(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(first).await, Outcome::Done);
    replace_file(&file, &format!("{}\n", new_token()));
    let second = envelope(slack_target(), ReplyKind::Final);
    assert_eq!(t.handler.dispatch(second).await, Outcome::Done);

    t.slack.verify().await;
}
