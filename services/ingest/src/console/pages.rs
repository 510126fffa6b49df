//! The console's handlers: plain async functions over [`AppState`], each
//! answering a whole HTML page (tested with `oneshot` in ingest's tests and
//! in a real browser by the fleet's console flow).
//!
//! A GET without a session is sent to the login page (303), any other
//! request without one gets 401; a POST whose CSRF token is missing or not
//! the session's gets 403 with the reason.

use super::html::{self, age, esc, url_part};
use super::session::{self, Session};
use crate::AppState;
use crate::tokens::Scope;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use contexten_broker::{BrokerError, Store, redis_error};
use contexten_envelope::{Stage, TaskId, now_ms};
use contexten_operations::{
    DeadAction, DeadFilter, DeadLetter, dead_letters, list_dead, queue_stats, task_status,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

/// The most dead letters one page lists per stage, and one action touches.
pub const MAX_LETTERS: usize = 1000;
/// The most status records a search reads.
pub const SEARCH_SCAN_MAX: usize = 20_000;
/// The most tasks a search lists.
const SEARCH_RESULTS: usize = 100;

fn redirect(to: &str) -> Response {
    let mut response = html::respond(StatusCode::SEE_OTHER, String::new());
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn unavailable(what: &str, error: &BrokerError, csrf: Option<&str>) -> Response {
    tracing::warn!(%error, "console: {what} unavailable");
    html::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("{what} cannot be reached right now: {error}"),
        csrf,
    )
}

/// The request's session, or the answer refusing it.
async fn signed_in(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Session, Response> {
    match session::load(state, headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => {
            let wants_html = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            if method == Method::GET && wants_html {
                Err(redirect("/console/login"))
            } else {
                Err(html::error(
                    StatusCode::UNAUTHORIZED,
                    "Not signed in",
                    "this needs a console session: sign in at /console/login with an admin-scope API token",
                    None,
                ))
            }
        }
        Err(error) => Err(unavailable("Redis", &error, None)),
    }
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The 403 answer when the form's CSRF token is missing or not the session's.
fn csrf_refusal(session: &Session, fields: &HashMap<String, String>) -> Option<Response> {
    let reason = match fields.get("csrf") {
        None => "refused: the form carries no CSRF token",
        Some(given) if session::same_token(given, &session.csrf) => return None,
        Some(_) => "refused: the CSRF token does not belong to this session",
    };
    tracing::warn!(principal = %session.principal, "console: {reason}");
    Some(html::error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        reason,
        Some(&session.csrf),
    ))
}

pub async fn home() -> Response {
    redirect("/console/queues")
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let note = message
        .map(|m| format!("<p class=\"err\">{}</p>", esc(m)))
        .unwrap_or_default();
    html::respond(
        status,
        html::page(
            "Sign in",
            None,
            &format!(
                "{note}<form method=\"post\" action=\"/console/login\">\
                 <p><label>Admin API token<br><input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" autofocus></label></p>\
                 <p><button type=\"submit\" id=\"sign-in\">Sign in</button></p></form>\
                 <p class=\"muted\">Tokens with the <code>admin</code> scope (CONTEXTEN_API_TOKENS or CONTEXTEN_API_TOKENS_FILE) sign in.</p>"
            ),
        ),
    )
}

pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

/// `POST /console/login`: an admin-scope token starts a session.
pub async fn login(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let token = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    let Some(principal) = state.tokens.authenticate(token) else {
        return login_page(StatusCode::UNAUTHORIZED, Some("unknown token"));
    };
    if !principal.allows(Scope::Admin) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("this token lacks the admin scope the console needs"),
        );
    }
    let session = match session::create(&state, &principal.name).await {
        Ok(s) => s,
        Err(error) => return unavailable("Redis", &error, None),
    };
    tracing::info!(principal = %principal.name, "console: signed in");
    let secure = session::over_https(&state, &headers);
    let mut response = redirect("/console/queues");
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::cookie(
            Some(&session),
            secure,
            state.cfg.console.session_ttl.as_secs(),
        ),
    );
    response
}

