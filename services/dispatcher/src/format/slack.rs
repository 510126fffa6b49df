//! Slack mrkdwn in Block Kit: a section with the title and summary, the answer
//! in sections of at most 3,000 characters (code re-fenced in every section,
//! since Slack has no fence languages and a block cannot continue another), and a
//! context block with the links and the cost/timing footer. The message (text
//! and blocks together) stays under 40,000 characters and 50 blocks. An answer
//! that does not fit ([`render_answer`]) becomes a summary message (title,
//! summary, where the file is, footer) and the full answer as a file
//! ([`AnswerFile`]); the one-message form cut with a visible marker remains for
//! where no file can go (a slash command's `response_url`, a workspace that
//! refuses uploads). `text` is the notification fallback.

use super::truncate::{cut_at_line, cut_chars, open_fence};
use super::{
    MAX_PULL_REQUESTS, SLACK_BLOCK_LIMIT, SLACK_MAX_BLOCKS, SLACK_MESSAGE_LIMIT, Shape,
    answer_title, footer_parts, pull_label, summary,
};
use contexten_envelope::{ReplyKind, ResultKind, TaskEnvelope, TaskResult};
use serde_json::{Value, json};

/// A Slack message: fallback text and blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackReply {
    pub text: String,
    pub blocks: Vec<Value>,
}

impl SlackReply {
    /// Characters of text and block texts together (what the limit counts).
    pub fn chars(&self) -> usize {
        self.text.chars().count() + self.blocks.iter().map(block_chars).sum::<usize>()
    }
}

fn block_chars(block: &Value) -> usize {
    if let Some(text) = block.pointer("/text/text").and_then(Value::as_str) {
        return text.chars().count();
    }
    block
        .get("elements")
        .and_then(Value::as_array)
        .map(|elements| {
            elements
                .iter()
                .filter_map(|e| e.get("text").and_then(Value::as_str))
                .map(|t| t.chars().count())
                .sum()
        })
        .unwrap_or(0)
}

/// An answer too long for one message, as a file for the thread.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerFile {
    /// `contexten-<task>.<ext>`: unique per task, so a thread can be searched for it.
    pub filename: String,
    pub title: String,
    /// The whole answer as the result carries it (code unescaped, no fence).
    pub content: String,
}

/// A reply for Slack: the one-message form, and for an answer that does not
/// fit in one message, its summary message and the file.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackAnswer {
    /// The whole reply in one message, cut with a notice when it does not fit.
    pub message: SlackReply,
    /// When the answer was cut: the summary message and the full answer.
    pub long: Option<(SlackReply, AnswerFile)>,
}

