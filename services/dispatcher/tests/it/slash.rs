//! Slash commands (acknowledged by an ephemeral message through their
//! `response_url`, answered in the channel or through it) and answers too long for a Slack
//! message (a summary plus the full answer as a file), against a fake Slack
//! speaking the Web API, the `response_url` and the three upload calls.

use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope, now_ms};
use dispatcher::SLACK_EVENT_TYPE;
use dispatcher::config::SlackCommandReply;
use serde_json::{Value, json};
use std::collections::HashMap;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const POST: &str = "/api/chat.postMessage";
const GET_UPLOAD: &str = "/api/files.getUploadURLExternal";
const UPLOAD: &str = "/upload/v1/CwABAAAAXAo";
const COMPLETE: &str = "/api/files.completeUploadExternal";
const REACTION: &str = "/api/reactions.add";
const HOOK: &str = "/commands/T0001/1234/5678";
const CHANNEL: &str = "C2147483705";

fn posted(ts: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true, "channel": CHANNEL, "ts": ts,
        "message": {"type": "message", "subtype": "bot_message", "text": "…", "ts": ts}
    }))
}

fn not_ok(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": error}))
}

/// A slash command's task as ingest builds it: no thread, the response URL
/// in the source (on the fake Slack, whose host the client trusts in tests).
fn command_envelope(slack: &MockServer, kind: ReplyKind) -> TaskEnvelope {
    let mut env = envelope(
        ReplyTarget::Slack {
            channel: CHANNEL.into(),
            thread_ts: String::new(),
        },
        kind,
    );
    env.created_at_ms = now_ms();
    env.source.extra.insert(
        "slack_response_url".into(),
        format!("{}{HOOK}", slack.uri()).into(),
    );
    env.source
        .extra
        .insert("slack_command".into(), "/contexten".into());
    env
}

/// About 60,000 characters of code: more than one Slack message holds.
fn long_code(env: &mut TaskEnvelope) -> String {
    let mut code = String::new();
    for i in 0..1500 {
        code.push_str(&format!("fn f{i}() -> u32 {{ {i} }} // é€ line {i}\n"));
    }
    env.result.as_mut().unwrap().text = Some(code.clone());
    code
}

/// The form fields of the requests `server` received on `path`.
async fn forms(server: &MockServer, at: &str) -> Vec<HashMap<String, String>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == at)
        .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
        .collect()
}

/// The raw bodies `server` received on `path`.
async fn raw(server: &MockServer, at: &str) -> Vec<Vec<u8>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == at)
        .map(|r| r.body.clone())
        .collect()
}

/// The three upload calls, the upload URL on the fake itself.
async fn mount_upload(slack: &MockServer, complete: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(GET_UPLOAD))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "upload_url": format!("{}{UPLOAD}", slack.uri()),
            "file_id": "F0AB12CDE",
        })))
        .mount(slack)
        .await;
    Mock::given(method("POST"))
        .and(path(UPLOAD))
        .respond_with(|request: &wiremock::Request| {
            ResponseTemplate::new(200).set_body_string(format!("OK - {}", request.body.len()))
        })
        .mount(slack)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPLETE))
        .respond_with(complete)
        .mount(slack)
        .await;
}

fn completed() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "files": [{"id": "F0AB12CDE", "title": "Full answer"}],
    }))
}

/// The paths `server` received requests on, in order.
async fn paths(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect()
}

#[tokio::test]
async fn a_slash_command_is_acknowledged_ephemerally_through_its_response_url() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(paths(&t.slack).await, [HOOK], "only the response_url");
    let hook = t.slack.received_requests().await.unwrap().remove(0);
    assert!(
        hook.headers.get("authorization").is_none(),
        "the bot token never goes to a response_url"
    );
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(
        body,
        json!({
            "response_type": "ephemeral",
            "text": format!("On it: I'm working on this request (task `{}`).", env.task_id),
        })
    );
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Ack))
        .await
        .unwrap();
    assert!(record.contains("response_url/"), "{record}");
    // A redelivery is found in the reply ledger: nothing is sent again.
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert_eq!(raw(&t.slack, HOOK).await.len(), 1);
    assert!(raw(&t.slack, REACTION).await.is_empty());
    assert!(raw(&t.slack, POST).await.is_empty());
    t.slack.verify().await;
}

#[tokio::test]
async fn an_acknowledgement_goes_through_the_response_url_whatever_answers_are_configured_for() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    let sent = bodies(&t.slack, HOOK).await;
    assert_eq!(sent[0]["response_type"], "ephemeral");
    assert_eq!(paths(&t.slack).await, [HOOK]);
    t.slack.verify().await;
}

