use crate::helpers::*;
use contexten_broker::Outcome;
use contexten_envelope::{ReplyKind, ResultKind, TaskEnvelope};
use dispatcher::format::markdown::{self, Flavor};
use dispatcher::format::{
    GITHUB_LIMIT, LINEAR_LIMIT, SLACK_BLOCK_LIMIT, SLACK_MAX_BLOCKS, SLACK_MESSAGE_LIMIT,
    open_fence, slack,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// About 150,000 characters of code with multi-byte characters on every line
/// and a fence inside, so cuts can land anywhere.
fn long_answer(kind: ReplyKind) -> TaskEnvelope {
    let mut env = envelope(github_target(), kind);
    let result = env.result.as_mut().unwrap();
    let mut text = String::from("// ```not a fence for us```\n");
    for i in 0..3000 {
        text.push_str(&format!(
            "let s{i} = \"é€😀 line {i} of a long answer\"; // ünïcödé\n"
        ));
    }
    result.text = Some(text);
    env
}

#[tokio::test]
async fn an_over_long_github_answer_is_cut_at_65536_characters_with_a_closed_fence() {
    let t = TestDispatch::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
        .expect(1)
        .mount(&t.github)
        .await;
    let env = long_answer(ReplyKind::Final);
    assert!(
        env.result
            .as_ref()
            .unwrap()
            .text
            .as_ref()
            .unwrap()
            .chars()
            .count()
            > 2 * GITHUB_LIMIT
    );
    assert_eq!(t.handler.dispatch(env.clone()).await, Outcome::Done);

    let sent = bodies(&t.github, "/repos/octo/hello/issues/7/comments").await;
    let body = sent[0]["body"].as_str().unwrap();
    let chars = body.chars().count();
    assert!(
        chars <= GITHUB_LIMIT && chars > GITHUB_LIMIT - 2_000,
        "{chars}"
    );
    assert_eq!(open_fence(body), None, "the code fence is closed");
    assert!(body.contains("**…truncated:**"), "a visible marker");
    assert!(
        body.contains("<sub>contexten · task"),
        "the footer survives the cut"
    );
    assert!(
        body.starts_with("<!-- contexten:task="),
        "the marker survives the cut"
    );
    // The cut falls at a line break: the last code line is whole.
    let code_end = body.rfind("\n````").unwrap();
    assert!(
        body[..code_end].ends_with("// ünïcödé"),
        "{}",
        &body[code_end - 60..code_end]
    );
}

#[test]
fn an_over_long_linear_answer_is_cut_at_its_limit() {
    let body = markdown::render(
        &long_answer(ReplyKind::Final),
        ReplyKind::Final,
        Flavor::Linear,
        CREATED_AT_MS,
    );
    assert!(body.chars().count() <= LINEAR_LIMIT);
    assert_eq!(open_fence(&body), None);
    assert!(body.contains("**…truncated:**"));
}

#[test]
fn an_over_long_slack_answer_fits_block_and_message_limits_with_balanced_fences() {
    let env = long_answer(ReplyKind::Final);
    let reply = slack::render(&env, ReplyKind::Final, CREATED_AT_MS);
    assert!(reply.chars() <= SLACK_MESSAGE_LIMIT, "{}", reply.chars());
    assert!(
        reply.chars() > SLACK_MESSAGE_LIMIT - 4 * SLACK_BLOCK_LIMIT,
        "the budget is used: {}",
        reply.chars()
    );
    assert!(reply.blocks.len() <= SLACK_MAX_BLOCKS);
    for block in &reply.blocks {
        if let Some(text) = block.pointer("/text/text").and_then(|t| t.as_str()) {
            assert!(
                text.chars().count() <= SLACK_BLOCK_LIMIT,
                "{}",
                text.chars().count()
            );
            assert_eq!(
                open_fence(text),
                None,
                "every section closes its fence: {}",
                &text[text.len() - 40..]
            );
        }
    }
    let notice = &reply.blocks[reply.blocks.len() - 2];
    assert!(
        notice["text"]["text"]
            .as_str()
            .unwrap()
            .contains("…truncated"),
        "{notice}"
    );
    assert_eq!(reply.blocks.last().unwrap()["type"], "context");
}

#[test]
fn a_long_agent_answer_in_markdown_is_split_for_slack_without_breaking_code_blocks() {
    let mut env = envelope(slack_target(), ReplyKind::Final);
    let result = env.result.as_mut().unwrap();
    result.kind = ResultKind::AgentRun;
    let mut text = String::from("## What I changed\n\n```rust\n");
    for i in 0..400 {
        text.push_str(&format!(
            "fn f{i}() -> u32 {{ {i} }} // a line long enough to matter\n"
        ));
    }
    text.push_str("```\n\nAll tests pass.");
    result.text = Some(text);
    let reply = slack::render(&env, ReplyKind::Final, CREATED_AT_MS);
    let sections: Vec<&str> = reply
        .blocks
        .iter()
        .filter_map(|b| b.pointer("/text/text").and_then(|t| t.as_str()))
        .collect();
    assert!(sections.len() > 3, "split into several sections");
    for text in &sections {
        assert!(text.chars().count() <= SLACK_BLOCK_LIMIT);
        assert_eq!(open_fence(text), None, "{text}");
    }
    assert!(
        sections[1].starts_with("*What I changed*"),
        "{}",
        sections[1]
    );
    assert!(sections.last().unwrap().ends_with("All tests pass."));
}