/// The Slack message of a reply.
pub fn render(envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> SlackReply {
    render_with_limit(envelope, kind, now_ms, SLACK_MESSAGE_LIMIT)
}

/// The reply, and when it does not fit in a message, its summary and file.
pub fn render_answer(envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> SlackAnswer {
    render_answer_with_limit(envelope, kind, now_ms, SLACK_MESSAGE_LIMIT)
}

/// [`render_answer`] with an explicit message limit (tests use small ones).
pub fn render_answer_with_limit(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    now_ms: u64,
    limit: usize,
) -> SlackAnswer {
    let (message, cut) = build(envelope, kind, now_ms, limit, None);
    let long = match (cut, envelope.result.as_ref()) {
        (true, Some(result)) => result.text.as_deref().map(|text| {
            let file = AnswerFile {
                filename: format!("contexten-{}.{}", envelope.task_id, extension(result)),
                title: format!("Full answer (task {})", envelope.task_id),
                content: text.to_owned(),
            };
            let lines = text.lines().count();
            let notice = format!(
                ":page_facing_up: _The full answer ({lines} lines, {} characters) is too long for a Slack message; it is attached in the thread as `{}`._",
                text.chars().count(),
                file.filename
            );
            let (summary, _) = build(envelope, kind, now_ms, limit, Some(&notice));
            (summary, file)
        }),
        _ => None,
    };
    SlackAnswer { message, long }
}

/// The file extension of an answer: the code's language, `diff`, or `md`.
fn extension(result: &TaskResult) -> &'static str {
    match result.kind {
        ResultKind::Diff => "diff",
        ResultKind::Code => match result
            .language
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase()
            .as_str()
        {
            "rust" | "rs" => "rs",
            "python" | "py" => "py",
            "typescript" | "ts" => "ts",
            "tsx" => "tsx",
            "javascript" | "js" => "js",
            "go" | "golang" => "go",
            "java" => "java",
            "ruby" | "rb" => "rb",
            "c" => "c",
            "cpp" | "c++" => "cpp",
            "shell" | "bash" | "sh" => "sh",
            _ => "txt",
        },
        _ => "md",
    }
}

/// [`render`] with an explicit message limit (tests use small ones).
pub fn render_with_limit(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    now_ms: u64,
    limit: usize,
) -> SlackReply {
    build(envelope, kind, now_ms, limit, None).0
}

/// The message, and whether its content was cut; with `file_notice`, the
/// content is replaced by that notice (the summary of a long answer).
fn build(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    now_ms: u64,
    limit: usize,
    file_notice: Option<&str>,
) -> (SlackReply, bool) {
    let result = envelope.result.as_ref();
    let mut summary = mrkdwn(&summary(result));
    let (title, content, with_footer) = match Shape::of(envelope, kind) {
        Shape::Ack => (
            format!(
                ":eyes: *On it.* I'm working on this request (task `{}`).",
                envelope.task_id
            ),
            String::new(),
            false,
        ),
        Shape::Progress => (
            ":hourglass_flowing_sand: *Working on it.*".to_owned(),
            String::new(),
            false,
        ),
        Shape::Answer => (
            format!(":white_check_mark: *{}*", answer_title(result)),
            answer(result),
            true,
        ),
        Shape::Failure => {
            if let Some(reason) = result.and_then(|r| r.reason.as_deref()) {
                summary = format!("{summary}\nReason: `{}`", escape(reason))
                    .trim_start()
                    .to_owned();
            }
            (
                ":warning: *This request could not be completed.*".to_owned(),
                String::new(),
                true,
            )
        }
    };
    let heading = if summary.is_empty() {
        title.clone()
    } else {
        format!("{title}\n{summary}")
    };
    let text = cut_chars(&plain_fallback(&title, &summary), SLACK_BLOCK_LIMIT).to_owned();
    let mut blocks = vec![section(cut_chars(&heading, SLACK_BLOCK_LIMIT))];
    let mut context = Vec::new();
    let links = links(result);
    if !links.is_empty() {
        context.push(links);
    }
    if with_footer {
        context.push(footer_parts(envelope, now_ms).join(" · "));
    }
    let context_block = (!context.is_empty()).then(|| {
        json!({
            "type": "context",
            "elements": context
                .iter()
                .map(|t| json!({"type": "mrkdwn", "text": cut_chars(t, SLACK_BLOCK_LIMIT)}))
                .collect::<Vec<_>>(),
        })
    });
    let fixed = text.chars().count()
        + block_chars(&blocks[0])
        + context_block.as_ref().map(block_chars).unwrap_or(0);
    let cut = match file_notice {
        Some(notice) => {
            blocks.push(section(cut_chars(notice, SLACK_BLOCK_LIMIT)));
            false
        }
        None => push_content(&mut blocks, &content, limit.saturating_sub(fixed)),
    };
    blocks.extend(context_block);
    (SlackReply { text, blocks }, cut)
}

/// Adds the content as sections within `budget` characters and the block
/// count, ending with a truncation notice when it does not all fit (then
/// returns true).
fn push_content(blocks: &mut Vec<Value>, content: &str, budget: usize) -> bool {
    if content.is_empty() {
        return false;
    }
    let total = content.chars().count();
    let notice = format!(
        "_…truncated: the full answer is {total} characters; a Slack message shows at most {SLACK_MESSAGE_LIMIT}._"
    );
    // Keep room for the notice and the context block.
    let max_sections = SLACK_MAX_BLOCKS - blocks.len() - 2;
    let mut left = budget.saturating_sub(notice.chars().count());
    let mut rest = content;
    let mut reopen = String::new();
    let mut sections = 0;
    while !rest.is_empty() {
        if sections == max_sections || left <= reopen.len() + 8 {
            blocks.push(section(&notice));
            return true;
        }
        // Room for a re-opened fence at the start and a closing one at the end.
        let room = (SLACK_BLOCK_LIMIT - 8 - reopen.len()).min(left - reopen.len() - 8);
        let piece = cut_at_line(rest, room);
        let piece = if piece.is_empty() {
            cut_chars(rest, room.max(1))
        } else {
            piece
        };
        rest = rest[piece.len()..].trim_start_matches('\n');
        let mut text = format!("{reopen}{piece}");
        reopen.clear();
        if let Some(fence) = open_fence(&text) {
            text.push('\n');
            text.push_str(&fence);
            if !rest.is_empty() {
                reopen = format!("{fence}\n");
            }
        }
        left = left.saturating_sub(text.chars().count());
        blocks.push(section(&text));
        sections += 1;
    }
    false
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// The answer as mrkdwn: code and diffs in a bare fence, agent text converted.
fn answer(result: Option<&TaskResult>) -> String {
    let Some(result) = result else {
        return String::new();
    };
    let Some(text) = result.text.as_deref().filter(|t| !t.trim().is_empty()) else {
        return String::new();
    };
    match result.kind {
        ResultKind::Code | ResultKind::Diff => {
            format!("```\n{}\n```", escape(text.trim_end_matches('\n')))
        }
        _ => mrkdwn(text.trim()),
    }
}

fn links(result: Option<&TaskResult>) -> String {
    let Some(result) = result else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(url) = &result.web_url {
        parts.push(format!("<{}|View the run>", escape(url)));
    }
    if !result.pull_requests.is_empty() {
        let prs: Vec<String> = result
            .pull_requests
            .iter()
            .take(MAX_PULL_REQUESTS)
            .map(|url| format!("<{}|{}>", escape(url), escape(&pull_label(url))))
            .collect();
        parts.push(format!("Pull requests: {}", prs.join(", ")));
    }
    parts.join(" · ")
}

/// The notification text: the title and summary without mrkdwn decoration.
fn plain_fallback(title: &str, summary: &str) -> String {
    let title = title
        .split_whitespace()
        .filter(|w| !(w.starts_with(':') && w.ends_with(':') && w.len() > 2))
        .collect::<Vec<_>>()
        .join(" ")
        .replace('*', "");
    if summary.is_empty() {
        title
    } else {
        format!("{title} {summary}")
    }
}

/// Slack's three control characters, escaped as its docs require.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A light markdown → mrkdwn conversion: `**b**` → `*b*`, `[l](u)` → `<u|l>`,
/// `# h` → `*h*`, fence languages dropped; everything else escaped.
pub fn mrkdwn(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            out.push("```".to_owned());
            continue;
        }
        if in_code {
            out.push(escape(line));
            continue;
        }
        let heading = trimmed.trim_start_matches('#');
        let line = if trimmed.starts_with('#') && heading.starts_with(' ') {
            format!("*{}*", heading.trim())
        } else {
            line.replace("**", "*")
        };
        out.push(links_to_mrkdwn(&escape(&line)));
    }
    out.join("\n")
}