/// `POST /console/logout`.
pub async fn logout(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    if let Some(refused) = csrf_refusal(&session, &form(&body)) {
        return refused;
    }
    if let Err(error) = session::destroy(&state, &session).await {
        return unavailable("Redis", &error, None);
    }
    let mut response = redirect("/console/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::cookie(None, session::over_https(&state, &headers), 0),
    );
    response
}

/// `GET /console/queues`: depth and consumers of every stage queue and dead queue.
pub async fn queues(State(state): Shared, method: Method, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let channel = match state.console.channel(&state).await {
        Ok(c) => c,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let stats = match queue_stats(&channel, &state.names, state.cfg.broker.queue_type).await {
        Ok(s) => s,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let now = now_ms();
    let mut rows = String::new();
    for queue in &stats {
        let oldest = if queue.dead && queue.ready > 0 {
            list_dead(&channel, &state.names, queue.stage, 1)
                .await
                .ok()
                .and_then(|l| l.first().and_then(|l| l.age_secs(now)))
                .map(age)
                .unwrap_or_else(|| "unknown".into())
        } else if queue.dead {
            "—".into()
        } else {
            "n/a".into()
        };
        let rate = state
            .console
            .rate(&queue.queue, queue.ready)
            .map(|r| format!("{r:+.2}"))
            .unwrap_or_else(|| "—".into());
        let name = if queue.dead && queue.ready > 0 {
            format!(
                "<a href=\"/console/dead#{}\">{}</a>",
                esc(queue.stage.as_str()),
                esc(&queue.queue)
            )
        } else {
            esc(&queue.queue)
        };
        let _ = write!(
            rows,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n muted\">n/a</td><td class=\"n\">{}</td><td class=\"n\">{rate}</td><td>{oldest}</td></tr>",
            esc(queue.stage.as_str()),
            if queue.dead { "dead" } else { "work" },
            queue.ready,
            queue.consumers,
        );
    }
    let body = format!(
        "<table id=\"queues\"><tr><th>queue</th><th>stage</th><th>kind</th><th>ready</th><th>unacked</th><th>consumers</th><th>depth change/s</th><th>oldest</th></tr>{rows}</table>\
         <p class=\"muted\">Ready and consumers come from the broker (AMQP passive declare). Unacknowledged counts need RabbitMQ's \
         management API or its Prometheus plugin (<code>rabbitmq_queue_messages_unacked</code>), which the console does not read. \
         Depth change/s is the net change of ready messages since the previous view of this page on this ingest replica. \
         Oldest is the age of the head dead letter (its <code>x-contexten-dead-at-ms</code> header, else its AMQP timestamp); \
         a work queue's head is not peeked, which would take it from a consumer.</p>"
    );
    html::respond(StatusCode::OK, html::page("Queues", csrf, &body))
}

fn action_links(stage: Stage, reason: Option<&str>, message_id: Option<&str>) -> String {
    let mut query = format!("stage={}", url_part(stage.as_str()));
    if let Some(r) = reason {
        let _ = write!(query, "&reason={}", url_part(r));
    }
    if let Some(m) = message_id {
        let _ = write!(query, "&message_id={}", url_part(m));
    }
    format!(
        "<a class=\"replay\" href=\"/console/dead/confirm?action=replay&amp;{q}\">replay</a> · \
         <a class=\"purge\" href=\"/console/dead/confirm?action=purge&amp;{q}\">purge</a>",
        q = esc(&query)
    )
}

/// `GET /console/dead`: dead letters by stage and reason.
pub async fn dead(State(state): Shared, method: Method, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let channel = match state.console.channel(&state).await {
        Ok(c) => c,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let now = now_ms();
    let mut body = String::new();
    let mut total = 0;
    for stage in Stage::QUEUED {
        let letters = match list_dead(&channel, &state.names, stage, MAX_LETTERS).await {
            Ok(l) => l,
            Err(error) => return unavailable("The broker", &error, csrf),
        };
        total += letters.len();
        let _ = write!(
            body,
            "<h2 id=\"{s}\">{s}: {} dead letter(s){}</h2>",
            letters.len(),
            if letters.len() >= MAX_LETTERS {
                " (first ones only)"
            } else {
                ""
            },
            s = esc(stage.as_str())
        );
        let mut groups: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
        for letter in &letters {
            groups
                .entry(letter.reason.as_str())
                .or_default()
                .push(letter);
        }
        for (reason, group) in groups {
            let _ = write!(
                body,
                "<h3 class=\"group\">reason <code class=\"reason\">{}</code> · {} message(s) · {}</h3>\
                 <table><tr><th>message</th><th>task</th><th>attempt</th><th>age</th><th>last error</th><th></th></tr>",
                esc(if reason.is_empty() { "(none)" } else { reason }),
                group.len(),
                action_links(stage, Some(reason), None),
            );
            for letter in group {
                let id = letter.message_id.as_deref();
                let message = match id {
                    Some(id) => format!(
                        "<a class=\"inspect\" href=\"/console/dead/{}/{}\">{}</a>",
                        url_part(stage.as_str()),
                        esc(&url_part(id)),
                        esc(id)
                    ),
                    None => "<span class=\"muted\">(no id)</span>".into(),
                };
                let task = task_link(letter);
                let mut detail = letter.detail.clone();
                if detail.len() > 200 {
                    let cut = (0..=200)
                        .rev()
                        .find(|i| detail.is_char_boundary(*i))
                        .unwrap_or(0);
                    detail.truncate(cut);
                    detail.push('…');
                }
                let _ = write!(
                    body,
                    "<tr><td>{message}</td><td>{task}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&letter.attempt),
                    letter.age_secs(now).map(age).unwrap_or_default(),
                    esc(&detail),
                    if id.is_some() {
                        action_links(stage, None, id)
                    } else {
                        String::new()
                    },
                );
            }
            body.push_str("</table>");
        }
    }
    if total == 0 {
        body.insert_str(0, "<p class=\"ok\">No dead letters.</p>");
    }
    html::respond(StatusCode::OK, html::page("Dead letters", csrf, &body))
}

/// Masks secrets in a text shown to the operator (the project's redaction
/// rules, docs/design.md "Secrets").
fn masked(text: &str) -> String {
    let mut counts = Default::default();
    contexten_trust::redact::redact_string(text.to_owned(), &mut counts)
}

fn header_masked(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let secret_name = [
        "authorization",
        "secret",
        "token",
        "password",
        "signature",
        "api-key",
        "api_key",
    ]
    .iter()
    .any(|s| lower.contains(s));
    if secret_name {
        "[REDACTED]".into()
    } else {
        masked(value)
    }
}

/// `GET /console/dead/{stage}/{message_id}`: one dead letter, secrets masked.
pub async fn letter(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    Path((stage, message_id)): Path<(String, String)>,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let Ok(stage) = stage.parse::<Stage>() else {
        return html::error(StatusCode::NOT_FOUND, "Not found", "no such stage", csrf);
    };
    let channel = match state.console.channel(&state).await {
        Ok(c) => c,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let filter = DeadFilter {
        message_id: Some(message_id.clone()),
        ..DeadFilter::default()
    };
    let found =
        match dead_letters(&channel, &state.names, stage, &filter, 1, DeadAction::Look).await {
            Ok(t) => t.done.into_iter().next(),
            Err(error) => return unavailable("The broker", &error, csrf),
        };
    let Some(letter) = found else {
        return html::error(
            StatusCode::NOT_FOUND,
            "Not found",
            "no dead letter with that id in this stage (replayed or purged already?)",
            csrf,
        );
    };
    let body_text = serde_json::from_slice::<Value>(&letter.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&letter.body).into_owned());
    let mut rows = String::new();
    for (name, value) in &letter.headers {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(name),
            esc(&header_masked(name, value))
        );
    }
    let task = task_link(&letter);
    let body = format!(
        "<table><tr><th>stage</th><td>{}</td></tr><tr><th>message id</th><td>{}</td></tr><tr><th>task</th><td>{task}</td></tr>\
         <tr><th>reason</th><td class=\"reason\">{}</td></tr><tr><th>attempts</th><td>{}</td></tr>\
         <tr><th>last error</th><td>{}</td></tr><tr><th>dead for</th><td>{}</td></tr></table>\
         <p>{}</p><h2>Headers</h2><table>{rows}</table><h2>Envelope (secrets masked)</h2><pre id=\"envelope\">{}</pre>",
        esc(stage.as_str()),
        esc(&message_id),
        esc(&letter.reason),
        esc(&letter.attempt),
        esc(&masked(&letter.detail)),
        letter
            .age_secs(now_ms())
            .map(age)
            .unwrap_or_else(|| "unknown".into()),
        action_links(stage, None, Some(&message_id)),
        esc(&masked(&body_text)),
    );
    html::respond(StatusCode::OK, html::page("Dead letter", csrf, &body))
}

/// What a confirmation or an action names.
struct Selection {
    replay: bool,
    stage: Stage,
    filter: DeadFilter,
}

impl Selection {
    fn parse(fields: &HashMap<String, String>) -> Result<Self, &'static str> {
        let replay = match fields.get("action").map(String::as_str) {
            Some("replay") => true,
            Some("purge") => false,
            _ => return Err("action must be replay or purge"),
        };
        let stage = fields
            .get("stage")
            .and_then(|s| s.parse::<Stage>().ok())
            .filter(|s| Stage::QUEUED.contains(s))
            .ok_or("stage must be one of context, generate, agent, dispatch")?;
        Ok(Selection {
            replay,
            stage,
            filter: DeadFilter {
                reason: fields.get("reason").cloned(),
                message_id: fields.get("message_id").filter(|m| !m.is_empty()).cloned(),
                ..DeadFilter::default()
            },
        })
    }

    fn verb(&self) -> &'static str {
        if self.replay { "replay" } else { "purge" }
    }

    fn describe(&self) -> String {
        let mut what = format!(
            "from the <code>{}</code> dead queue",
            esc(self.stage.as_str())
        );
        if let Some(r) = &self.filter.reason {
            let _ = write!(what, " with reason <code>{}</code>", esc(r));
        }
        if let Some(m) = &self.filter.message_id {
            let _ = write!(what, " with message id <code>{}</code>", esc(m));
        }
        what
    }

    fn hidden_fields(&self) -> String {
        let mut out = format!(
            "<input type=\"hidden\" name=\"action\" value=\"{}\"><input type=\"hidden\" name=\"stage\" value=\"{}\">",
            self.verb(),
            esc(self.stage.as_str())
        );
        if let Some(r) = &self.filter.reason {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"reason\" value=\"{}\">",
                esc(r)
            );
        }
        if let Some(m) = &self.filter.message_id {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"message_id\" value=\"{}\">",
                esc(m)
            );
        }
        out
    }
}

