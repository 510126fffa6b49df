//! What `GET /v1/tasks/{id}` says about a task: its [`TaskState`], read from
//! the words the broker runtime writes into the status record, and, once
//! final, its [`TaskAnswer`], read from the record's `result` field (written
//! by the runtime when dispatch handles the final reply, whatever its target).

use contexten_broker::failure_text;
use contexten_envelope::{STATUS_RESULT_FIELD, Stage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// Where a task is, derived from its status record:
///
/// | state | the record says |
/// |---|---|
/// | `queued` | `queued:<stage>` written by ingest: accepted, no worker has finished a step |
/// | `running` | `queued:<stage>` written by a worker: a step finished and passed the task on |
/// | `retrying` | `retrying`: a step failed transiently and runs again after a delay |
/// | `done` | the final answer is stored (or `done` without one: the task ended without an answer) |
/// | `failed` | a failure answer is stored, or `dead_lettered:<code>` (the answer is on its way) |
///
/// `done` and `failed` are final: `answer` is set and does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Retrying,
    Done,
    Failed,
}

impl TaskState {
    /// Whether the task has its final answer.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Done | TaskState::Failed)
    }
}

/// What kind of answer it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// Generated code (`text`, in `language`).
    Code,
    /// A unified diff (`text`).
    Diff,
    /// The Codegen agent ran (`links.agent_run`, `links.pull_requests`).
    AgentRun,
    /// The ranked files and why (no language model was used).
    ContextOnly,
    /// The task was given up on: `reason` and the sentence in `summary`.
    Failure,
    /// The task ended without an answer, or with a kind this version does not know.
    #[serde(other)]
    Empty,
}

/// Where the answer's work can be seen.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct AnswerLinks {
    /// The Codegen agent run's page.
    pub agent_run: Option<String>,
    /// Pull requests the agent opened.
    pub pull_requests: Vec<String>,
}

/// Tokens and calls spent on the task (the envelope's cost ledger).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Cost {
    #[serde(default)]
    pub llm_prompt_tokens: u64,
    #[serde(default)]
    pub llm_completion_tokens: u64,
    #[serde(default)]
    pub llm_calls: u32,
    #[serde(default)]
    pub agent_calls: u32,
    /// Other API calls by provider (`github`, `slack`, …); absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_calls: BTreeMap<String, u32>,
}

/// A task's final answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskAnswer {
    pub kind: AnswerKind,
    /// The stage that produced it (`generate`, `agent`, or the stage that gave up).
    pub produced_by: Option<String>,
    /// One paragraph; for a failure, the sentence for `reason`.
    pub summary: String,
    /// The code blocks or diff. Over 1 MiB it is cut, ending with a
    /// `[contexten: truncated …]` line, and `text_truncated` is true.
    pub text: Option<String>,
    pub text_truncated: bool,
    /// The language of `text` (`rust`, `python`, `diff`, …).
    pub language: Option<String>,
    pub links: AnswerLinks,
    /// For a failure: the snake_case reason code (`repository_not_found`, `retries_exhausted`, …).
    pub reason: Option<String>,
    pub cost: Cost,
    /// Why generation fell back to the agent, if it did.
    pub fallback_reason: Option<String>,
}

/// The `result` field as the broker runtime writes it.
#[derive(Debug, Deserialize)]
struct StoredAnswer {
    #[serde(default)]
    reply: Option<String>,
    #[serde(default)]
    kind: Option<AnswerKind>,
    #[serde(default)]
    produced_by: Option<String>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    text_truncated: bool,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    pull_requests: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    cost: Cost,
    #[serde(default)]
    fallback_reason: Option<String>,
}

impl From<StoredAnswer> for TaskAnswer {
    fn from(stored: StoredAnswer) -> Self {
        let failed = stored.reply.as_deref() == Some("failure");
        let kind = match stored.kind {
            _ if failed => AnswerKind::Failure,
            Some(kind) => kind,
            None => AnswerKind::Empty,
        };
        TaskAnswer {
            kind,
            produced_by: stored.produced_by,
            summary: stored.summary,
            text: stored.text,
            text_truncated: stored.text_truncated,
            language: stored.language,
            links: AnswerLinks {
                agent_run: stored.web_url,
                pull_requests: stored.pull_requests,
            },
            reason: stored.reason,
            cost: stored.cost,
            fallback_reason: stored.fallback_reason,
        }
    }
}