#[tokio::test]
async fn an_unusable_response_url_means_no_acknowledgement_and_never_a_reaction() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(404).set_body_string("expired_url"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let skipped = |env: &TaskEnvelope| t.names.reply_key(env.task_id, ReplyKind::Ack);

    // Expired by our own clock: nothing is sent.
    let mut expired = command_envelope(&t.slack, ReplyKind::Ack);
    expired.created_at_ms = now_ms() - 31 * 60 * 1000;
    assert_eq!(t.handler.dispatch(expired.clone()).await, Outcome::Done);
    assert!(paths(&t.slack).await.is_empty());
    let record = redis_get(&t.store, &skipped(&expired)).await.unwrap();
    assert!(record.contains("response_url/skipped"), "{record}");

    // Off Slack's hosts: never posted to.
    let mut foreign = command_envelope(&t.slack, ReplyKind::Ack);
    foreign.source.extra.insert(
        "slack_response_url".into(),
        format!("{}{HOOK}", t.receiver.uri()).into(),
    );
    assert_eq!(t.handler.dispatch(foreign.clone()).await, Outcome::Done);
    assert!(
        t.receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    let record = redis_get(&t.store, &skipped(&foreign)).await.unwrap();
    assert!(record.contains("untrusted_slack_url"), "{record}");

    // Slack says it expired: skipped, not dead-lettered, not retried.
    let refused = command_envelope(&t.slack, ReplyKind::Ack);
    assert_eq!(t.handler.dispatch(refused.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &skipped(&refused)).await.unwrap();
    assert!(record.contains("expired_url"), "{record}");

    // No response_url at all (and no message ts): nothing to acknowledge.
    let mut bare = command_envelope(&t.slack, ReplyKind::Ack);
    bare.source.extra.remove("slack_response_url");
    assert_eq!(t.handler.dispatch(bare).await, Outcome::Done);

    assert_eq!(paths(&t.slack).await, [HOOK], "no reaction, no message");
    t.slack.verify().await;
}

#[tokio::test]
async fn the_acknowledgement_never_takes_the_response_urls_last_use_from_the_answer() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(5)
        .mount(&t.slack)
        .await;
    let ack = command_envelope(&t.slack, ReplyKind::Ack);
    let mut progress = ack.clone();
    progress.reply = Some(ReplyKind::Progress);
    for n in 0..3 {
        progress.result.as_mut().unwrap().summary = format!("step {n}");
        assert_eq!(t.handler.dispatch(progress.clone()).await, Outcome::Done);
    }
    // Progress took three uses: the acknowledgement may take the fourth only.
    assert_eq!(t.handler.dispatch(ack).await, Outcome::Done);
    progress.result.as_mut().unwrap().summary = "step 3".into();
    assert_eq!(t.handler.dispatch(progress.clone()).await, Outcome::Done);
    assert_eq!(raw(&t.slack, HOOK).await.len(), 4);
    let mut answer = progress.clone();
    answer.reply = Some(ReplyKind::Final);
    assert_eq!(t.handler.dispatch(answer).await, Outcome::Done);
    let sent = bodies(&t.slack, HOOK).await;
    assert_eq!(sent[3]["response_type"], "ephemeral");
    assert_eq!(sent[4]["response_type"], "in_channel");
    assert!(sent[4]["text"].as_str().unwrap().contains("generated code"));

    // The acknowledgement of a command whose URL already served four
    // replies is skipped rather than take the fifth, the answer's.
    let other = command_envelope(&t.slack, ReplyKind::Ack);
    for n in 0..4 {
        redis_hset_use(&t, &other, &format!("taken {n}")).await;
    }
    assert_eq!(t.handler.dispatch(other.clone()).await, Outcome::Done);
    assert_eq!(raw(&t.slack, HOOK).await.len(), 5, "no sixth post");
    let record = redis_get(&t.store, &t.names.reply_key(other.task_id, ReplyKind::Ack))
        .await
        .unwrap();
    assert!(record.contains("response_url/skipped"), "{record}");
    t.slack.verify().await;
}

/// Marks one of a command's `response_url` uses as taken by another slot.
async fn redis_hset_use(t: &TestDispatch, env: &TaskEnvelope, slot: &str) {
    let key = t
        .names
        .redis_key(&["dispatch", "response_url", &env.task_id.to_string()]);
    let mut conn = t.store.connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(slot)
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_acknowledgement_that_may_have_been_shown_is_not_sent_again() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Ack);
    redis_set(
        &t.store,
        &attempt_key(&t.names, &env, ReplyKind::Ack),
        &(now_ms() / 1000).to_string(),
    )
    .await;
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Ack))
        .await
        .unwrap();
    assert!(record.contains("uncertain"), "{record}");
    assert!(paths(&t.slack).await.is_empty());
    t.slack.verify().await;
}