/// `GET /console/dead/confirm`: how many dead letters an action will touch,
/// and the form that does it.
pub async fn confirm(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let selection = match Selection::parse(&query) {
        Ok(s) => s,
        Err(reason) => return html::error(StatusCode::BAD_REQUEST, "Bad request", reason, csrf),
    };
    let channel = match state.console.channel(&state).await {
        Ok(c) => c,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let count = match dead_letters(
        &channel,
        &state.names,
        selection.stage,
        &selection.filter,
        MAX_LETTERS,
        DeadAction::Look,
    )
    .await
    {
        Ok(t) => t.done.len(),
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let verb = selection.verb();
    let effect = if selection.replay {
        "Each is republished to its stage's work queue (operator priority, attempts reset), then removed from the dead queue; \
         the stage's dead-lettered mark in the task's status record is cleared first, so the stage handles it again."
    } else {
        "They are deleted for good."
    };
    let body = if count == 0 {
        format!(
            "<p class=\"warn\">No dead letter {} matches: nothing to {verb}.</p>",
            selection.describe()
        )
    } else {
        format!(
            "<p class=\"warn\" id=\"confirm-count\">This will {verb} <strong>{count}</strong> message(s) {}. {effect}</p>\
             <form method=\"post\" action=\"/console/dead/act\">{}<input type=\"hidden\" name=\"count\" value=\"{count}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"confirm\">{} {count} message(s)</button> \
             <a href=\"/console/dead\">cancel</a></form>",
            selection.describe(),
            selection.hidden_fields(),
            esc(&session.csrf),
            if selection.replay { "Replay" } else { "Purge" },
        )
    };
    html::respond(
        StatusCode::OK,
        html::page(&format!("Confirm {verb}"), csrf, &body),
    )
}

/// `POST /console/dead/act`: replays or purges what the confirmation counted
/// (at most that many, should more have arrived since).
pub async fn act(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let fields = form(&body);
    if let Some(refused) = csrf_refusal(&session, &fields) {
        return refused;
    }
    let csrf = Some(session.csrf.as_str());
    let selection = match Selection::parse(&fields) {
        Ok(s) => s,
        Err(reason) => return html::error(StatusCode::BAD_REQUEST, "Bad request", reason, csrf),
    };
    let Some(limit) = fields
        .get("count")
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| (1..=MAX_LETTERS).contains(c))
    else {
        return html::error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "count must be the number the confirmation stated (1-1000)",
            csrf,
        );
    };
    let channel = match state.console.channel(&state).await {
        Ok(c) => c,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let publisher = state.publisher.read().await.clone();
    let action = match (&publisher, selection.replay) {
        (_, false) => DeadAction::Purge,
        (Some(p), true) => DeadAction::ReplayReopening(p, &state.store),
        (None, true) => {
            return html::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "ingest has no broker session to publish with right now; try again shortly",
                csrf,
            );
        }
    };
    let touched = match dead_letters(
        &channel,
        &state.names,
        selection.stage,
        &selection.filter,
        limit,
        action,
    )
    .await
    {
        Ok(t) => t,
        Err(error) => return unavailable("The broker", &error, csrf),
    };
    let verb = selection.verb();
    tracing::info!(
        principal = %session.principal,
        action = verb,
        stage = selection.stage.as_str(),
        reason = selection.filter.reason.as_deref().unwrap_or(""),
        done = touched.done.len(),
        failed = touched.failed.len(),
        "console: dead letters {verb}ed"
    );
    let mut body = format!(
        "<p class=\"{}\" id=\"result\">{}: {} message(s) {}, {} failed.</p>",
        if touched.failed.is_empty() {
            "ok"
        } else {
            "err"
        },
        if selection.replay {
            "Replayed"
        } else {
            "Purged"
        },
        touched.done.len(),
        selection.describe(),
        touched.failed.len()
    );
    if !touched.done.is_empty() {
        body.push_str("<ul>");
        for letter in &touched.done {
            let task = letter
                .task_id
                .as_deref()
                .map(|t| {
                    format!(
                        " — task <a class=\"task\" href=\"/console/tasks/{}\">{}</a>",
                        esc(&url_part(t)),
                        esc(t)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                body,
                "<li>{}{task}</li>",
                esc(letter.message_id.as_deref().unwrap_or("(no id)"))
            );
        }
        body.push_str("</ul>");
    }
    for (letter, error) in &touched.failed {
        let _ = write!(
            body,
            "<p class=\"err\">{} stayed in the dead queue: {}</p>",
            esc(letter.message_id.as_deref().unwrap_or("(no id)")),
            esc(error)
        );
    }
    body.push_str("<p><a href=\"/console/dead\">back to dead letters</a></p>");
    let status = if touched.failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    html::respond(
        status,
        html::page(&format!("Dead letters {verb}d"), csrf, &body),
    )
}

fn ms_text(ms: Option<u64>) -> String {
    ms.map(|ms| contexten_envelope::time::rfc3339(ms / 1000))
        .unwrap_or_default()
}

fn json_field(status: &Value, field: &str) -> Value {
    status
        .get(field)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// `GET /console/tasks/{id}`: the task's timeline, answer, links and cost.
pub async fn task(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let Ok(task_id) = id.parse::<TaskId>() else {
        return html::error(StatusCode::NOT_FOUND, "Not found", "not a task id", csrf);
    };
    let status = match task_status(&state.store, task_id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return html::error(
                StatusCode::NOT_FOUND,
                "Not found",
                "no status record for this task (unknown, or expired)",
                csrf,
            );
        }
        Err(error) => return unavailable("Redis", &error, csrf),
    };
    html::respond(
        StatusCode::OK,
        html::page(
            "Task",
            csrf,
            &task_body(&state, &task_id.to_string(), &status),
        ),
    )
}

fn task_body(state: &AppState, id: &str, status: &Value) -> String {
    let text = |field: &str| {
        status
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let number = |field: &str| {
        status
            .get(field)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
    };
    let summary = json_field(status, "summary");
    let result = json_field(status, "result");
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let created = number("created_at_ms");
    let mut body = format!(
        "<table><tr><th>task</th><td><code>{}</code></td></tr><tr><th>state</th><td id=\"task-state\">{}</td></tr>\
         <tr><th>stage</th><td>{}</td></tr><tr><th>source</th><td>{}</td></tr><tr><th>strategy</th><td>{}</td></tr>\
         <tr><th>priority</th><td>{}</td></tr><tr><th>conversation</th><td>{}</td></tr><tr><th>API token</th><td>{}</td></tr>\
         <tr><th>correlation id</th><td>{}</td></tr><tr><th>created</th><td>{}</td></tr><tr><th>updated</th><td>{}</td></tr></table>",
        esc(id),
        esc(&text("state")),
        esc(&text("stage")),
        esc(&s(&summary, "source")),
        esc(&s(&summary, "strategy")),
        esc(&summary
            .get("priority")
            .map(|p| p.to_string().trim_matches('"').to_owned())
            .unwrap_or_default()),
        esc(&s(&summary, "conversation")),
        esc(&s(&summary, "api_token")),
        esc(&s(&summary, "correlation_id")),
        ms_text(created),
        ms_text(number("updated_at_ms")),
    );
    if let Some(template) = &state.cfg.console.trace_url {
        let link = template.replace("{task_id}", &url_part(id)).replace(
            "{correlation_id}",
            &url_part(&s(&summary, "correlation_id")),
        );
        let _ = write!(
            body,
            "<p><a id=\"trace\" href=\"{}\">Open the trace</a></p>",
            esc(&link)
        );
    }
    // The timeline: each stage's span relative to the task's creation.
    let mut spans: Vec<(String, u64, u64)> = status
        .get("timings")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(stage, timing)| {
                    let start = timing.get("started_at_ms")?.as_u64()?;
                    let end = timing
                        .get("finished_at_ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(start);
                    Some((stage.clone(), start, end.max(start)))
                })
                .collect()
        })
        .unwrap_or_default();
    spans.sort_by_key(|(_, start, _)| *start);
    if let (Some(first), Some(last)) = (
        spans.iter().map(|s| s.1).min().or(created),
        spans.iter().map(|s| s.2).max(),
    ) {
        let total = last.saturating_sub(first).max(1) as f64;
        body.push_str("<h2>Timeline</h2><table id=\"timeline\"><tr><th>stage</th><th>started (+ms)</th><th>took (ms)</th><th style=\"width:30em\"></th></tr>");
        for (stage, start, end) in &spans {
            let left = (start - first) as f64 / total * 100.0;
            let width = ((end - start) as f64 / total * 100.0).max(0.5);
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><div style=\"margin-left:{left:.1}%;width:{width:.1}%;background:#457b9d;height:.9em\"></div></td></tr>",
                esc(stage),
                start - first,
                end - start
            );
        }
        body.push_str("</table>");
    }
    if let Some(history) = status
        .get("history")
        .and_then(Value::as_array)
        .filter(|h| !h.is_empty())
    {
        body.push_str("<h2>Completed messages</h2><ul>");
        for step in history {
            let _ = write!(
                body,
                "<li>{} — {}</li>",
                esc(&s(step, "step")),
                esc(&s(step, "outcome"))
            );
        }
        body.push_str("</ul>");
    }
    if result.is_null() {
        body.push_str("<p class=\"muted\">No answer yet.</p>");
        return body;
    }
    let _ = write!(
        body,
        "<h2>Answer</h2><table><tr><th>kind</th><td id=\"answer-kind\">{}</td></tr><tr><th>produced by</th><td>{}</td></tr>\
         <tr><th>summary</th><td>{}</td></tr>",
        esc(&s(&result, "kind")),
        esc(&s(&result, "produced_by")),
        esc(&s(&result, "summary")),
    );
    for (label, key) in [
        ("failure reason", "reason"),
        ("fallback reason", "fallback_reason"),
    ] {
        let value = s(&result, key);
        if !value.is_empty() {
            let _ = write!(body, "<tr><th>{label}</th><td>{}</td></tr>", esc(&value));
        }
    }
    let web_url = s(&result, "web_url");
    if !web_url.is_empty() {
        let _ = write!(
            body,
            "<tr><th>agent run</th><td><a href=\"{0}\">{0}</a></td></tr>",
            esc(&web_url)
        );
    }
    for pr in result
        .get("pull_requests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(pr) = pr.as_str() {
            let _ = write!(
                body,
                "<tr><th>pull request</th><td><a href=\"{0}\">{0}</a></td></tr>",
                esc(pr)
            );
        }
    }
    if let Some(cost) = result.get("cost").and_then(Value::as_object) {
        let parts: Vec<String> = cost
            .iter()
            .map(|(k, v)| format!("{}: {}", esc(k), esc(&v.to_string())))
            .collect();
        let _ = write!(body, "<tr><th>cost</th><td>{}</td></tr>", parts.join(", "));
    }
    body.push_str("</table>");
    let answer_text = s(&result, "text");
    if !answer_text.is_empty() {
        let _ = write!(body, "<pre id=\"answer-text\">{}</pre>", esc(&answer_text));
    }
    body
}

