//! The envelope types and their (de)serialisation rules.

use crate::{Priority, Stage, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The only envelope version this build understands.
pub const ENVELOPE_VERSION: u32 = 1;

/// Fields a version does not know, kept verbatim for the round trip.
pub type Extra = Map<String, Value>;

/// A task's identity: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        TaskId(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for TaskId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(TaskId)
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The document that travels through the stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    pub v: u32,
    pub task_id: TaskId,
    pub correlation_id: String,
    pub created_at_ms: u64,
    pub source: Source,
    pub request: Request,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_rule: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// Retries spent in the current stage (reset when the task moves on).
    #[serde(default)]
    pub attempt: u32,
    /// Messages published for this task so far; with the stage it names one
    /// message, so a redelivered or re-published copy is recognised.
    #[serde(default)]
    pub hop: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<TaskContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<StageTiming>,
    #[serde(default)]
    pub cost: CostLedger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Set on the agent stage's own status-check messages: the Codegen run to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_run: Option<AgentRunRef>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The Codegen agent run a status-check message polls (agent stage only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRunRef {
    /// Codegen's agent run id.
    pub run_id: u64,
    /// When the run was created (or resumed) for this task, unix milliseconds;
    /// the maximum run duration counts from here.
    pub created_at_ms: u64,
    /// Status checks made so far (drives the poll backoff).
    #[serde(default)]
    pub polls: u32,
    /// The run's page on codegen.com, for progress and timeout answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

impl TaskEnvelope {
    /// A new version-1 envelope for `request` from `source`.
    pub fn new(source: Source, request: Request) -> Self {
        let task_id = TaskId::new();
        TaskEnvelope {
            v: ENVELOPE_VERSION,
            task_id,
            correlation_id: source
                .delivery_id
                .clone()
                .unwrap_or_else(|| task_id.to_string()),
            created_at_ms: now_ms(),
            source,
            request,
            strategy: Strategy::default(),
            strategy_rule: None,
            priority: Priority::default(),
            conversation: None,
            attempt: 0,
            hop: 0,
            context: None,
            result: None,
            reply: None,
            timings: Vec::new(),
            cost: CostLedger::default(),
            fallback_reason: None,
            agent_run: None,
            extra: Extra::new(),
        }
    }

    /// Parses an envelope, refusing versions this build does not know rather than
    /// guessing at their shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct VersionProbe {
            v: Option<Value>,
        }
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        match probe.v {
            Some(Value::Number(n)) if n.as_u64() == Some(ENVELOPE_VERSION as u64) => {}
            Some(other) => return Err(EnvelopeError::UnknownVersion(other.to_string())),
            None => return Err(EnvelopeError::UnknownVersion("missing".into())),
        }
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Invalid(e.to_string()))
    }

    /// Serialises the envelope.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The AMQP `message_id` of this envelope on its way to `stage`.
    pub fn message_id(&self, stage: Stage) -> String {
        format!("{}/{}/{}", self.task_id, stage.as_str(), self.hop)
    }

    /// The timing entry of `stage`, if the stage has started.
    pub fn timing(&self, stage: Stage) -> Option<&StageTiming> {
        self.timings.iter().rev().find(|t| t.stage == stage)
    }
}

/// Why bytes are not a usable envelope. Each maps to a dead-letter reason code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("unknown envelope version {0} (this build reads version 1)")]
    UnknownVersion(String),
    #[error("envelope does not match version 1: {0}")]
    Invalid(String),
}

impl EnvelopeError {
    /// The snake_case reason code used in dead-letter headers and metrics.
    pub fn reason_code(&self) -> crate::Reason {
        match self {
            EnvelopeError::NotJson(_) => crate::Reason::InvalidJson,
            EnvelopeError::UnknownVersion(_) => crate::Reason::UnknownVersion,
            EnvelopeError::Invalid(_) => crate::Reason::InvalidEnvelope,
        }
    }
}

/// Where a request came from: the name of the webhook source (or `api`,
/// `operator`) that admitted it.
///
/// An open set, not an enum: a source added to ingest (GitLab, for example)
/// needs no change here, and a worker of an older build carries a name it does
/// not know through unchanged (docs/design.md §3, envelope versioning).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceKind(Cow<'static, str>);

impl SourceKind {
    pub const GITHUB: SourceKind = SourceKind::named("github");
    pub const LINEAR: SourceKind = SourceKind::named("linear");
    pub const SLACK: SourceKind = SourceKind::named("slack");
    /// The REST API (`POST /v1/tasks`).
    pub const API: SourceKind = SourceKind::named("api");
    /// Tasks an operator started from the command line.
    pub const OPERATOR: SourceKind = SourceKind::named("operator");

    /// A source by its lowercase name (a registered webhook source's name).
    pub const fn named(name: &'static str) -> Self {
        SourceKind(Cow::Borrowed(name))
    }