#[tokio::test]
async fn a_slash_commands_answer_is_a_channel_message_by_default() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000001"))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let sent = &bodies(&t.slack, POST).await[0];
    assert_eq!(sent["channel"], CHANNEL);
    assert!(sent.get("thread_ts").is_none(), "a new message: {sent}");
    assert_eq!(sent["metadata"]["event_type"], SLACK_EVENT_TYPE);
    t.slack.verify().await;
}

#[tokio::test]
async fn a_bot_outside_the_channel_answers_through_the_response_url_in_channel() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(not_ok("not_in_channel"))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let hook = t
        .slack
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == HOOK)
        .unwrap();
    assert!(
        hook.headers.get("authorization").is_none(),
        "the bot token never goes to a response_url"
    );
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["response_type"], "in_channel");
    assert!(body["text"].as_str().unwrap().contains("parse_duration"));
    assert!(body["blocks"].as_array().unwrap().len() >= 2);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("response_url/"), "{record}");
    t.slack.verify().await;
}

#[tokio::test]
async fn configured_for_the_response_url_a_fresh_one_is_used_and_an_expired_one_is_not() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000002"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let fresh = command_envelope(&t.slack, ReplyKind::Final);
    assert_eq!(t.handler.dispatch(fresh).await, Outcome::Done);
    assert_eq!(raw(&t.slack, POST).await.len(), 0);
    // 31 minutes later Slack would refuse it: the answer goes to the channel.
    let mut stale = command_envelope(&t.slack, ReplyKind::Final);
    stale.created_at_ms = now_ms() - 31 * 60 * 1000;
    assert_eq!(t.handler.dispatch(stale).await, Outcome::Done);
    t.slack.verify().await;
}

#[tokio::test]
async fn a_used_up_response_url_falls_back_to_the_channel() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(404).set_body_string("used_url"))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000003"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let env = command_envelope(&t.slack, ReplyKind::Final);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    t.slack.verify().await;
}

#[tokio::test]
async fn a_response_url_off_slacks_hosts_is_never_posted_to() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000004"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let mut env = command_envelope(&t.slack, ReplyKind::Final);
    env.source.extra.insert(
        "slack_response_url".into(),
        format!("{}{HOOK}", t.receiver.uri()).into(),
    );
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert!(
        t.receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing reached the foreign host"
    );
    t.slack.verify().await;
}

#[tokio::test]
async fn progress_never_takes_the_response_urls_last_use_from_the_answer() {
    let t =
        TestDispatch::start_with(|s| s.slack_command_reply = SlackCommandReply::ResponseUrl).await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(5)
        .mount(&t.slack)
        .await;
    let first = command_envelope(&t.slack, ReplyKind::Progress);
    for n in 0..6 {
        let mut progress = first.clone();
        progress.result.as_mut().unwrap().summary = format!("step {n}");
        assert_eq!(t.handler.dispatch(progress).await, Outcome::Done);
    }
    assert_eq!(raw(&t.slack, HOOK).await.len(), 4, "four progress messages");
    let mut answer = first.clone();
    answer.reply = Some(ReplyKind::Final);
    assert_eq!(t.handler.dispatch(answer).await, Outcome::Done);
    let last: Value = serde_json::from_slice(raw(&t.slack, HOOK).await.last().unwrap()).unwrap();
    assert!(last["text"].as_str().unwrap().contains("generated code"));
    t.slack.verify().await;
}

#[tokio::test]
async fn a_long_answer_is_a_summary_in_the_thread_and_the_full_code_as_a_file() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1700000001.000200"))
        .expect(1)
        .mount(&t.slack)
        .await;
    mount_upload(&t.slack, completed()).await;
    let mut env = envelope(slack_target(), ReplyKind::Final);
    let code = long_code(&mut env);
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let summary = &bodies(&t.slack, POST).await[0];
    assert_eq!(summary["thread_ts"], "1700000000.000100");
    let shown = summary["blocks"].to_string();
    assert!(
        !shown.contains("fn f1499"),
        "the code is not in the message"
    );
    let filename = format!("contexten-{}.rs", env.task_id);
    assert!(shown.contains(&filename), "{shown}");
    assert!(shown.contains("1500 lines"), "{shown}");

    let asked = &forms(&t.slack, GET_UPLOAD).await[0];
    assert_eq!(asked["filename"], filename);
    assert_eq!(asked["length"], code.len().to_string());
    let uploaded = raw(&t.slack, UPLOAD).await;
    assert_eq!(uploaded.len(), 1);
    assert_eq!(
        uploaded[0],
        code.as_bytes(),
        "the uploaded bytes are the full code"
    );
    let complete = &forms(&t.slack, COMPLETE).await[0];
    let files: Value = serde_json::from_str(&complete["files"]).unwrap();
    assert_eq!(files[0]["id"], "F0AB12CDE");
    assert!(files[0]["title"].as_str().unwrap().contains("Full answer"));
    assert_eq!(complete["channel_id"], "C0123456");
    assert_eq!(complete["thread_ts"], "1700000000.000100");
    let upload_auth = t
        .slack
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == UPLOAD)
        .unwrap();
    assert!(upload_auth.headers.get("authorization").is_none());

    // A redelivery posts nothing again.
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert_eq!(raw(&t.slack, UPLOAD).await.len(), 1);
    t.slack.verify().await;
}