/// Keys of `store` matching `pattern`, at most `max`.
async fn scan(store: &Store, pattern: &str, max: usize) -> Result<Vec<String>, BrokerError> {
    let mut connection = store.connection().await?;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= max {
            keys.truncate(max);
            return Ok(keys);
        }
    }
}

/// `GET /console/search?q=`: a task id opens its page; otherwise status
/// records whose conversation or API token name is `q` (a bounded scan).
pub async fn search(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let q = query
        .get("q")
        .map(|q| q.trim())
        .unwrap_or_default()
        .to_owned();
    if q.is_empty() {
        return html::error(
            StatusCode::BAD_REQUEST,
            "Search",
            "type a task id, a conversation or an API token name",
            csrf,
        );
    }
    if let Ok(task) = q.parse::<TaskId>() {
        return redirect(&format!("/console/tasks/{task}"));
    }
    let prefix = state.names.redis_key(&["task", ""]);
    let keys = match scan(&state.store, &format!("{prefix}*"), SEARCH_SCAN_MAX).await {
        Ok(k) => k,
        Err(error) => return unavailable("Redis", &error, csrf),
    };
    let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            k.strip_prefix(&prefix)
                .is_some_and(|id| id.parse::<TaskId>().is_ok())
        })
        .collect();
    let mut found = Vec::new();
    for chunk in keys.chunks(500) {
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = match state
            .store
            .run(|| {
                let mut p = redis::pipe();
                for key in chunk {
                    p.cmd("HMGET")
                        .arg(key)
                        .arg("summary")
                        .arg("state")
                        .arg("created_at_ms");
                }
                p
            })
            .await
        {
            Ok(r) => r,
            Err(error) => return unavailable("Redis", &error, csrf),
        };
        for (key, (summary, task_state, created)) in chunk.iter().zip(rows) {
            let summary: Value = summary
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            let hit = ["conversation", "api_token"]
                .iter()
                .find(|f| summary.get(**f).and_then(Value::as_str) == Some(q.as_str()));
            if let Some(field) = hit {
                let id = key.strip_prefix(&prefix).unwrap_or_default().to_owned();
                found.push((
                    id,
                    *field,
                    task_state.unwrap_or_default(),
                    created.and_then(|c| c.parse().ok()),
                ));
            }
        }
        if found.len() >= SEARCH_RESULTS {
            break;
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.3));
    found.truncate(SEARCH_RESULTS);
    let mut body = format!(
        "<p>{} task(s) whose conversation or API token is <code>{}</code> (of {} status records read).</p>",
        found.len(),
        esc(&q),
        keys.len()
    );
    if !found.is_empty() {
        body.push_str(
            "<table><tr><th>task</th><th>matched</th><th>state</th><th>created</th></tr>",
        );
        for (id, field, task_state, created) in &found {
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/tasks/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
                esc(id),
                esc(field),
                esc(task_state),
                ms_text(*created)
            );
        }
        body.push_str("</table>");
    }
    html::respond(StatusCode::OK, html::page("Search", csrf, &body))
}

