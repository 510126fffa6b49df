//! The answers the stage sends to dispatch: a generated result, or the
//! context-only answer of a fleet without an LLM provider.

use crate::handler::{Answer, Provenance};
use crate::job::{Job, Kind};
use crate::prompt::TEMPLATE_VERSION;
use crate::validate::Checked;
use contexten_broker::Outcome;
use contexten_envelope::{Extra, ReplyKind, ResultKind, Stage, TaskEnvelope, TaskResult};
use contexten_llm::{Message, Role};

/// The cached form of a checked answer.
pub fn generated(job: &Job, checked: Checked, model: &str, repaired: bool) -> Answer {
    let language = job.language.map(|l| l.name().to_owned());
    let mut summary = match job.kind {
        Kind::NewCode => {
            let what = match &job.symbol {
                Some(symbol) => format!("the {} `{symbol}`", job.symbol_kind),
                None => format!("a {}", job.symbol_kind),
            };
            let check = match &language {
                Some(l) => format!("; it parses as {l} (tree-sitter)"),
                None => "; language unknown, so not syntax-checked".into(),
            };
            format!("Generated {what} with {model}{check}.")
        }
        Kind::Diff => format!(
            "Generated a diff to {} with {model}; it applies cleanly to the repository and the changed files parse.",
            checked
                .files
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if repaired {
        summary.push_str(" The first answer was invalid; this is the repaired one.");
    }
    summary.push_str(" Not executed: review before use.");
    Answer {
        kind: job.kind.result_label().to_owned(),
        language,
        text: checked.text,
        summary,
    }
}

/// "Only N of M files …" when the context stage analysed part of the
/// repository (its caps, `context.extra.snapshot`), so the requester knows.
fn coverage_note(envelope: &TaskEnvelope) -> Option<String> {
    let snapshot = envelope.context.as_ref()?.extra.get("snapshot")?;
    if snapshot.get("partial")?.as_bool() != Some(true) {
        return None;
    }
    let (analysed, files) = (
        snapshot.get("analysed")?.as_u64()?,
        snapshot.get("files")?.as_u64()?,
    );
    Some(format!(
        " Only part of the repository was analysed: {analysed} of {files} files (it is larger than this deployment reads)."
    ))
}

/// " Read at commit abc1234." (with the pull request when it was one): the
/// revision the context stage read (`context.extra.commit`), so an answer
/// about a moving branch or PR says what it is about.
pub fn commit_note(envelope: &TaskEnvelope) -> Option<String> {
    let extra = &envelope.context.as_ref()?.extra;
    let commit = extra.get("commit")?.as_str()?;
    let short = commit.get(..7).unwrap_or(commit);
    let pull = extra
        .get("pull_request")
        .and_then(|p| p.get("number"))
        .and_then(serde_json::Value::as_u64);
    Some(match pull {
        Some(number) => format!(" Read at commit {short} (head of pull request #{number})."),
        None => format!(" Read at commit {short}."),
    })
}

/// The commit read, for `result.extra.commit`.
fn commit_extra(envelope: &TaskEnvelope) -> Extra {
    let mut extra = Extra::new();
    let commit = envelope
        .context
        .as_ref()
        .and_then(|c| c.extra.get("commit"))
        .cloned();
    if let Some(commit) = commit {
        extra.insert("commit".into(), commit);
    }
    extra
}

/// A generated (or cached, or shared) answer, final, to dispatch.
pub fn success(mut envelope: TaskEnvelope, answer: Answer, provenance: Provenance) -> Outcome {
    let mut summary = answer.summary;
    summary.extend(commit_note(&envelope));
    summary.extend(coverage_note(&envelope));
    match provenance {
        Provenance::Generated => {}
        Provenance::Cache(_) | Provenance::OtherReplica => {
            summary.push_str(" (served from the cache)")
        }
        Provenance::Coalesced => summary.push_str(" (shared with an identical request)"),
    }
    envelope.result = Some(TaskResult {
        kind: if answer.kind == "diff" {
            ResultKind::Diff
        } else {
            ResultKind::Code
        },
        produced_by: Stage::Generate,
        summary,
        text: Some(answer.text),
        language: answer.language,
        web_url: None,
        pull_requests: Vec::new(),
        reason: None,
        extra: commit_extra(&envelope),
    });
    envelope.reply = Some(ReplyKind::Final);
    Outcome::forward(Stage::Dispatch, envelope)
}

/// The answer without a provider: the ranked files with their symbols and the
/// reasons they were chosen, clearly labelled, so a fresh install completes the
/// flow. File contents and the prompt that would be sent go into the answer
/// only with `GENERATOR_CONTEXT_ONLY_SOURCE=1` (`with_source`): the answer is
/// posted wherever the request came from, and contents are not the requester's
/// to see just because they could ask.
pub fn context_only(
    mut envelope: TaskEnvelope,
    job: &Job,
    messages: &[Message],
    with_source: bool,
) -> Outcome {
    let mut text = format!(
        "**Context only: no LLM provider is configured** (set `LLM_API_KEY` to generate code). \
         Below are the files that matter for this request ({}), ranked, with their symbols and \
         why they were chosen.\n\n**Relevant files**\n",
        job.kind.as_str()
    );
    let items = envelope
        .context
        .as_ref()
        .map(|c| c.items.as_slice())
        .unwrap_or_default();
    if items.is_empty() {
        text.push_str(
            "- none: the task carries no context (the context stage did not run for it)\n",
        );
    }
    for item in items {
        text.push_str(&format!("- `{}` (score {:.2})", item.path, item.score));
        if !item.symbols.is_empty() {
            text.push_str(&format!(": {}", item.symbols.join(", ")));
        }
        if !item.reasons.is_empty() {
            text.push_str(&format!(" ({})", item.reasons.join("; ")));
        }
        text.push('\n');
    }
    if with_source {
        text.push_str(&prompt_section(messages));
    }
    let summary = if with_source {
        "Context-only answer: no LLM provider is configured, so no code was generated; \
         the relevant files and the prompt that would be sent are attached."
    } else {
        "Context-only answer: no LLM provider is configured, so no code was generated; \
         the relevant files and symbols are listed."
    };
    let mut summary = summary.to_owned();
    summary.extend(commit_note(&envelope));
    summary.extend(coverage_note(&envelope));
    envelope.result = Some(TaskResult {
        kind: ResultKind::ContextOnly,
        produced_by: Stage::Generate,
        summary,
        text: Some(text),
        language: job.language.map(|l| l.name().to_owned()),
        web_url: None,
        pull_requests: Vec::new(),
        reason: Some("no_llm_provider".into()),
        extra: commit_extra(&envelope),
    });
    envelope.reply = Some(ReplyKind::Final);
    Outcome::forward(Stage::Dispatch, envelope)
}

/// The prompt that would be sent, fenced, for operators who turned it on.
fn prompt_section(messages: &[Message]) -> String {
    let prompt: String = messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            format!("[{role}]\n{}\n", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let fence = fence_for(&prompt);
    format!(
        "\n**Prompt that would be sent** (template {TEMPLATE_VERSION})\n\n{fence}text\n{prompt}{fence}\n"
    )
}

/// A backtick fence longer than any backtick run inside `content`.
fn fence_for(content: &str) -> String {
    let longest = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use contexten_envelope::{ContextItem, ReplyTarget, Request, Source, SourceKind, TaskContext};

    fn api_task() -> TaskEnvelope {
        TaskEnvelope::new(
            Source {
                kind: SourceKind::API,
                delivery_id: None,
                requested_by: None,
                reply_to: ReplyTarget::None,
                extra: Extra::new(),
            },
            Request::default(),
        )
    }

    fn answer_text(with_source: bool) -> String {
        let mut envelope = api_task();
        envelope.context = Some(TaskContext {
            items: vec![ContextItem {
                path: "app/timeutil.py".into(),
                score: 0.91,
                symbols: vec!["parse_time".into()],
                reasons: vec!["mentions durations".into()],
            }],
            ..TaskContext::default()
        });
        let mut job = Job::sample();
        job.target_code = Some("def parse_time(text): return int(text)".into());
        let messages = crate::prompt::messages(&job);
        match context_only(envelope, &job, &messages, with_source) {
            Outcome::Forward(next) => next[0].envelope.result.clone().unwrap().text.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_context_only_answer_lists_files_without_their_contents() {
        let text = answer_text(false);
        assert_eq!(
            text,
            "**Context only: no LLM provider is configured** (set `LLM_API_KEY` to generate \
             code). Below are the files that matter for this request (new_code), ranked, with \
             their symbols and why they were chosen.\n\n**Relevant files**\n\
             - `app/timeutil.py` (score 0.91): parse_time (mentions durations)\n"
        );
    }

    #[test]
    fn an_operator_can_add_the_prompt_to_the_context_only_answer() {
        let text = answer_text(true);
        assert!(text.starts_with(&answer_text(false)));
        for part in [
            "**Prompt that would be sent** (template v2)",
            "[system]",
            "[user]",
            "def parse_time(text): return int(text)",
        ] {
            assert!(text.contains(part), "lacks {part:?}:\n{text}");
        }
    }

    /// The result of a freshly generated answer ("Added parse_time.") to `envelope`.
    fn generated_result(envelope: TaskEnvelope) -> TaskResult {
        let answer = Answer {
            kind: "code".into(),
            summary: "Added parse_time.".into(),
            text: "def parse_time(): ...".into(),
            language: None,
        };
        let Outcome::Forward(next) = success(envelope, answer, Provenance::Generated) else {
            panic!("not forwarded");
        };
        next[0].envelope.result.clone().unwrap()
    }

    #[test]
    fn a_partial_analysis_is_said_in_the_answer() {
        let mut envelope = api_task();
        assert_eq!(coverage_note(&envelope), None);
        let mut context = TaskContext::default();
        context.extra.insert(
            "snapshot".into(),
            serde_json::json!({"partial": true, "analysed": 2, "files": 4, "skipped": {"too_many_files": 2}}),
        );
        envelope.context = Some(context);
        assert_eq!(
            generated_result(envelope).summary,
            "Added parse_time. Only part of the repository was analysed: 2 of 4 files (it is larger than this deployment reads)."
        );
    }

    #[test]
    fn the_answer_names_the_commit_it_read() {
        let mut envelope = api_task();
        assert_eq!(commit_note(&envelope), None);
        let mut context = TaskContext::default();
        context.extra.insert(
            "commit".into(),
            "abc1234def5678abc1234def5678abc1234def56".into(),
        );
        envelope.context = Some(context.clone());
        assert_eq!(
            commit_note(&envelope).as_deref(),
            Some(" Read at commit abc1234.")
        );
        context
            .extra
            .insert("pull_request".into(), serde_json::json!({"number": 5}));
        envelope.context = Some(context);
        let result = generated_result(envelope);
        assert_eq!(
            result.summary,
            "Added parse_time. Read at commit abc1234 (head of pull request #5)."
        );
        assert_eq!(
            result.extra["commit"],
            "abc1234def5678abc1234def5678abc1234def56"
        );
    }

    #[test]
    fn fences_outgrow_the_content() {
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("a ```` b"), "`````");
    }
}
