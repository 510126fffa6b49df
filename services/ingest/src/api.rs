//! The `/v1` task API: `POST /v1/tasks` (scope `submit`), `GET /v1/tasks/{id}`
//! (scope `read`; state, timings and, once final, the answer; `?wait=SECONDS`
//! long-polls for it), and its OpenAPI document at `/v1/openapi.json`, which
//! also describes the signed callback ([`callback`]).

mod answer;
mod callback;

pub use answer::{AnswerKind, AnswerLinks, Cost, TaskAnswer, TaskState};
use callback::CallbackDoc;
pub use callback::{CallbackData, CallbackEvent, CallbackPayload, CallbackReply, CallbackResult};

use crate::AppState;
use crate::error::{ErrorBody, IngestError};
use crate::intake::{Draft, Requester};
use crate::tokens::{Principal, Scope};
use crate::webhooks::{self, answered, parse_json, require_json};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use contexten_envelope::{
    Hints, Priority, ReplyTarget, RepositoryRef, SourceKind, Strategy, TaskId, now_ms,
};
use contexten_trust::outbound::Purpose;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use utoipa::{OpenApi, ToSchema};

/// The longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// How to answer the task (a hint; the explicit choice wins over the rules).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyHint {
    /// Generate only (no repository context). `generate` is accepted too.
    #[serde(alias = "generate")]
    Simple,
    /// Repository context, then generation.
    Context,
    /// Repository context, then the Codegen agent (pull requests, multi-file work).
    Agent,
}

/// Queue priority (`operator` needs the `admin` scope).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriorityHint {
    Batch,
    Normal,
    Interactive,
    Operator,
}

/// Files and symbols the request is about.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HintsInput {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub symbols: Vec<String>,
}

/// `POST /v1/tasks` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// What to do, in words (1–65536 characters).
    pub text: String,
    /// The repository to read (`https://…`, `ssh://…`, `git@…`).
    #[serde(default)]
    pub repository_url: Option<String>,
    /// Branch, tag or commit of `repository_url`.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    #[serde(default)]
    pub strategy: Option<StrategyHint>,
    #[serde(default)]
    pub priority: Option<PriorityHint>,
    /// Where the answer is POSTed (signed by the dispatcher).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// A follow-up in the same conversation carries the previous task id.
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub hints: Option<HintsInput>,
}

/// Answer to a created (202) or repeated (200) request.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskAccepted {
    /// `accepted` or `duplicate` (same `Idempotency-Key`: nothing new was created).
    pub status: &'static str,
    pub task_id: Option<String>,
    /// `GET` this for state and timings.
    pub status_url: Option<String>,
    pub strategy: Option<String>,
    pub strategy_rule: Option<String>,
    pub priority: Option<String>,
}

/// One stage's timing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StageTimingView {
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

