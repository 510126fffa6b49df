//! `POST /webhooks/{name}` for every registered [`WebhookSource`]: raw body
//! kept, signature verified before anything parses it, then classified,
//! deduplicated and published (see [`crate::intake`]). One handler serves
//! every source, so every source gets the same replay check, requester
//! limit, repository policy and answers.

use crate::AppState;
use crate::admission::{self, OverLimit};
use crate::error::IngestError;
use crate::failed;
use crate::intake::{self, Admission, Draft};
use crate::replay;
use crate::sources::{Classified, Inbound, WebhookSource};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use contexten_config::SecretSource;
use contexten_envelope::{ReplyKind, SourceKind, now_ms};
use contexten_telemetry::metric;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// The raw body, with the limit's rejection turned into our 413.
pub(crate) fn body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, IngestError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge(limit)
        } else {
            IngestError::Malformed(rejection.body_text())
        }
    })
}

/// The media type of the request (`application/json` without parameters).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), IngestError> {
    match media_type(headers).as_str() {
        "application/json" => Ok(()),
        _ => Err(IngestError::UnsupportedMediaType("application/json")),
    }
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, IngestError> {
    serde_json::from_slice(bytes).map_err(|e| IngestError::Malformed(e.to_string()))
}

/// Counts and times an answer, whatever it is.
pub(crate) fn answered(
    provider: &'static str,
    started: Instant,
    result: Result<Response, IngestError>,
) -> Response {
    let outcome = match &result {
        Ok(r) => match r.status() {
            StatusCode::ACCEPTED if r.extensions().get::<Outcome>().is_none() => "accepted",
            _ => match r.extensions().get::<Outcome>() {
                Some(Outcome(o)) => *o,
                None => "ok",
            },
        },
        Err(IngestError::BrokerDown { .. } | IngestError::StoreDown { .. }) => "unavailable",
        Err(e) if e.status().is_client_error() => {
            metric::ingest_rejected(provider, e.code());
            tracing::info!(provider, reason = e.code(), error = %e, "request refused");
            "rejected"
        }
        Err(_) => "error",
    };
    metric::ingest_answered(provider, outcome, started.elapsed());
    result.into_response()
}

/// The outcome label of a 2xx answer that is not a new task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome(pub &'static str);

pub(crate) fn labelled(status: StatusCode, body: Value, outcome: &'static str) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Outcome(outcome));
    response
}

pub(crate) fn ignored(provider: &str, reason: &'static str) -> Response {
    metric::ingest_ignored(provider, reason);
    tracing::debug!(provider, reason, "event ignored");
    labelled(
        StatusCode::OK,
        json!({"status": "ignored", "reason": reason}),
        "ignored",
    )
}

/// Slack and Linear document a plain 200 as their success answer: a new task
/// is answered 200 (same body) there instead of 202.
pub(crate) fn as_200(mut response: Response) -> Response {
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
        response.extensions_mut().insert(Outcome("accepted"));
    }
    response
}

/// Routes, admits and answers a draft.
pub(crate) async fn submit(
    state: &AppState,
    mut draft: Draft,
    received_at_ms: u64,
) -> Result<Response, IngestError> {
    match admission::requester_limit(state, &draft).await {
        Ok(()) => {}
        Err(OverLimit::TooMany(retry_after)) => {
            return Err(IngestError::RateLimited { retry_after });
        }
        Err(OverLimit::Quiet) => return Ok(ignored(draft.kind.as_str(), "rate_limited")),
        Err(OverLimit::Answer(refusal)) => draft.refuse(refusal),
    }
    admission::adopt_github_named_repository(state, &mut draft);
    if draft.refusal.is_none()
        && let Some(refusal) = admission::repository_refusal(state, &draft)
    {
        if draft.kind == SourceKind::API {
            return Err(IngestError::RepositoryNotAllowed(refusal.message));
        }
        // Answered in the requester's thread; the repository is never fetched.
        draft.refuse(refusal);
    }
    let env = draft.into_envelope(&state.cfg.routing);
    // The request's server span (crate::server::trace_request) names the task from here on.
    let span = tracing::Span::current();
    span.record("task_id", tracing::field::display(&env.task_id));
    span.record("correlation_id", env.correlation_id.as_str());
    match intake::admit(state, env, received_at_ms).await? {
        Admission::Created(env) => {
            // A refused request is answered in its thread: say so here too.
            let refused = env
                .result
                .as_ref()
                .and_then(|r| r.reason.clone())
                .filter(|_| env.reply == Some(ReplyKind::Failure));
            let mut response = (
                StatusCode::ACCEPTED,
                Json(json!({
                    "status": if refused.is_some() { "refused" } else { "accepted" },
                    "reason": refused,
                    "task_id": env.task_id,
                    "status_url": format!("/v1/tasks/{}", env.task_id),
                    "strategy": env.strategy,
                    "strategy_rule": env.strategy_rule,
                    "priority": env.priority,
                })),
            )
                .into_response();
            if refused.is_some() {
                response.extensions_mut().insert(Outcome("refused"));
            }
            Ok(response)
        }
        Admission::Duplicate { task_id } => Ok(labelled(
            StatusCode::OK,
            json!({"status": "duplicate", "task_id": task_id}),
            "duplicate",
        )),
    }
}

