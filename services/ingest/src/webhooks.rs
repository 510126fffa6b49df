//! `POST /webhooks/github`, `/webhooks/linear`, `/webhooks/slack`: raw body kept,
//! signature verified before anything parses it, then classified, deduplicated
//! and published (see [`crate::intake`]).

use crate::AppState;
use crate::admission::{self, OverLimit};
use crate::error::IngestError;
use crate::failed;
use crate::intake::{self, Admission, Draft};
use crate::providers::{self, Classified};
use crate::replay;
use crate::verify;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
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

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

fn labelled(status: StatusCode, body: Value, outcome: &'static str) -> Response {
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
fn as_200(mut response: Response) -> Response {
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

/// `POST /webhooks/github`.
pub async fn github(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = github_inner(&state, &headers, raw).await;
    // GitHub does not retry a failed delivery by itself: one refused while the
    // broker or the records store is unavailable is recorded for redelivery.
    if matches!(
        result,
        Err(IngestError::BrokerDown { .. } | IngestError::StoreDown { .. })
    ) && let (Some(delivery), Some(event)) = (
        header(&headers, "x-github-delivery"),
        header(&headers, "x-github-event"),
    ) {
        failed::record(&state, delivery, event).await;
    }
    answered("github", started, result)
}

async fn github_inner(
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    let received = now_ms();
    let secrets = state
        .cfg
        .providers
        .github
        .as_ref()
        .map(SecretSource::values)
        .ok_or(IngestError::Disabled {
            provider: "github",
            var: "GITHUB_WEBHOOK_SECRET",
        })?;
    let raw = body(raw, state.cfg.limits.max_body_bytes)?;
    require_json(headers)?;
    verify::github(&secrets, header(headers, "x-hub-signature-256"), &raw)?;
    let event =
        header(headers, "x-github-event").ok_or(IngestError::MissingHeader("X-GitHub-Event"))?;
    let delivery = header(headers, "x-github-delivery")
        .ok_or(IngestError::MissingHeader("X-GitHub-Delivery"))?;
    let payload = parse_json(&raw)?;
    if let Err(reason) = state.cfg.requesters.github(&payload) {
        return Ok(ignored("github", reason));
    }
    let classified = providers::github::classify(
        event,
        delivery,
        &payload,
        &state.cfg.triggers,
        &state.cfg.routing,
    );
    match classified {
        Classified::Ping => Ok(labelled(
            StatusCode::OK,
            json!({"status": "pong", "zen": payload.get("zen")}),
            "ping",
        )),
        Classified::Task(draft) => {
            let max_age_ms = state.dedup_ttl.as_millis() as u64;
            if replay::github_event_time_ms(&payload)
                .is_some_and(|at| received.saturating_sub(at) > max_age_ms)
            {
                return Ok(ignored("github", "stale_event"));
            }
            if replay::is_replayed_body(state, "github", delivery, &raw).await? {
                return Ok(ignored("github", "replayed_body"));
            }
            submit(state, *draft, received).await
        }
        Classified::Ignored(reason) => Ok(ignored("github", reason)),
        Classified::TaskIfConversationKnown(_) | Classified::Challenge(_) => {
            Ok(ignored("github", "event_not_handled"))
        }
    }
}

/// `POST /webhooks/linear`.
pub async fn linear(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = linear_inner(&state, &headers, raw).await;
    answered("linear", started, result)
}

async fn linear_inner(
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    let received = now_ms();
    let secrets = state
        .cfg
        .providers
        .linear
        .as_ref()
        .map(SecretSource::values)
        .ok_or(IngestError::Disabled {
            provider: "linear",
            var: "LINEAR_WEBHOOK_SECRET",
        })?;
    let raw = body(raw, state.cfg.limits.max_body_bytes)?;
    require_json(headers)?;
    verify::linear(&secrets, header(headers, "linear-signature"), &raw)?;
    let payload = parse_json(&raw)?;
    verify::linear_fresh(
        payload.get("webhookTimestamp").and_then(Value::as_u64),
        received,
        state.cfg.limits.linear_window,
    )?;
    if let Err(reason) = state.cfg.requesters.linear(&payload) {
        return Ok(ignored("linear", reason));
    }
    match providers::linear::classify(
        &payload,
        header(headers, "linear-delivery"),
        &state.cfg.triggers,
        &state.cfg.routing,
    ) {
        Classified::Task(draft) => {
            let delivery = draft.delivery_id.clone().unwrap_or_default();
            if replay::is_replayed_body(state, "linear", &delivery, &raw).await? {
                return Ok(ignored("linear", "replayed_body"));
            }
            submit(state, *draft, received).await.map(as_200)
        }
        Classified::Ignored(reason) => Ok(ignored("linear", reason)),
        _ => Ok(ignored("linear", "event_not_handled")),
    }
}

/// `POST /webhooks/slack`: Events API (JSON) and slash commands (form).
pub async fn slack(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = slack_inner(&state, &headers, raw).await;
    answered("slack", started, result)
}

async fn slack_inner(
    state: &AppState,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    let received = now_ms();
    let secrets = state
        .cfg
        .providers
        .slack
        .as_ref()
        .map(SecretSource::values)
        .ok_or(IngestError::Disabled {
            provider: "slack",
            var: "SLACK_SIGNING_SECRET",
        })?;
    let raw = body(raw, state.cfg.limits.max_body_bytes)?;
    let media = media_type(headers);
    if media != "application/json" && media != "application/x-www-form-urlencoded" {
        return Err(IngestError::UnsupportedMediaType(
            "application/json or application/x-www-form-urlencoded",
        ));
    }
    verify::slack(
        &secrets,
        header(headers, "x-slack-signature"),
        header(headers, "x-slack-request-timestamp"),
        &raw,
        received / 1000,
        state.cfg.limits.slack_window,
    )?;
    if media == "application/x-www-form-urlencoded" {
        let command: providers::slack::SlashCommand = serde_urlencoded::from_bytes(&raw)
            .map_err(|e| IngestError::Malformed(format!("slash command form: {e}")))?;
        if let Err(reason) = state.cfg.requesters.slack_command(&command) {
            // Slack shows the body to the person who typed the command.
            let _ = ignored("slack", reason);
            return Ok(labelled(
                StatusCode::OK,
                json!({"response_type": "ephemeral", "text": "This workspace, channel or user may not use this command."}),
                "ignored",
            ));
        }
        let draft = providers::slack::classify_command(command, &state.cfg.routing);
        let response = submit(state, draft, received).await?;
        // Slack shows a slash command's 200 body to the user who typed it, and
        // nothing for an empty one: a new command's "On it" comes from the
        // dispatcher, ephemeral through the command's response_url.
        let refused = matches!(
            response.extensions().get::<Outcome>(),
            Some(Outcome("refused"))
        );
        let (text, outcome) = if refused {
            (
                "This request cannot be run here; the reason is posted in the channel.",
                "refused",
            )
        } else if response.status() == StatusCode::ACCEPTED {
            let mut empty = StatusCode::OK.into_response();
            empty.extensions_mut().insert(Outcome("accepted"));
            return Ok(empty);
        } else {
            ("Already received.", "duplicate")
        };
        return Ok(labelled(
            StatusCode::OK,
            json!({"response_type": "ephemeral", "text": text}),
            outcome,
        ));
    }
    let payload = parse_json(&raw)?;
    if let Err(reason) = state.cfg.requesters.slack_event(&payload) {
        return Ok(ignored("slack", reason));
    }
    match providers::slack::classify_event(&payload, &state.cfg.routing) {
        Classified::Challenge(challenge) => Ok(labelled(
            StatusCode::OK,
            json!({"challenge": challenge}),
            "challenge",
        )),
        Classified::Task(draft) => submit(state, *draft, received).await.map(as_200),
        Classified::TaskIfConversationKnown(draft) => {
            let Some(conversation) = draft.conversation.as_deref() else {
                return Ok(ignored("slack", "not_in_thread"));
            };
            match state.conversation_known(conversation).await {
                Ok(true) => submit(state, *draft, received).await.map(as_200),
                Ok(false) => Ok(ignored("slack", "thread_not_ours")),
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether the thread is ours");
                    metric::redis_degraded("slack_thread");
                    Ok(ignored("slack", "thread_unknown_redis_down"))
                }
            }
        }
        Classified::Ignored(reason) => Ok(ignored("slack", reason)),
        Classified::Ping => Ok(ignored("slack", "event_not_handled")),
    }
}