/// A task's state as the workers record it and, once final, its answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    /// The final answer: set when `state` is `done` or `failed`.
    pub answer: Option<TaskAnswer>,
    /// The runtime's own words, for operators: `queued:<stage>[,<stage>]`,
    /// `retrying`, `done`, `dead_lettered:<code>` (at `dispatch`: the answer
    /// could not be delivered to the callback; it is still in `answer`).
    pub record_state: Option<String>,
    /// The last stage that recorded progress.
    pub stage: Option<String>,
    pub source: Option<String>,
    pub strategy: Option<String>,
    pub strategy_rule: Option<String>,
    pub priority: Option<String>,
    pub conversation: Option<String>,
    pub created_at_ms: Option<u64>,
    pub updated_at_ms: Option<u64>,
    /// Per-stage timings (`ingest`, `context`, `generate`, …).
    pub timings: BTreeMap<String, StageTimingView>,
    /// Messages completed, as `<stage>:<hop>`.
    pub completed: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Contexten task API", version = "1"),
    paths(create_task, get_task),
    components(schemas(
        CreateTask, HintsInput, StrategyHint, PriorityHint, TaskAccepted, TaskStatus, TaskState,
        TaskAnswer, AnswerKind, AnswerLinks, Cost, StageTimingView, ErrorBody, CallbackPayload,
        CallbackEvent, CallbackReply, CallbackData, CallbackResult
    )),
    modifiers(&BearerAuth, &CallbackDoc)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, IngestError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(IngestError::Unauthorized("missing bearer token"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(IngestError::Unauthorized(
            "authorization must be: Bearer <token>",
        ))?;
    let principal = state
        .tokens
        .authenticate(token)
        .ok_or(IngestError::Unauthorized("unknown or revoked token"))?;
    if !principal.allows(scope) {
        return Err(IngestError::Forbidden(scope.as_str()));
    }
    Ok(principal)
}

/// Create a task.
#[utoipa::path(
    post, path = "/v1/tasks", request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe submission: the same key returns the first task")),
    responses(
        (status = 202, description = "task queued", body = TaskAccepted),
        (status = 200, description = "same Idempotency-Key seen before; nothing new created", body = TaskAccepted),
        (status = 400, description = "malformed JSON or invalid field; `outbound_refused`: repository_url or callback_url points where the fleet does not connect (loopback, private, link-local, plain http, credentials in the URL)", body = ErrorBody),
        (status = 401, description = "missing or unknown token", body = ErrorBody),
        (status = 403, description = "token lacks the submit scope; `repository_not_allowed`: the policy does not let this token read repository_url", body = ErrorBody),
        (status = 429, description = "too many requests from this token; see Retry-After", body = ErrorBody),
        (status = 413, description = "body over INGEST_MAX_BODY_BYTES", body = ErrorBody),
        (status = 415, description = "content type is not application/json", body = ErrorBody),
        (status = 503, description = "queue unavailable; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = create_inner(&state, &headers, raw).await;
    answered("api", started, result)
}

async fn create_inner(
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    let received = now_ms();
    let raw = webhooks::body(raw, state.cfg.limits.max_body_bytes)?;
    let principal = authorize(state, headers, Scope::Submit)?;
    require_json(headers)?;
    let value = parse_json(&raw)?;
    let request: CreateTask =
        serde_json::from_value(value).map_err(|e| IngestError::Invalid(e.to_string()))?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or(IngestError::Invalid(
                    "Idempotency-Key must be 1-200 visible ASCII characters".into(),
                ))?;
            Some(format!("{}:{key}", principal.name))
        }
    };
    let draft = draft(state, request, &principal, idempotency)?;
    let response = webhooks::submit(state, draft, received).await?;
    Ok(response)
}