/// The state and answer a status record holds. `pending_failure` is true when
/// the record says `dead_lettered:<code>` but the failure answer has not been
/// stored yet (the answer then holds the code and its sentence).
pub struct Reading {
    pub state: TaskState,
    pub answer: Option<TaskAnswer>,
    pub pending_failure: bool,
}

/// Reads state and answer from a status record's fields.
pub fn read(fields: &HashMap<String, String>) -> Reading {
    let stored = fields
        .get(STATUS_RESULT_FIELD)
        .and_then(|s| serde_json::from_str::<StoredAnswer>(s).ok())
        .map(TaskAnswer::from);
    if let Some(answer) = stored {
        let state = match answer.kind {
            AnswerKind::Failure => TaskState::Failed,
            _ => TaskState::Done,
        };
        return Reading {
            state,
            answer: Some(answer),
            pending_failure: false,
        };
    }
    let record = fields.get("state").map(String::as_str).unwrap_or("");
    let stage = fields.get("stage").map(String::as_str).unwrap_or("");
    let state = match record {
        _ if record.starts_with("dead_lettered:") => TaskState::Failed,
        "done" => TaskState::Done,
        "retrying" => TaskState::Retrying,
        _ if stage == Stage::Ingest.as_str() => TaskState::Queued,
        _ => TaskState::Running,
    };
    let answer = record
        .strip_prefix("dead_lettered:")
        .map(|code| given_up(stage, code));
    Reading {
        state,
        pending_failure: answer.is_some(),
        answer,
    }
}

/// The failure answer of a task given up on at `stage` with `code`, before
/// the runtime's own has been stored: the same code and sentence (without the
/// last retry's code, which only the stored answer knows).
fn given_up(stage: &str, code: &str) -> TaskAnswer {
    let stage = stage.parse().unwrap_or(Stage::Dispatch);
    TaskAnswer {
        kind: AnswerKind::Failure,
        produced_by: Some(stage.as_str().to_owned()),
        summary: failure_text(stage, code, None),
        text: None,
        text_truncated: false,
        language: None,
        links: AnswerLinks::default(),
        reason: Some(code.to_owned()),
        cost: Cost::default(),
        fallback_reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_runtime_words_map_to_states() {
        let state = |pairs: &[(&str, &str)]| read(&record(pairs)).state;
        assert_eq!(
            state(&[("state", "queued:context"), ("stage", "ingest")]),
            TaskState::Queued
        );
        assert_eq!(
            state(&[("state", "queued:generate"), ("stage", "context")]),
            TaskState::Running
        );
        assert_eq!(
            state(&[("state", "retrying"), ("stage", "generate")]),
            TaskState::Retrying
        );
        assert_eq!(
            state(&[("state", "done"), ("stage", "dispatch")]),
            TaskState::Done
        );
        let given_up = read(&record(&[
            ("state", "dead_lettered:repository_not_found"),
            ("stage", "context"),
        ]));
        assert_eq!(given_up.state, TaskState::Failed);
        assert!(given_up.pending_failure);
        let answer = given_up.answer.unwrap();
        assert_eq!(answer.reason.as_deref(), Some("repository_not_found"));
        assert!(answer.summary.contains("could not be found"));
    }

    #[test]
    fn a_stored_answer_wins_over_the_record_state() {
        let stored = r#"{"v":1,"reply":"final","kind":"code","summary":"s","text":"fn a() {}",
            "web_url":"https://codegen.example/run/1","cost":{"llm_calls":1},"fallback_reason":null}"#;
        let reading = read(&record(&[
            ("state", "retrying"),
            ("stage", "dispatch"),
            ("result", stored),
        ]));
        assert_eq!(reading.state, TaskState::Done);
        let answer = reading.answer.unwrap();
        assert_eq!(answer.kind, AnswerKind::Code);
        assert_eq!(answer.text.as_deref(), Some("fn a() {}"));
        assert_eq!(answer.cost.llm_calls, 1);
        assert_eq!(
            answer.links.agent_run.as_deref(),
            Some("https://codegen.example/run/1")
        );
        let failure =
            r#"{"reply":"failure","kind":"failure","reason":"llm_rejected","summary":"Sorry"}"#;
        let reading = read(&record(&[("state", "done"), ("result", failure)]));
        assert_eq!(reading.state, TaskState::Failed);
        let unknown = r#"{"reply":"final","kind":"hologram"}"#;
        let reading = read(&record(&[("result", unknown)]));
        assert_eq!(reading.answer.unwrap().kind, AnswerKind::Empty);
    }
}