#[tokio::test]
async fn a_failed_upload_is_retried_without_posting_the_summary_again() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1700000001.000200"))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPLETE))
        .respond_with(not_ok("internal_error"))
        .up_to_n_times(1)
        .mount(&t.slack)
        .await;
    mount_upload(&t.slack, completed()).await;
    let mut env = envelope(slack_target(), ReplyKind::Final);
    long_code(&mut env);
    // The uncertain completion leaves the attempt mark: the retry reads the
    // thread, finds the summary by its metadata and no file yet.
    Mock::given(method("GET"))
        .and(path("/api/conversations.replies"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "has_more": false,
            "messages": [
                {"type": "message", "ts": "1700000000.000100", "text": "please"},
                {"type": "message", "ts": "1700000001.000200", "text": "summary",
                 "metadata": {"event_type": SLACK_EVENT_TYPE, "event_payload": {"key": format!("{}:final", env.task_id)}}}
            ]
        })))
        .mount(&t.slack)
        .await;
    match t.handler.dispatch(env.clone()).await {
        Outcome::RetryAfter(_, reason) => assert_eq!(reason.code, "provider_unavailable"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(raw(&t.slack, COMPLETE).await.len(), 2);
    assert_eq!(raw(&t.slack, POST).await.len(), 1, "one summary");
    t.slack.verify().await;
}

#[tokio::test]
async fn a_slash_commands_long_answer_puts_the_file_in_the_summarys_thread() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000009"))
        .expect(1)
        .mount(&t.slack)
        .await;
    mount_upload(&t.slack, completed()).await;
    let mut env = command_envelope(&t.slack, ReplyKind::Final);
    let code = long_code(&mut env);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    assert_eq!(raw(&t.slack, UPLOAD).await[0], code.as_bytes());
    let complete = &forms(&t.slack, COMPLETE).await[0];
    assert_eq!(complete["channel_id"], CHANNEL);
    assert_eq!(complete["thread_ts"], "1764417600.000009");
    t.slack.verify().await;
}

#[tokio::test]
async fn a_refused_file_leaves_the_answer_cut_to_one_message_in_the_thread() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1700000001.000200"))
        .expect(2)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(GET_UPLOAD))
        .respond_with(not_ok("file_uploads_disabled"))
        .expect(1)
        .mount(&t.slack)
        .await;
    let mut env = envelope(slack_target(), ReplyKind::Final);
    long_code(&mut env);
    assert_eq!(t.handler.dispatch(env).await, Outcome::Done);
    let sent = bodies(&t.slack, POST).await;
    assert_eq!(sent[1]["thread_ts"], "1700000000.000100");
    assert!(sent[1]["blocks"].to_string().contains("…truncated"));
    t.slack.verify().await;
}

#[tokio::test]
async fn after_an_uncertain_slash_command_answer_the_channel_history_is_searched() {
    let t = TestDispatch::start().await;
    let env = command_envelope(&t.slack, ReplyKind::Final);
    redis_set(
        &t.store,
        &attempt_key(&t.names, &env, ReplyKind::Final),
        "1764000000",
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/conversations.history"))
        .and(query_param("channel", CHANNEL))
        .and(query_param("oldest", "1763999880"))
        .and(query_param("include_all_metadata", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "has_more": false,
            "messages": [
                {"type": "message", "ts": "1764000003.000300", "text": "done",
                 "metadata": {"event_type": SLACK_EVENT_TYPE, "event_payload": {"key": format!("{}:final", env.task_id)}}}
            ]
        })))
        .expect(1)
        .mount(&t.slack)
        .await;
    Mock::given(method("POST"))
        .and(path(POST))
        .respond_with(posted("1764417600.000010"))
        .expect(0)
        .mount(&t.slack)
        .await;
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);
    let record = redis_get(&t.store, &t.names.reply_key(env.task_id, ReplyKind::Final))
        .await
        .unwrap();
    assert!(record.contains("1764000003.000300"), "{record}");
    t.slack.verify().await;
}