/// A `POST /webhooks/{name}` route for each source.
pub fn routes(sources: &[Arc<dyn WebhookSource>]) -> Router<Arc<AppState>> {
    sources.iter().fold(Router::new(), |router, source| {
        let path = format!("/webhooks/{}", source.name());
        let source = source.clone();
        let handler = move |State(state): State<Arc<AppState>>,
                            headers: HeaderMap,
                            raw: Result<Bytes, BytesRejection>| {
            let source = source.clone();
            async move { receive(source.as_ref(), &state, &headers, raw).await }
        };
        router.route(&path, post(handler))
    })
}

/// One webhook request to `source`, answered and counted.
pub async fn receive(
    source: &dyn WebhookSource,
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = receive_inner(source, state, headers, raw).await;
    // A delivery the platform does not retry by itself, refused while the
    // broker or the records store is unavailable, is recorded for redelivery.
    if matches!(
        result,
        Err(IngestError::BrokerDown { .. } | IngestError::StoreDown { .. })
    ) && let Some((delivery, event)) = source.unretried_delivery(headers)
    {
        failed::record(state, delivery, event).await;
    }
    answered(source.name(), started, result)
}

async fn receive_inner(
    source: &dyn WebhookSource,
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    let received = now_ms();
    let secrets = source
        .secret(&state.cfg.providers)
        .map(SecretSource::values)
        .ok_or(IngestError::Disabled {
            provider: source.name(),
            var: source.secret_var(),
        })?;
    let raw = body(raw, state.cfg.limits.max_body_bytes)?;
    source.check_media(headers)?;
    let inbound = Inbound {
        headers,
        body: &raw,
        received_ms: received,
    };
    source.verify(&secrets, &inbound, &state.cfg.limits)?;
    let mut draft = match source.classify(&inbound, &state.cfg)? {
        Classified::Answer { body, outcome } => {
            return Ok(labelled(StatusCode::OK, body, outcome));
        }
        Classified::Ignored(reason) => return Ok(source.ignored(&inbound, reason)),
        Classified::Task(draft) => *draft,
        Classified::TaskIfConversationKnown(draft) => {
            let Some(conversation) = draft.conversation.as_deref() else {
                return Ok(source.ignored(&inbound, "not_in_thread"));
            };
            match state.conversation_known(conversation).await {
                Ok(true) => *draft,
                Ok(false) => return Ok(source.ignored(&inbound, "thread_not_ours")),
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether the thread is ours");
                    metric::redis_degraded("slack_thread");
                    return Ok(source.ignored(&inbound, "thread_unknown_redis_down"));
                }
            }
        }
    };
    if let Some(delivery) = source.delivery_id(&inbound) {
        draft.delivery_id = Some(delivery);
    }
    if source.dedups_body() {
        let delivery = draft.delivery_id.clone().unwrap_or_default();
        if replay::is_replayed_body(state, source.name(), &delivery, &raw).await? {
            return Ok(source.ignored(&inbound, "replayed_body"));
        }
    }
    submit(state, draft, received)
        .await
        .map(|response| source.answer(&inbound, response))
}
