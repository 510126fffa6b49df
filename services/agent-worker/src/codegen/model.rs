//! The Codegen REST API's wire types (docs/platforms.md §5.2), the run status
//! mapping (§5.3) and both error body shapes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `CreateAgentRunInput`: what a new run is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateAgentRun {
    pub prompt: String,
    /// Stored with the run; carries our task and correlation ids so a run can be
    /// found again (`list_runs`) after a crash between create and record.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// `ResumeAgentRunInput`: a follow-up prompt for an existing run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResumeAgentRun {
    pub agent_run_id: u64,
    pub prompt: String,
}

/// A pull request an agent run opened.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub head_branch_name: Option<String>,
}

/// `AgentRunResponse`. Everything but `id` and `organization_id` is nullable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentRun {
    pub id: u64,
    pub organization_id: u64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub source_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub github_pull_requests: Vec<PullRequest>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl AgentRun {
    /// The run's status, mapped.
    pub fn state(&self) -> RunState {
        RunState::parse(self.status.as_deref().unwrap_or(""))
    }

    /// The URLs of the pull requests the run opened.
    pub fn pull_request_urls(&self) -> Vec<String> {
        self.github_pull_requests
            .iter()
            .filter_map(|pr| pr.url.clone())
            .collect()
    }

    /// The value of `key` in the run's metadata, as a string.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

/// `Page_AgentRunResponse_`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentRunPage {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub items: Vec<AgentRun>,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub page: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub pages: u64,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Where a run stands. The API types `status` as a free string: the docs use
/// lowercase (`completed`), the live API uppercase (`COMPLETE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The run hit one of its own limits (time, iterations, tokens).
    LimitReached,
    /// A value this build does not know: treated as running until the deadline.
    Unknown(String),
}

impl RunState {
    /// Maps a status value, case-insensitively.
    pub fn parse(status: &str) -> Self {
        match status.trim().to_ascii_uppercase().as_str() {
            "PENDING" | "QUEUED" => RunState::Pending,
            "ACTIVE" | "RUNNING" | "EVALUATION" | "IN_PROGRESS" => RunState::Running,
            "COMPLETE" | "COMPLETED" => RunState::Succeeded,
            "FAILED" | "ERROR" => RunState::Failed,
            "CANCELLED" | "STOPPED" => RunState::Cancelled,
            "TIMEOUT" | "MAX_ITERATIONS_REACHED" | "OUT_OF_TOKENS" => RunState::LimitReached,
            _ => RunState::Unknown(status.to_owned()),
        }
    }

    /// Whether the run will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled | RunState::LimitReached
        )
    }
}

/// The message of an error body in either shape: `{message, status_code}` (the
/// current spec) or `{detail, status_code}` (older clients, and FastAPI's 422,
/// where `detail` is a list of `{loc, msg, type}`). Falls back to the raw text.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = parsed.as_ref().and_then(|value| {
        let field = value.get("message").or_else(|| value.get("detail"))?;
        Some(match field {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(validation_item)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
    });
    let text = text.unwrap_or_else(|| body.trim().to_owned());
    // Bodies end up in answers and logs: keep them short.
    truncate(&text, 500)
}

fn validation_item(item: &Value) -> String {
    let msg = item.get("msg").and_then(Value::as_str).unwrap_or_default();
    let loc = item
        .get("loc")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default();
    match (loc.is_empty(), msg.is_empty()) {
        (_, true) => item.to_string(),
        (true, false) => msg.to_owned(),
        (false, false) => format!("{loc}: {msg}"),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_case_insensitively() {
        for (raw, state) in [
            ("COMPLETE", RunState::Succeeded),
            ("completed", RunState::Succeeded),
            ("Completed", RunState::Succeeded),
            ("PENDING", RunState::Pending),
            ("queued", RunState::Pending),
            ("ACTIVE", RunState::Running),
            ("running", RunState::Running),
            ("in_progress", RunState::Running),
            ("EVALUATION", RunState::Running),
            ("ERROR", RunState::Failed),
            ("failed", RunState::Failed),
            ("STOPPED", RunState::Cancelled),
            ("cancelled", RunState::Cancelled),
            ("TIMEOUT", RunState::LimitReached),
            ("max_iterations_reached", RunState::LimitReached),
            ("OUT_OF_TOKENS", RunState::LimitReached),
        ] {
            assert_eq!(RunState::parse(raw), state, "{raw}");
        }
        let unknown = RunState::parse("THINKING_HARD");
        assert_eq!(unknown, RunState::Unknown("THINKING_HARD".into()));
        assert!(!unknown.is_terminal());
        assert!(RunState::parse("complete").is_terminal());
    }

    #[test]
    fn both_error_shapes_yield_their_message() {
        assert_eq!(
            error_message(
                r#"{"message":"You do not have access to this organization.","status_code":403}"#
            ),
            "You do not have access to this organization."
        );
        assert_eq!(
            error_message(r#"{"detail":"Rate limit exceeded","status_code":429}"#),
            "Rate limit exceeded"
        );
        assert_eq!(
            error_message(
                r#"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#
            ),
            "body.prompt: field required"
        );
        assert_eq!(
            error_message("<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
        assert_eq!(error_message(&"x".repeat(600)).chars().count(), 501);
    }

    #[test]
    fn a_run_response_with_nulls_parses() {
        let run: AgentRun = serde_json::from_str(
            r#"{"id":7,"organization_id":3,"status":null,"created_at":null,"web_url":null,
                "result":null,"summary":null,"source_type":"API","github_pull_requests":null,
                "metadata":null}"#,
        )
        .unwrap();
        assert_eq!(run.id, 7);
        assert_eq!(run.state(), RunState::Unknown(String::new()));
        assert!(run.pull_request_urls().is_empty());

        let run: AgentRun = serde_json::from_str(
            r#"{"id":8,"organization_id":3,"status":"COMPLETE",
                "github_pull_requests":[{"id":1,"title":"t","url":"https://github.com/o/r/pull/1",
                "created_at":"2025-01-01T00:00:00Z","head_branch_name":"b"}],
                "metadata":{"task_id":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            run.pull_request_urls(),
            vec!["https://github.com/o/r/pull/1"]
        );
        assert_eq!(run.metadata_str("task_id"), Some("abc"));
    }
}