fn draft(
    state: &AppState,
    request: CreateTask,
    principal: &Principal,
    idempotency: Option<String>,
) -> Result<Draft, IngestError> {
    let text = request.text.trim();
    if text.is_empty() || text.len() > 65_536 {
        return Err(IngestError::Invalid(
            "text must hold 1 to 65536 characters".into(),
        ));
    }
    let reply_to = match request.callback_url {
        Some(url) => {
            let parsed = url::Url::parse(&url)
                .map_err(|_| IngestError::Invalid("callback_url is not a URL".into()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(IngestError::Invalid(
                    "callback_url must be http or https".into(),
                ));
            }
            // The dispatcher judges the resolved address again when it posts.
            state
                .cfg
                .outbound
                .precheck(&url, Purpose::Callback)
                .map_err(|refusal| IngestError::OutboundRefused(refusal.message))?;
            ReplyTarget::Callback { url }
        }
        None => ReplyTarget::None,
    };
    let mut draft = Draft::new(SourceKind::API, reply_to, text);
    if let Some(url) = request.repository_url {
        check_repository(&url, state.cfg.allow_local_repos)?;
        if !url.starts_with("file://") {
            // The workers judge the resolved address again when they fetch.
            state
                .cfg
                .outbound
                .precheck(&url, Purpose::Git)
                .map_err(|refusal| IngestError::OutboundRefused(refusal.message))?;
        }
        draft.repository = Some(RepositoryRef {
            url,
            reference: request.reference,
        });
        draft.repository_named = true;
    }
    draft.requester = Some(Requester::Api {
        token: principal.name.clone(),
        repositories: principal.repositories.clone(),
    });
    draft.explicit = request.strategy.map(|s| {
        let strategy = match s {
            StrategyHint::Simple => Strategy::Simple,
            StrategyHint::Context => Strategy::Context,
            StrategyHint::Agent => Strategy::Agent,
        };
        (strategy, "api:strategy".to_owned())
    });
    draft.priority = match request.priority {
        None => None,
        Some(PriorityHint::Operator) if !principal.allows(Scope::Admin) => {
            return Err(IngestError::Forbidden("admin"));
        }
        Some(p) => Some(match p {
            PriorityHint::Batch => Priority::Batch,
            PriorityHint::Normal => Priority::Normal,
            PriorityHint::Interactive => Priority::Interactive,
            PriorityHint::Operator => Priority::Operator,
        }),
    };
    draft.requested_by = Some(principal.name.clone());
    draft.delivery_id = idempotency;
    draft.conversation = request
        .conversation_id
        .filter(|c| !c.trim().is_empty())
        .map(|c| format!("api:{}:{}", principal.name, c.trim()));
    if let Some(hints) = request.hints {
        draft.hints = Hints {
            paths: hints.paths,
            symbols: hints.symbols,
            ..Hints::default()
        };
    }
    Ok(draft)
}

fn check_repository(url: &str, allow_local: bool) -> Result<(), IngestError> {
    if url.starts_with("git@") && url.contains(':') {
        return Ok(());
    }
    let parsed = url::Url::parse(url)
        .map_err(|_| IngestError::Invalid("repository_url is not a URL".into()))?;
    match parsed.scheme() {
        "https" | "http" | "ssh" | "git" => Ok(()),
        "file" if allow_local => Ok(()),
        "file" => Err(IngestError::Invalid(
            "file:// repositories are disabled (CONTEXTEN_ALLOW_LOCAL_REPOS)".into(),
        )),
        _ => Err(IngestError::Invalid(
            "repository_url must be https, ssh or git".into(),
        )),
    }
}

/// The longest `?wait` (seconds): within the idle timeout of common proxies
/// and load balancers, and within the pod's shutdown grace (a waiting request
/// holds graceful shutdown until it answers).
pub const MAX_WAIT_SECS: u64 = 30;
/// How often a waiting request reads the status record again: one small
/// `HGETALL` per waiter on the shared connection, nothing held blocked.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// Waiting requests per replica at most; past it a request is answered at once
/// with the state as it is (the client asks again).
const MAX_WAITERS: usize = 1024;
/// How long a wait that sees a task given up on (`dead_lettered:<code>`) keeps
/// reading for the failure answer, already on its way to dispatch, so the
/// answer read is the stored one.
const FAILURE_ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Waiting requests of this process. A static rather than a field of
/// [`AppState`]: it bounds the process, whatever states it serves.
static WAITERS: Semaphore = Semaphore::const_new(MAX_WAITERS);

/// A task's state, per-stage timings and, once final, its answer.
#[utoipa::path(
    get, path = "/v1/tasks/{id}",
    params(
        ("id" = String, Path, description = "task id (UUIDv7)"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 30, description = "long-poll: answer as soon as the task is final (`done` or `failed`), or after this many seconds (0-30) with the state as it is"),
    ),
    responses(
        (status = 200, description = "the task's state and, once final, its answer", body = TaskStatus),
        (status = 400, description = "not a task id, or `wait` is not a whole number of seconds from 0 to 30", body = ErrorBody),
        (status = 401, description = "missing or unknown token", body = ErrorBody),
        (status = 403, description = "token lacks the read scope", body = ErrorBody),
        (status = 404, description = "no such task, or a task another token created (only its creator and admin tokens may read it)", body = ErrorBody),
        (status = 503, description = "status store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    // A long poll's duration is the wait, not ingest's latency: counted apart.
    let label = match wait_of(query.as_deref()) {
        Ok(wait) if wait > Duration::ZERO => "api_wait",
        _ => "api",
    };
    let result = get_inner(&state, &headers, &id, query.as_deref()).await;
    answered(label, started, result)
}

async fn get_inner(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    query: Option<&str>,
) -> Result<Response, IngestError> {
    let principal = authorize(state, headers, Scope::Read)?;
    let task: TaskId = id
        .parse()
        .map_err(|_| IngestError::Invalid(format!("{id:?} is not a task id")))?;
    let wait = wait_of(query)?;
    let mut fields = read_record(state, task).await?;
    // Another token's task is answered exactly like a missing one, so a token
    // cannot even learn which task ids exist.
    if fields.is_empty() || !may_read(&principal, &fields) {
        return Err(IngestError::NotFound(format!("no task {task}")));
    }
    let mut reading = answer::read(&fields);
    if wait > Duration::ZERO && !settled(&reading) {
        match WAITERS.try_acquire() {
            Ok(_permit) => (fields, reading) = wait_until_final(state, task, wait).await?,
            Err(_) => tracing::info!(%task, "too many waiting requests; answering at once"),
        }
    }
    Ok(Json(status_view(task, fields, reading)).into_response())
}

/// Reads the status record every [`WAIT_POLL`] until the task is final with
/// its stored answer, or `wait` is over; returns the last reading.
async fn wait_until_final(
    state: &AppState,
    task: TaskId,
    wait: Duration,
) -> Result<(HashMap<String, String>, answer::Reading), IngestError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut given_up_at = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(WAIT_POLL.min(left)).await;
        let fields = read_record(state, task).await?;
        let reading = answer::read(&fields);
        if settled(&reading) || tokio::time::Instant::now() >= deadline {
            return Ok((fields, reading));
        }
        if reading.pending_failure {
            // The failure answer follows within moments; not forever.
            let since = *given_up_at.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= FAILURE_ANSWER_GRACE {
                return Ok((fields, reading));
            }
        }
    }
}

