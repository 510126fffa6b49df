//! How an answer looks on each platform: GitHub and Linear markdown
//! ([`markdown`]), Slack mrkdwn blocks ([`slack`]) and the callback's JSON body
//! ([`callback_body`]). Every renderer is a pure function of the envelope, the
//! reply kind and the clock, so the snapshots in `tests/it/format.rs` pin them.

pub mod markdown;
pub mod slack;
mod truncate;

pub use truncate::{cut_chars, open_fence};

use contexten_envelope::{ReplyKind, ResultKind, TaskEnvelope, TaskResult};
use serde_json::json;

/// GitHub's comment body limit (characters).
pub const GITHUB_LIMIT: usize = 65_536;
/// Linear publishes no comment limit; the same bound as GitHub keeps a body
/// reasonable there too.
pub const LINEAR_LIMIT: usize = 65_536;
/// Slack: characters per section block.
pub const SLACK_BLOCK_LIMIT: usize = 3_000;
/// Slack: characters per message (text and blocks together).
pub const SLACK_MESSAGE_LIMIT: usize = 40_000;
/// Slack: blocks per message.
pub const SLACK_MAX_BLOCKS: usize = 50;
/// A summary longer than this is cut (it heads every message).
const SUMMARY_LIMIT: usize = 2_000;
/// Pull requests listed at most.
const MAX_PULL_REQUESTS: usize = 20;

/// What a reply is about, once reply kind and result are read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Ack,
    Progress,
    Answer,
    Failure,
}

impl Shape {
    /// The shape of `kind` for this envelope: a final answer whose result is a
    /// failure reads as a failure.
    pub fn of(envelope: &TaskEnvelope, kind: ReplyKind) -> Self {
        match kind {
            ReplyKind::Ack => Shape::Ack,
            ReplyKind::Progress => Shape::Progress,
            ReplyKind::Failure => Shape::Failure,
            ReplyKind::Final => match &envelope.result {
                Some(result) if result.kind == ResultKind::Failure => Shape::Failure,
                _ => Shape::Answer,
            },
        }
    }
}

/// The hidden marker that identifies a reply in a GitHub thread, so an
/// uncertain post can be found again.
pub fn marker(envelope: &TaskEnvelope, kind: ReplyKind) -> String {
    format!(
        "<!-- contexten:task={}:{} -->",
        envelope.task_id,
        kind.as_str()
    )
}

/// The title line of an answer by result kind.
fn answer_title(result: Option<&TaskResult>) -> &'static str {
    match result.map(|r| r.kind) {
        Some(ResultKind::Code) => "Here is the generated code.",
        Some(ResultKind::Diff) => "Here is the proposed change.",
        Some(ResultKind::AgentRun) => "The agent has finished.",
        Some(ResultKind::ContextOnly) => "Here is what I found.",
        Some(ResultKind::Failure) | None => "The task finished without an answer.",
    }
}

/// The summary, cut to [`SUMMARY_LIMIT`].
fn summary(result: Option<&TaskResult>) -> String {
    let text = result.map(|r| r.summary.trim()).unwrap_or("");
    match cut_chars(text, SUMMARY_LIMIT) {
        cut if cut.len() < text.len() => format!("{cut}…"),
        cut => cut.to_owned(),
    }
}

/// Milliseconds from the request to the last finished stage (or `now_ms`).
pub fn total_ms(envelope: &TaskEnvelope, now_ms: u64) -> u64 {
    let end = envelope
        .timings
        .iter()
        .filter_map(|t| t.finished_at_ms)
        .max()
        .unwrap_or(now_ms);
    end.saturating_sub(envelope.created_at_ms)
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `850 ms`, `4.2 s`, `3 min 5 s`.
fn duration_text(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=119_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// The one-line cost and timing facts: task, tokens, calls, total time.
pub fn footer_parts(envelope: &TaskEnvelope, now_ms: u64) -> Vec<String> {
    let cost = &envelope.cost;
    let mut parts = vec![format!("task `{}`", envelope.task_id)];
    let tokens = cost.llm_prompt_tokens + cost.llm_completion_tokens;
    if tokens > 0 {
        parts.push(format!(
            "{} ({} in, {} out)",
            plural(tokens, "token", "tokens"),
            thousands(cost.llm_prompt_tokens),
            thousands(cost.llm_completion_tokens)
        ));
    }
    if cost.llm_calls > 0 {
        parts.push(plural(cost.llm_calls.into(), "LLM call", "LLM calls"));
    }
    if cost.agent_calls > 0 {
        parts.push(plural(cost.agent_calls.into(), "agent call", "agent calls"));
    }
    let api: u64 = cost.api_calls.values().map(|&n| u64::from(n)).sum();
    if api > 0 {
        parts.push(plural(api, "API call", "API calls"));
    }
    parts.push(duration_text(total_ms(envelope, now_ms)));
    parts
}

/// The label of a pull request link: `#123` for `…/pull/123`, else the URL.
fn pull_label(url: &str) -> String {
    match url.trim_end_matches('/').rsplit_once("/pull/") {
        Some((_, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => format!("#{n}"),
        _ => url.to_owned(),
    }
}

/// The fence for `text`: three backticks, or one more than the longest run of
/// backticks inside it, so code containing a fence cannot close ours.
pub fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

/// The callback body: `{type, timestamp, data}` in the Standard Webhooks style.
pub fn callback_body(envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> Vec<u8> {
    let body = json!({
        "type": format!("task.{}", kind.as_str()),
        "timestamp": contexten_providers::time::rfc3339(now_ms / 1000),
        "data": {
            "task_id": envelope.task_id,
            "correlation_id": envelope.correlation_id,
            "reply": kind,
            "result": envelope.result,
            "cost": envelope.cost,
            "total_ms": total_ms(envelope, now_ms),
        }
    });
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(4_200), "4.2 s");
        assert_eq!(duration_text(185_000), "3 min 5 s");
    }

    #[test]
    fn fences_outgrow_the_backticks_inside() {
        assert_eq!(fence_for("let x = 1;"), "```");
        assert_eq!(fence_for("a ```rust\n``` b"), "````");
    }

    #[test]
    fn pull_requests_get_short_labels() {
        assert_eq!(pull_label("https://github.com/o/r/pull/12"), "#12");
        assert_eq!(pull_label("https://example.com/x"), "https://example.com/x");
    }
}