/// `[label](url)` → `<url|label>` (on already escaped text).
fn links_to_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let parsed = after.find("](").and_then(|close| {
            let url_part = &after[close + 2..];
            let end = url_part.find(')')?;
            let url = &url_part[..end];
            (url.starts_with("http://") || url.starts_with("https://"))
                .then(|| (&after[..close], url, open + 1 + close + 2 + end + 1))
        });
        match parsed {
            Some((label, url, consumed)) => {
                out.push_str(&rest[..open]);
                out.push_str(&format!("<{url}|{label}>"));
                rest = &rest[consumed..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{Request, Source, SourceKind, Stage};

    fn answer(kind: ResultKind, language: Option<&str>, text: &str) -> TaskEnvelope {
        let mut env = TaskEnvelope::new(
            Source {
                kind: SourceKind::SLACK,
                delivery_id: None,
                requested_by: None,
                reply_to: contexten_envelope::ReplyTarget::None,
                extra: Default::default(),
            },
            Request::default(),
        );
        env.result = Some(TaskResult {
            kind,
            produced_by: Stage::Generate,
            summary: "Done.".into(),
            text: Some(text.into()),
            language: language.map(str::to_owned),
            web_url: None,
            pull_requests: Vec::new(),
            reason: None,
            extra: Default::default(),
        });
        env
    }

    #[test]
    fn only_an_answer_that_does_not_fit_becomes_a_summary_and_a_file() {
        let short = answer(ResultKind::Code, Some("rust"), "fn a() {}\n");
        assert_eq!(render_answer(&short, ReplyKind::Final, 0).long, None);
        let code = "fn a() {}\n".repeat(100);
        let long = answer(ResultKind::Code, Some("Rust"), &code);
        let rendered = render_answer_with_limit(&long, ReplyKind::Final, 0, 500);
        let (summary, file) = rendered.long.expect("a file");
        assert_eq!(file.content, code);
        assert_eq!(file.filename, format!("contexten-{}.rs", long.task_id));
        assert!(
            !summary
                .blocks
                .iter()
                .any(|b| b.to_string().contains("fn a()"))
        );
        assert!(
            rendered
                .message
                .blocks
                .iter()
                .any(|b| b.to_string().contains("…truncated"))
        );
        let diff = answer(ResultKind::Diff, None, &"+x\n".repeat(400));
        let (_, file) = render_answer_with_limit(&diff, ReplyKind::Final, 0, 500)
            .long
            .expect("a file");
        assert!(file.filename.ends_with(".diff"));
    }

    #[test]
    fn markdown_becomes_mrkdwn() {
        assert_eq!(
            mrkdwn(
                "# Title\n**bold** and [docs](https://x.y/a?b=1&c=2) <tag>\n```rust\nlet a = 1 < 2;\n```"
            ),
            "*Title*\n*bold* and <https://x.y/a?b=1&amp;c=2|docs> &lt;tag&gt;\n```\nlet a = 1 &lt; 2;\n```"
        );
    }
}
