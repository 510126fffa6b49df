//! Snapshots of every reply shape on every platform (`tests/it/snapshots/`).

use crate::helpers::*;
use contexten_envelope::{ReplyKind, ResultKind, Stage, TaskEnvelope, TaskResult};
use dispatcher::format::markdown::{self, Flavor};
use dispatcher::format::{callback_body, slack};

/// The clock the renderers see (only used when no stage has finished).
const NOW_MS: u64 = CREATED_AT_MS + 60_000;

fn code() -> TaskEnvelope {
    fixed(envelope(github_target(), ReplyKind::Final))
}

fn diff() -> TaskEnvelope {
    let mut env = code();
    let result = env.result.as_mut().unwrap();
    result.kind = ResultKind::Diff;
    result.summary = "Handle an empty input in `parse_duration`.".into();
    result.text = Some("--- a/src/time.rs\n+++ b/src/time.rs\n@@ -1,3 +1,4 @@\n pub fn parse_duration(s: &str) -> Option<u64> {\n+    if s.is_empty() { return None; }\n     s.strip_suffix('s')?.parse().ok()\n }\n".into());
    env
}

fn agent_run() -> TaskEnvelope {
    let mut env = code();
    env.result = Some(TaskResult {
        kind: ResultKind::AgentRun,
        produced_by: Stage::Agent,
        summary: "Refactored the duration parser and opened a pull request.".into(),
        text: Some("## Changes\n\n- **parse_duration** now accepts `ms`, `s` and `m`\n- see [the docs](https://example.com/docs)\n\n```rust\nassert_eq!(parse_duration(\"5m\"), Some(300));\n```".into()),
        language: None,
        web_url: Some("https://codegen.com/agent/trace/4711".into()),
        pull_requests: vec!["https://github.com/octo/hello/pull/12".into()],
        reason: None,
        extra: Default::default(),
    });
    env.cost.agent_calls = 3;
    env
}

fn failure() -> TaskEnvelope {
    let mut env = code();
    env.reply = Some(ReplyKind::Failure);
    env.result = Some(TaskResult::failure(
        Stage::Generate,
        "retries_exhausted",
        "Sorry, your request kept failing and was given up at the generate step: gave up after 5 attempts; last error provider_timeout: the model did not answer within 60 s",
    ));
    env
}

fn progress() -> TaskEnvelope {
    let mut env = agent_run();
    env.reply = Some(ReplyKind::Progress);
    env.result.as_mut().unwrap().summary = "The agent is working on it.".into();
    env.result.as_mut().unwrap().pull_requests.clear();
    env
}

#[test]
fn github_replies() {
    let render = |env: &TaskEnvelope, kind| markdown::render(env, kind, Flavor::Github, NOW_MS);
    insta::assert_snapshot!("github_ack", render(&code(), ReplyKind::Ack));
    insta::assert_snapshot!("github_progress", render(&progress(), ReplyKind::Progress));
    insta::assert_snapshot!("github_code", render(&code(), ReplyKind::Final));
    insta::assert_snapshot!("github_diff", render(&diff(), ReplyKind::Final));
    insta::assert_snapshot!("github_agent_run", render(&agent_run(), ReplyKind::Final));
    insta::assert_snapshot!("github_failure", render(&failure(), ReplyKind::Failure));
}

#[test]
fn linear_replies() {
    let render = |env: &TaskEnvelope, kind| markdown::render(env, kind, Flavor::Linear, NOW_MS);
    insta::assert_snapshot!("linear_code", render(&code(), ReplyKind::Final));
    insta::assert_snapshot!("linear_failure", render(&failure(), ReplyKind::Failure));
}

#[test]
fn slack_replies() {
    let render = |env: &TaskEnvelope, kind| {
        let reply = slack::render(env, kind, NOW_MS);
        serde_json::json!({"text": reply.text, "blocks": reply.blocks})
    };
    insta::assert_json_snapshot!("slack_code", render(&code(), ReplyKind::Final));
    insta::assert_json_snapshot!("slack_agent_run", render(&agent_run(), ReplyKind::Final));
    insta::assert_json_snapshot!("slack_progress", render(&progress(), ReplyKind::Progress));
    insta::assert_json_snapshot!("slack_failure", render(&failure(), ReplyKind::Failure));
}

#[test]
fn a_truncated_github_reply() {
    let mut env = code();
    env.result.as_mut().unwrap().text =
        Some((0..40).map(|i| format!("let v{i} = \"ü{i}\";\n")).collect());
    insta::assert_snapshot!(
        "github_truncated",
        markdown::render_with_limit(&env, ReplyKind::Final, Flavor::Github, NOW_MS, 700)
    );
}

#[test]
fn callback_bodies() {
    let body: serde_json::Value =
        serde_json::from_slice(&callback_body(&code(), ReplyKind::Final, NOW_MS)).unwrap();
    insta::assert_json_snapshot!("callback_final", body);
}