    /// The lowercase name used in JSON, keys and metric labels.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked, through which delivery, and where the answer goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    /// The provider's delivery identity (dedup key at ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub reply_to: ReplyTarget,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The place an answer is posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplyTarget {
    /// An issue or pull request comment thread (`owner/name`, number).
    Github {
        repo: String,
        number: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment_id: Option<u64>,
    },
    /// A Linear issue, threaded under `comment_id` when the request was a comment.
    Linear {
        issue_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment_id: Option<String>,
    },
    /// A Slack thread (`thread_ts` is the parent message's ts).
    Slack { channel: String, thread_ts: String },
    /// A callback URL for API tasks (signed by the dispatcher).
    Callback { url: String },
    /// Nobody to answer (the result is only readable through the API).
    None,
    /// A reply channel this crate has no variant for (GitLab, or one added
    /// after this build): its kind and its own fields, kept verbatim so an
    /// older worker forwards it unchanged and the dispatcher's channel of that
    /// kind reads it (docs/design.md §3, envelope versioning).
    #[serde(untagged)]
    Channel(ChannelTarget),
}

/// The kinds [`ReplyTarget`] has a variant for; a [`ChannelTarget`] never
/// takes one of these names.
const BUILT_IN_TARGETS: [&str; 5] = ["github", "linear", "slack", "callback", "none"];

impl ReplyTarget {
    /// The channel's name (`github`, `slack`, …, or a [`ChannelTarget`]'s
    /// kind): the dispatcher picks the reply channel registered under it.
    pub fn kind(&self) -> &str {
        match self {
            ReplyTarget::Github { .. } => "github",
            ReplyTarget::Linear { .. } => "linear",
            ReplyTarget::Slack { .. } => "slack",
            ReplyTarget::Callback { .. } => "callback",
            ReplyTarget::None => "none",
            ReplyTarget::Channel(target) => &target.kind,
        }
    }
}

/// The reply target of a channel outside the built-in variants: `kind` names
/// the channel and `fields` are its own, typed by the channel's module through
/// [`ChannelTarget::new`] and [`ChannelTarget::decode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawChannelTarget")]
pub struct ChannelTarget {
    kind: String,
    #[serde(flatten)]
    fields: Extra,
}

#[derive(Deserialize)]
struct RawChannelTarget {
    kind: String,
    #[serde(flatten)]
    fields: Extra,
}

impl TryFrom<RawChannelTarget> for ChannelTarget {
    type Error = String;
    /// A built-in kind whose fields did not fit its variant is an error, not
    /// an extension target.
    fn try_from(raw: RawChannelTarget) -> Result<Self, Self::Error> {
        if BUILT_IN_TARGETS.contains(&raw.kind.as_str()) {
            return Err(format!("invalid `{}` reply target", raw.kind));
        }
        Ok(ChannelTarget {
            kind: raw.kind,
            fields: raw.fields,
        })
    }
}

impl ChannelTarget {
    /// The target of channel `kind` with `fields` (a struct of the channel's
    /// module). Fails when `fields` is not a JSON object, has its own `kind`,
    /// or `kind` is a built-in variant's name.
    pub fn new(kind: &str, fields: &impl Serialize) -> Result<Self, EnvelopeError> {
        let invalid = |why: String| EnvelopeError::Invalid(format!("reply target `{kind}`: {why}"));
        let Value::Object(fields) =
            serde_json::to_value(fields).map_err(|e| invalid(e.to_string()))?
        else {
            return Err(invalid("fields are not an object".into()));
        };
        if fields.contains_key("kind") {
            return Err(invalid("fields may not hold `kind`".into()));
        }
        ChannelTarget::try_from(RawChannelTarget {
            kind: kind.to_owned(),
            fields,
        })
        .map_err(invalid)
    }

    /// The channel's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The fields read as the channel's own type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        serde_json::from_value(Value::Object(self.fields.clone()))
            .map_err(|e| EnvelopeError::Invalid(format!("reply target `{}`: {e}", self.kind)))
    }
}

/// What was asked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryRef>,
    #[serde(default)]
    pub hints: Hints,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A repository and the ref to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRef {
    pub url: String,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// What the request points at explicitly.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Hints {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol_kind: Option<String>,
}

/// A conversation (Slack thread, Linear issue, GitHub issue/PR) and the task that
/// came before in it, so the agent can resume its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_task_id: Option<TaskId>,
}

/// The context worker's contribution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskContext {
    #[serde(default)]
    pub items: Vec<ContextItem>,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Counts of removed secrets by kind; never the values.
    #[serde(default)]
    pub redactions: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One ranked file with the reasons it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextItem {
    pub path: String,
    pub score: f64,
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// What kind of answer a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultKind {
    Code,
    Diff,
    AgentRun,
    ContextOnly,
    Failure,
}

/// The answer a worker produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub kind: ResultKind,
    pub produced_by: Stage,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_requests: Vec<String>,
    /// For failures: the snake_case reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TaskResult {
    /// A failure answer with a reason code and words a person understands.
    pub fn failure(produced_by: Stage, reason: &str, summary: impl Into<String>) -> Self {
        TaskResult {
            kind: ResultKind::Failure,
            produced_by,
            summary: summary.into(),
            text: None,
            language: None,
            web_url: None,
            pull_requests: Vec::new(),
            reason: Some(reason.to_owned()),
            extra: Extra::new(),
        }
    }
}

