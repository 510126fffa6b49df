//! The operator console without a browser: its handlers through the real
//! router (`oneshot`), against the real RabbitMQ and Redis under the test's
//! prefix. The browser drives it in the fleet's console flow.

use crate::helpers::{TestIngest, WAIT, token};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_AT_MS, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, ReplyTarget,
    SourceKind, Stage, TaskEnvelope, TaskId, now_ms,
};
use contexten_testkit::broker::{envelope_from, source};
use contexten_testkit::eventually;
use lapin::types::{AMQPValue, FieldTable};
use tower::ServiceExt as _;

const REASON: &str = "<script>alert('reason')</script>";

/// One answer: status, headers, body text.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Page {
    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let start = self
            .text
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.text[start..start + 64].to_owned()
    }
}

async fn call(
    ingest: &TestIngest,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<String>,
    extra: &[(&str, &str)],
) -> Page {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let body = match form {
        Some(form) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form)
        }
        None => Body::empty(),
    };
    let app = ingest::router(ingest.state.clone(), ingest.readiness.clone());
    let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 4 << 20).await.unwrap();
    Page {
        status: parts.status,
        headers: parts.headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// Signs in with `token`; returns the cookie pair (`name=value`).
async fn sign_in(ingest: &TestIngest, token: &str) -> String {
    let page = call(
        ingest,
        "POST",
        "/console/login",
        None,
        Some(form(&[("token", token)])),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

async fn console() -> TestIngest {
    TestIngest::start_with(&[("CONTEXTEN_CONSOLE", "1")]).await
}

#[tokio::test]
async fn the_console_is_off_unless_enabled() {
    let ingest = TestIngest::start().await;
    let page = call(&ingest, "GET", "/console/login", None, None, &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_an_admin_token_signs_in_and_a_session_is_required() {
    let ingest = console().await;
    // No session: a browser is sent to the login page, anything else gets 401.
    let page = call(
        &ingest,
        "GET",
        "/console/queues",
        None,
        None,
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/console/login");
    let page = call(&ingest, "GET", "/console/queues", None, None, &[]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let forged = format!("contexten_console={}", "ab".repeat(32));
    let page = call(&ingest, "GET", "/console/dead", Some(&forged), None, &[]).await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "an unknown session id"
    );
    // A wrong token, then a valid one without the admin scope.
    let login = |t: &str| form(&[("token", t)]);
    let page = call(
        &ingest,
        "POST",
        "/console/login",
        None,
        Some(login("ctx_tok_nope")),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    let page = call(
        &ingest,
        "POST",
        "/console/login",
        None,
        Some(login(&token("both"))),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text.contains("admin scope"), "{}", page.text);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    // The admin token: an HttpOnly, SameSite=Strict cookie, Secure behind https.
    let page = call(
        &ingest,
        "POST",
        "/console/login",
        None,
        Some(login(&token("admin"))),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let set = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"),
        "{set}"
    );
    let page = call(
        &ingest,
        "POST",
        "/console/login",
        None,
        Some(login(&token("admin"))),
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(
        page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = call(&ingest, "GET", "/console/queues", Some(&cookie), None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text
            .contains(&ingest.names.dead_queue(Stage::Generate)),
        "{}",
        page.text
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    // Actions need the session's CSRF token.
    let act = form(&[("action", "purge"), ("stage", "generate"), ("count", "1")]);
    let page = call(
        &ingest,
        "POST",
        "/console/dead/act",
        None,
        Some(act.clone()),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = call(
        &ingest,
        "POST",
        "/console/dead/act",
        Some(&cookie),
        Some(act.clone()),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text.contains("no CSRF token"), "{}", page.text);
    let wrong = format!("{act}&csrf={}", "0".repeat(64));
    let page = call(
        &ingest,
        "POST",
        "/console/dead/act",
        Some(&cookie),
        Some(wrong),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.text.contains("does not belong to this session"),
        "{}",
        page.text
    );
    // Logging out ends the session.
    let queues = call(&ingest, "GET", "/console/queues", Some(&cookie), None, &[]).await;
    let csrf = queues.csrf();
    let page = call(
        &ingest,
        "POST",
        "/console/logout",
        Some(&cookie),
        Some(form(&[("csrf", &csrf)])),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = call(&ingest, "GET", "/console/queues", Some(&cookie), None, &[]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

async fn dead_letter(ingest: &TestIngest, env: &TaskEnvelope) {
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_DEAD_REASON.into(),
        AMQPValue::LongString(REASON.into()),
    );
    headers.insert(
        HEADER_DEAD_DETAIL.into(),
        AMQPValue::LongString("provider said <b>no</b>".into()),
    );
    headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(3));
    headers.insert(
        HEADER_DEAD_AT_MS.into(),
        AMQPValue::LongLongInt((now_ms() - 90_000) as i64),
    );
    let publisher = ingest
        .state
        .publisher
        .read()
        .await
        .clone()
        .expect("publisher");
    contexten_testkit::broker::dead_letter(
        &publisher,
        &ingest.names,
        Stage::Generate,
        env,
        headers,
    )
    .await;
}

#[tokio::test]
async fn dead_letters_are_shown_escaped_masked_counted_and_replayed_after_confirmation() {
    let ingest = console().await;
    let cookie = sign_in(&ingest, &token("admin")).await;
    let key = ["sk-proj-", "abcdefghijklmnopqrstuvwx0123"].concat();
    let first = envelope_from(
        source(SourceKind::OPERATOR, ReplyTarget::None),
        &format!("<script>alert('text')</script> api_key = \"{key}\""),
    );
    let second = envelope_from(source(SourceKind::OPERATOR, ReplyTarget::None), "second");
    dead_letter(&ingest, &first).await;
    dead_letter(&ingest, &second).await;

    let page = call(&ingest, "GET", "/console/dead", Some(&cookie), None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.text.contains("<script>"),
        "markup is escaped: {}",
        page.text
    );
    assert!(
        page.text
            .contains("&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;")
    );
    assert!(page.text.contains("2 message(s)"), "{}", page.text);
    assert!(
        page.text.contains("1m 30s"),
        "the age from dead-at: {}",
        page.text
    );

    // One letter, inspected: the secret in its envelope is masked.
    let id = first.message_id(Stage::Generate);
    let page = call(
        &ingest,
        "GET",
        &format!("/console/dead/generate/{}", id.replace('/', "%2F")),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        !page.text.contains(&key),
        "the key is masked: {}",
        page.text
    );
    assert!(page.text.contains("[REDACTED:"), "{}", page.text);
    assert!(!page.text.contains("<script>") && page.text.contains("&lt;b&gt;no&lt;/b&gt;"));

    // The confirmation counts what the group's replay will touch.
    let reason = serde_urlencoded::to_string([("reason", REASON)]).unwrap();
    let page = call(
        &ingest,
        "GET",
        &format!("/console/dead/confirm?action=replay&stage=generate&{reason}"),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text
            .contains("This will replay <strong>2</strong> message(s)"),
        "{}",
        page.text
    );
    let page_purge = call(
        &ingest,
        "GET",
        &format!(
            "/console/dead/confirm?action=purge&stage=generate&message_id={}",
            id.replace('/', "%2F")
        ),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(
        page_purge
            .text
            .contains("This will purge <strong>1</strong> message(s)"),
        "{}",
        page_purge.text
    );
    // Nothing was touched by looking.
    let dead_queue = ingest.names.dead_queue(Stage::Generate);
    assert_eq!(ingest.broker.depth(&dead_queue).await, 2);

    let csrf = page.csrf();
    let act = form(&[
        ("action", "replay"),
        ("stage", "generate"),
        ("reason", REASON),
        ("count", "2"),
        ("csrf", &csrf),
    ]);
    let page = call(
        &ingest,
        "POST",
        "/console/dead/act",
        Some(&cookie),
        Some(act),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("Replayed: 2 message(s)"),
        "{}",
        page.text
    );
    let work = ingest.names.stage_queue(Stage::Generate);
    eventually(WAIT, "both letters back on the work queue", || async {
        ingest.broker.depth(&work).await == 2 && ingest.broker.depth(&dead_queue).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_task_page_shows_timeline_and_answer_escaped_and_search_finds_it() {
    let ingest = console().await;
    let cookie = sign_in(&ingest, &token("admin")).await;
    let task = TaskId::new();
    let key = ingest.names.status_key(task);
    let now = now_ms();
    let summary = serde_json::json!({"source": "api", "strategy": "generate", "conversation": "conv-<i>7</i>", "api_token": "ops", "correlation_id": "c-1"});
    let result = serde_json::json!({"reply": "answer", "kind": "code", "produced_by": "generate",
        "summary": "Added <script>alert('task')</script>", "text": "fn main() { println!(\"<script>\"); }",
        "cost": {"llm_calls": 1, "llm_prompt_tokens": 120}, "fallback_reason": null});
    let timing = |a: u64, b: u64| {
        serde_json::json!({"started_at_ms": now + a, "finished_at_ms": now + b}).to_string()
    };
    ingest
        .state
        .store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.hset_multiple(
                &key,
                &[
                    ("state", "done".to_owned()),
                    ("stage", "dispatch".to_owned()),
                    ("created_at_ms", now.to_string()),
                    ("updated_at_ms", (now + 900).to_string()),
                    ("summary", summary.to_string()),
                    ("result", result.to_string()),
                    ("timing:ingest", timing(0, 5)),
                    ("timing:context", timing(10, 300)),
                    ("timing:generate", timing(300, 850)),
                ],
            )
            .ignore();
            p.expire(&key, 600).ignore();
            p
        })
        .await
        .unwrap();
    let page = call(
        &ingest,
        "GET",
        &format!("/console/tasks/{task}"),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains("<script>"), "{}", page.text);
    assert!(
        page.text
            .contains("Added &lt;script&gt;alert(&#39;task&#39;)&lt;/script&gt;")
    );
    assert!(
        page.text.contains("id=\"timeline\"")
            && page
                .text
                .contains("<td>generate</td><td class=\"n\">300</td><td class=\"n\">550</td>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("llm_calls: 1"), "{}", page.text);
    let page = call(
        &ingest,
        "GET",
        "/console/search?q=conv-%3Ci%3E7%3C%2Fi%3E",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains(&format!("/console/tasks/{task}")),
        "{}",
        page.text
    );
    assert!(page.text.contains("conv-&lt;i&gt;7&lt;/i&gt;"));
    let page = call(
        &ingest,
        "GET",
        &format!("/console/search?q={task}"),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // A breaker as the resilience crate keeps it in Redis.
    let breaker = ingest.names.redis_key(&["breaker", "llm"]);
    ingest
        .state
        .store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.hset_multiple(
                &breaker,
                &[("state", "open".to_owned()), ("opened_at", now.to_string())],
            )
            .ignore();
            p.expire(&breaker, 600).ignore();
            p
        })
        .await
        .unwrap();
    let page = call(&ingest, "GET", "/console/limits", Some(&cookie), None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text
            .contains("<td>llm</td><td class=\"state-open\">open</td>"),
        "{}",
        page.text
    );
}