/// `GET /console/limits`: circuit breakers and rate limiters as Redis holds them.
pub async fn limits(State(state): Shared, method: Method, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &method, &headers).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let csrf = Some(session.csrf.as_str());
    let mut stores = vec![state.store.clone()];
    if !state.store.shared() {
        stores.push(state.store.cache());
    }
    let now = now_ms();
    let mut breakers = String::new();
    let mut limiters = String::new();
    for store in &stores {
        let found = async {
            let breaker_prefix = state.names.redis_key(&["breaker", ""]);
            for key in scan(store, &format!("{breaker_prefix}*"), 1000).await? {
                let (fields,): (HashMap<String, String>,) = store
                    .run(|| {
                        let mut p = redis::pipe();
                        p.hgetall(&key);
                        p
                    })
                    .await?;
                let breaker_state = fields.get("state").map(String::as_str).unwrap_or("closed");
                let opened = fields
                    .get("opened_at")
                    .and_then(|o| o.parse::<u64>().ok())
                    .filter(|_| breaker_state != "closed")
                    .map(|o| format!("{} ago", age(now.saturating_sub(o) / 1000)))
                    .unwrap_or_default();
                let _ = write!(
                    breakers,
                    "<tr><td>{}</td><td class=\"state-{}\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(key.strip_prefix(&breaker_prefix).unwrap_or(&key)),
                    esc(breaker_state),
                    esc(breaker_state),
                    esc(fields.get("failures").map(String::as_str).unwrap_or("0")),
                    opened
                );
            }
            let window_prefix = state.names.redis_key(&["ratelimit", ""]);
            for key in scan(store, &format!("{window_prefix}*"), 1000).await? {
                let (used, ttl): (u64, i64) = store
                    .run(|| {
                        let mut p = redis::pipe();
                        p.zcard(&key).pttl(&key);
                        p
                    })
                    .await?;
                let _ = write!(
                    limiters,
                    "<tr><td>{}</td><td>sliding window</td><td>{used} permit(s) taken in the current window</td><td>{}</td></tr>",
                    esc(key.strip_prefix(&window_prefix).unwrap_or(&key)),
                    if ttl > 0 { format!("window clears in {}", age(ttl as u64 / 1000)) } else { String::new() }
                );
            }
            let bucket_prefix = state.names.redis_key(&["bucket", ""]);
            for key in scan(store, &format!("{bucket_prefix}*"), 1000).await? {
                let (tokens, at): (Option<String>, Option<u64>) = store
                    .run(|| {
                        let mut p = redis::pipe();
                        p.hget(&key, "tokens").hget(&key, "at");
                        p
                    })
                    .await?;
                let tokens = tokens.and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
                let _ = write!(
                    limiters,
                    "<tr><td>{}</td><td>token bucket</td><td>{tokens:.0} unit(s) left at the last take</td><td>{}</td></tr>",
                    esc(key.strip_prefix(&bucket_prefix).unwrap_or(&key)),
                    at.map(|a| format!("last take {} ago", age(now.saturating_sub(a) / 1000))).unwrap_or_default()
                );
            }
            Ok::<_, BrokerError>(())
        }
        .await;
        if let Err(error) = found {
            return unavailable("Redis", &error, csrf);
        }
    }
    let none =
        "<tr><td colspan=\"4\" class=\"muted\">none in Redis yet (created on first use)</td></tr>";
    let body = format!(
        "<h2>Circuit breakers</h2><table id=\"breakers\"><tr><th>name</th><th>state</th><th>failures</th><th>opened</th></tr>{}</table>\
         <h2>Rate limiters</h2><table id=\"limiters\"><tr><th>name</th><th>kind</th><th>state</th><th></th></tr>{}</table>\
         <p class=\"muted\">Read from Redis, where every replica keeps them (<code>&lt;prefix&gt;:breaker:*</code>, \
         <code>&lt;prefix&gt;:ratelimit:*</code>, <code>&lt;prefix&gt;:bucket:*</code>); each worker's <code>/status</code> shows its own view.</p>",
        if breakers.is_empty() { none } else { &breakers },
        if limiters.is_empty() { none } else { &limiters },
    );
    html::respond(
        StatusCode::OK,
        html::page("Breakers & limiters", csrf, &body),
    )
}

/// A dead letter's task as a link to its task page (empty without a task id).
fn task_link(letter: &DeadLetter) -> String {
    letter
        .task_id
        .as_deref()
        .map(|t| {
            format!(
                "<a href=\"/console/tasks/{}\">{}</a>",
                esc(&url_part(t)),
                esc(t)
            )
        })
        .unwrap_or_default()
}