/// Whether a wait can end: the task is final with its stored answer.
fn settled(reading: &answer::Reading) -> bool {
    reading.state.is_final() && !reading.pending_failure
}

/// `?wait=SECONDS` (absent: no wait). Other parameters are refused, so a typo
/// does not silently mean "no wait".
fn wait_of(query: Option<&str>) -> Result<Duration, IngestError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| IngestError::Invalid("the query string is not form-encoded".into()))?;
    let mut wait = Duration::ZERO;
    for (name, value) in pairs {
        if name != "wait" {
            return Err(IngestError::Invalid(format!(
                "unknown query parameter {name:?} (only wait=SECONDS)"
            )));
        }
        let seconds = value
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                IngestError::Invalid(format!(
                    "wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}, not {value:?}"
                ))
            })?;
        wait = Duration::from_secs(seconds);
    }
    Ok(wait)
}

/// A task's status record (empty when there is none).
async fn read_record(
    state: &AppState,
    task: TaskId,
) -> Result<HashMap<String, String>, IngestError> {
    let key = state.names.status_key(task);
    state
        .store
        .run::<(HashMap<String, String>,)>(|| {
            let mut p = redis::pipe();
            p.hgetall(&key);
            p
        })
        .await
        .map(|(f,)| f)
        .map_err(|error| {
            tracing::warn!(%error, "status record unreadable");
            IngestError::StoreDown {
                retry_after: state.retry_after,
            }
        })
}

/// A task is readable by the token that created it, or by an `admin` token.
fn may_read(principal: &Principal, fields: &HashMap<String, String>) -> bool {
    if principal.allows(Scope::Admin) {
        return true;
    }
    let owner = fields
        .get(crate::intake::SUMMARY_FIELD)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|summary| summary.get("api_token")?.as_str().map(str::to_owned));
    owner.as_deref() == Some(principal.name.as_str())
}

fn status_view(
    task: TaskId,
    mut fields: HashMap<String, String>,
    reading: answer::Reading,
) -> TaskStatus {
    let mut timings = BTreeMap::new();
    let mut completed = Vec::new();
    for (field, value) in &fields {
        if let Some(stage) = field.strip_prefix("timing:") {
            if let Ok(t) = serde_json::from_str::<StageTimingView>(value) {
                timings.insert(stage.to_owned(), t);
            }
        } else if let Some(mark) = field.strip_prefix("done:") {
            completed.push(mark.to_owned());
        }
    }
    completed.sort();
    let number = |v: Option<String>| v.and_then(|s| s.parse().ok());
    let summary: serde_json::Value = fields
        .get(crate::intake::SUMMARY_FIELD)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let text = |key: &str| summary.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    TaskStatus {
        task_id: task.to_string(),
        state: reading.state,
        answer: reading.answer.filter(|_| reading.state.is_final()),
        record_state: fields.remove("state"),
        stage: fields.remove("stage"),
        source: text("source"),
        strategy: text("strategy"),
        strategy_rule: text("strategy_rule"),
        priority: text("priority"),
        conversation: text("conversation"),
        created_at_ms: number(fields.remove("created_at_ms")),
        updated_at_ms: number(fields.remove("updated_at_ms")),
        timings,
        completed,
    }
}