/// The kind of message the dispatcher posts for this envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Ack,
    Progress,
    Final,
    Failure,
}

impl ReplyKind {
    /// The lowercase name used in keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::Ack => "ack",
            ReplyKind::Progress => "progress",
            ReplyKind::Final => "final",
            ReplyKind::Failure => "failure",
        }
    }
}

/// When a stage handled the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: Stage,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

/// Tokens and calls spent on the task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CostLedger {
    #[serde(default)]
    pub llm_prompt_tokens: u64,
    #[serde(default)]
    pub llm_completion_tokens: u64,
    #[serde(default)]
    pub llm_calls: u32,
    #[serde(default)]
    pub agent_calls: u32,
    /// Other API calls by provider (`github`, `slack`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_calls: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskEnvelope {
        let mut env = TaskEnvelope::new(
            Source {
                kind: SourceKind::GITHUB,
                delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
                requested_by: Some("octocat".into()),
                reply_to: ReplyTarget::Github {
                    repo: "octo/hello".into(),
                    number: 7,
                    comment_id: Some(11),
                },
                extra: Extra::new(),
            },
            Request {
                text: "add a parse_duration function".into(),
                repository: Some(RepositoryRef {
                    url: "https://github.com/octo/hello.git".into(),
                    reference: Some("main".into()),
                }),
                ..Request::default()
            },
        );
        env.strategy = Strategy::Agent;
        env.priority = Priority::Interactive;
        env
    }

    #[test]
    fn envelope_round_trips() {
        let env = sample();
        let back = TaskEnvelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.task_id.0.get_version_num(), 7);
    }

    #[test]
    fn an_agent_run_reference_round_trips_and_is_omitted_when_absent() {
        let mut env = sample();
        assert!(
            !String::from_utf8(env.to_json())
                .unwrap()
                .contains("agent_run")
        );
        env.agent_run = Some(AgentRunRef {
            run_id: 42,
            created_at_ms: 1_700_000_000_000,
            polls: 3,
            web_url: Some("https://codegen.com/agent/trace/42".into()),
        });
        let back = TaskEnvelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back.agent_run, env.agent_run);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["added_by_v1_1"] = serde_json::json!({"x": [1, 2]});
        value["source"]["installation_id"] = serde_json::json!(42);
        value["request"]["attachments"] = serde_json::json!(["a.png"]);
        let bytes = serde_json::to_vec(&value).unwrap();
        let env = TaskEnvelope::from_json(&bytes).unwrap();
        let again: Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(again["added_by_v1_1"], serde_json::json!({"x": [1, 2]}));
        assert_eq!(again["source"]["installation_id"], 42);
        assert_eq!(again["request"]["attachments"][0], "a.png");
    }

    #[test]
    fn an_unknown_source_and_reply_target_survive_a_round_trip() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["source"]["kind"] = serde_json::json!("mastodon");
        value["source"]["reply_to"] =
            serde_json::json!({"kind": "mastodon", "status_id": "1099", "visibility": "direct"});
        let env = TaskEnvelope::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(env.source.kind.as_str(), "mastodon");
        assert_eq!(env.source.reply_to.kind(), "mastodon");
        let again: Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(again["source"], value["source"]);
    }

    #[test]
    fn a_channel_target_is_typed_by_its_module_and_never_shadows_a_built_in() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Note {
            project_id: u64,
            iid: u64,
        }
        let target = ChannelTarget::new(
            "gitlab",
            &Note {
                project_id: 5,
                iid: 9,
            },
        )
        .unwrap();
        let reply_to = ReplyTarget::Channel(target);
        let json = serde_json::to_value(&reply_to).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "gitlab", "project_id": 5, "iid": 9})
        );
        let back: ReplyTarget = serde_json::from_value(json).unwrap();
        let ReplyTarget::Channel(target) = &back else {
            panic!("not a channel target: {back:?}");
        };
        assert_eq!(
            target.decode::<Note>().unwrap(),
            Note {
                project_id: 5,
                iid: 9
            }
        );
        // A built-in kind with broken fields is an error, not an extension.
        let broken = serde_json::json!({"kind": "github", "repo": "o/r"});
        assert!(serde_json::from_value::<ReplyTarget>(broken).is_err());
        assert!(
            ChannelTarget::new(
                "slack",
                &Note {
                    project_id: 1,
                    iid: 1
                }
            )
            .is_err()
        );
        assert!(ChannelTarget::new("gitlab", &7).is_err());
    }

    #[test]
    fn unknown_versions_and_non_json_are_refused_with_their_reason() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["v"] = serde_json::json!(2);
        let err = TaskEnvelope::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(err.reason_code(), "unknown_version");
        let err = TaskEnvelope::from_json(b"\x00not json").unwrap_err();
        assert_eq!(err.reason_code(), "invalid_json");
        let err = TaskEnvelope::from_json(br#"{"v":1,"task_id":"nope"}"#).unwrap_err();
        assert_eq!(err.reason_code(), "invalid_envelope");
        let err = TaskEnvelope::from_json(br#"{"task_id":"nope"}"#).unwrap_err();
        assert_eq!(err.reason_code(), "unknown_version");
    }
}
