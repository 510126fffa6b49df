//! GitHub and Linear markdown: a title, the summary, the answer (code in a fence
//! with its language, diffs in a `diff` fence, agent answers as the agent wrote
//! them), links to the run and its pull requests, and a one-line footer with
//! cost and timing. Long answers are cut at the platform's limit, closing any
//! open fence, with a visible marker.

use super::truncate::{cut_at_line, open_fence};
use super::{
    GITHUB_LIMIT, LINEAR_LIMIT, MAX_PULL_REQUESTS, Shape, answer_title, fence_for, footer_parts,
    marker, pull_label, summary,
};
use contexten_envelope::{ReplyKind, ResultKind, TaskEnvelope, TaskResult};

/// Which markdown dialect and limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub: hidden marker first, `<sub>` footer, 65,536 characters.
    Github,
    /// Linear: no HTML, italic footer.
    Linear,
}

impl Flavor {
    /// The body limit in characters.
    pub fn limit(self) -> usize {
        match self {
            Flavor::Github => GITHUB_LIMIT,
            Flavor::Linear => LINEAR_LIMIT,
        }
    }
}

/// The markdown body of a reply.
pub fn render(envelope: &TaskEnvelope, kind: ReplyKind, flavor: Flavor, now_ms: u64) -> String {
    render_with_limit(envelope, kind, flavor, now_ms, flavor.limit())
}

/// [`render`] with an explicit limit (tests use small ones).
pub fn render_with_limit(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    flavor: Flavor,
    now_ms: u64,
    limit: usize,
) -> String {
    let result = envelope.result.as_ref();
    let mut head = String::new();
    if flavor == Flavor::Github {
        head.push_str(&marker(envelope, kind));
        head.push('\n');
    }
    let mut content = String::new();
    let mut tail = links(result);
    match Shape::of(envelope, kind) {
        Shape::Ack => {
            head.push_str(&format!(
                "👀 **On it.** I'm working on this request (task `{}`).",
                envelope.task_id
            ));
            return head;
        }
        Shape::Progress => {
            head.push_str("⏳ **Working on it.**");
            push_paragraph(&mut head, &summary(result));
            return join(&[&head, &tail]);
        }
        Shape::Answer => {
            head.push_str(&format!("✅ **{}**", answer_title(result)));
            push_paragraph(&mut head, &summary(result));
            content = answer(result);
        }
        Shape::Failure => {
            head.push_str("⚠️ **This request could not be completed.**");
            push_paragraph(&mut head, &summary(result));
            if let Some(reason) = result.and_then(|r| r.reason.as_deref()) {
                push_paragraph(&mut head, &format!("Reason: `{reason}`"));
            }
        }
    }
    let footer = footer_parts(envelope, now_ms).join(" · ");
    let footer = match flavor {
        Flavor::Github => format!("<sub>contexten · {footer}</sub>"),
        Flavor::Linear => format!("_contexten · {footer}_"),
    };
    push_paragraph(&mut tail, &footer);
    assemble(&head, &content, &tail, limit)
}

/// The answer itself, by result kind.
fn answer(result: Option<&TaskResult>) -> String {
    let Some(result) = result else {
        return String::new();
    };
    let Some(text) = result.text.as_deref().filter(|t| !t.trim().is_empty()) else {
        return String::new();
    };
    let language = match result.kind {
        ResultKind::Diff => Some("diff"),
        ResultKind::Code => Some(result.language.as_deref().unwrap_or("")),
        _ => None,
    };
    match language {
        Some(language) => {
            let fence = fence_for(text);
            format!(
                "{fence}{language}\n{}\n{fence}",
                text.trim_end_matches('\n')
            )
        }
        None => text.trim().to_owned(),
    }
}

/// `[View the run](…) · Pull requests: [#12](…)`.
fn links(result: Option<&TaskResult>) -> String {
    let Some(result) = result else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(url) = &result.web_url {
        parts.push(format!("[View the run]({url})"));
    }
    if !result.pull_requests.is_empty() {
        let prs: Vec<String> = result
            .pull_requests
            .iter()
            .take(MAX_PULL_REQUESTS)
            .map(|url| format!("[{}]({url})", pull_label(url)))
            .collect();
        parts.push(format!("Pull requests: {}", prs.join(", ")));
    }
    parts.join(" · ")
}

fn push_paragraph(text: &mut String, paragraph: &str) {
    if paragraph.is_empty() {
        return;
    }
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(paragraph);
}

fn join(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        push_paragraph(&mut out, part);
    }
    out
}

/// Head, content and tail joined; when over `limit`, only the content is cut
/// (at a line break where possible, never inside a character), an open fence is
/// closed, and a marker says what happened.
fn assemble(head: &str, content: &str, tail: &str, limit: usize) -> String {
    let full = join(&[head, content, tail]);
    let length = full.chars().count();
    if length <= limit {
        return full;
    }
    let notice = format!(
        "**…truncated:** the full answer is {} characters; this platform shows at most {limit}.",
        length
    );
    let fixed = join(&[head, &notice, tail]).chars().count();
    // Room for the paragraph break before the content and a closing fence.
    let reserve = 2 + 1 + fence_for(content).chars().count() + 2;
    let budget = limit.saturating_sub(fixed + reserve);
    let mut cut = cut_at_line(content, budget).to_owned();
    if let Some(fence) = open_fence(&cut) {
        cut.push('\n');
        cut.push_str(&fence);
    }
    join(&[head, &cut, &notice, tail])
}
