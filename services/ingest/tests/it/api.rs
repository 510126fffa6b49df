use crate::helpers::*;
use contexten_broker::{Outcome, Store, WorkerOptions, run_worker};
use contexten_envelope::Reason;
use contexten_envelope::{
    Priority, ReplyKind, ReplyTarget, ResultKind, SourceKind, Stage, TaskEnvelope, TaskResult,
};
use contexten_telemetry::health::Readiness;
use contexten_testkit::eventually;
use serde_json::json;

fn request() -> serde_json::Value {
    json!({
        "text": "Add a retry with backoff to `fetch_page` in src/http.rs",
        "repository_url": "https://github.com/octo-org/hello-world.git",
        "ref": "main",
        "callback_url": "https://example.test/hooks/contexten",
        "conversation_id": "ticket-77"
    })
}

#[tokio::test]
async fn api_task_is_created_routed_and_readable_with_its_timings() {
    let ingest = TestIngest::start().await;
    let a = ingest.api(&token("both"), &request(), None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(a.json["task_id"], task.task_id.to_string());
    assert_eq!(task.source.kind, SourceKind::API);
    assert_eq!(task.source.requested_by.as_deref(), Some("client"));
    assert_eq!(
        task.source.reply_to,
        ReplyTarget::Callback {
            url: "https://example.test/hooks/contexten".into()
        }
    );
    assert_eq!(task.priority, Priority::Batch);
    assert_eq!(task.strategy_rule.as_deref(), Some("rules:one-function"));
    let repo = task.request.repository.as_ref().unwrap();
    assert_eq!(
        (repo.url.as_str(), repo.reference.as_deref()),
        ("https://github.com/octo-org/hello-world.git", Some("main"))
    );
    assert_eq!(task.request.hints.paths, vec!["src/http.rs"]);
    assert_eq!(
        task.conversation.as_ref().unwrap().id,
        "api:client:ticket-77"
    );

    let path = format!("/v1/tasks/{}", task.task_id);
    let status = ingest.get(&path, Some(&token("both"))).await;
    assert_eq!(status.status, 200, "{}", status.json);
    // Another token's task is not there for a `read` token; an admin sees it.
    let other = ingest.get(&path, Some(&token("read"))).await;
    assert_eq!(
        (other.status, other.error()),
        (404, "not_found"),
        "{}",
        other.json
    );
    assert!(other.json["message"].as_str().unwrap().contains("no task"));
    let admin = ingest.get(&path, Some(&token("admin"))).await;
    assert_eq!(admin.status, 200, "{}", admin.json);
    assert_eq!(status.json["state"], "queued");
    assert_eq!(status.json["record_state"], "queued:context");
    assert!(status.json["answer"].is_null(), "{}", status.json);
    assert_eq!(status.json["strategy"], "context");
    assert_eq!(status.json["priority"], "batch");
    assert_eq!(status.json["source"], "api");
    assert!(
        status.json["timings"]["ingest"]["started_at_ms"]
            .as_u64()
            .is_some()
    );

    let unknown = ingest
        .get(
            &format!("/v1/tasks/{}", contexten_envelope::TaskId::new()),
            Some(&token("read")),
        )
        .await;
    assert_eq!((unknown.status, unknown.error()), (404, "not_found"));
    let bad = ingest
        .get("/v1/tasks/not-a-uuid", Some(&token("read")))
        .await;
    assert_eq!((bad.status, bad.error()), (400, "invalid_request"));
}

#[tokio::test]
async fn status_follows_the_workers_and_the_acknowledgement_does_not_overwrite_it() {
    let ingest = TestIngest::start().await;
    let mut body = request();
    body["strategy"] = json!("generate");
    let a = ingest.api(&token("both"), &body, None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let id = a.json["task_id"].as_str().unwrap().to_owned();
    // A generate worker that forwards to dispatch, and a dispatcher that completes.
    let store = Store::new(&ingest.state.cfg.redis, ingest.names.clone()).unwrap();
    let shutdown = contexten_broker::CancellationToken::new();
    let options = |stage| WorkerOptions {
        service: "test-worker",
        stage,
        broker: ingest.state.cfg.broker.clone(),
        readiness: Readiness::new(&["broker"]),
    };
    let generate = tokio::spawn(run_worker(
        options(Stage::Generate),
        store.clone(),
        |env: TaskEnvelope| async move { Outcome::forward(Stage::Dispatch, env) },
        shutdown.clone(),
    ));
    // Wait for the task to reach dispatch (the ack sits there too), then let dispatch finish only the ack.
    let s = eventually(WAIT, "the status moved to queued:dispatch", || async {
        let s = ingest
            .get(&format!("/v1/tasks/{id}"), Some(&token("both")))
            .await;
        if s.json["record_state"] == "queued:dispatch" {
            Ok(s)
        } else {
            Err(s.json)
        }
    })
    .await;
    assert_eq!(s.json["state"], "running");
    assert_eq!(s.json["stage"], "generate");
    assert!(
        s.json["timings"]["generate"]["finished_at_ms"]
            .as_u64()
            .is_some(),
        "{}",
        s.json
    );
    assert!(
        s.json["completed"]
            .as_array()
            .unwrap()
            .contains(&json!("generate:1")),
        "{}",
        s.json
    );
    let dispatch = tokio::spawn(run_worker(
        options(Stage::Dispatch),
        store.clone(),
        |env: TaskEnvelope| async move {
            // Only the acknowledgement is completed here; the final answer waits.
            if env.reply == Some(contexten_envelope::ReplyKind::Ack) {
                Outcome::Done
            } else {
                Outcome::later(Stage::Dispatch, std::time::Duration::from_secs(60), env)
            }
        },
        shutdown.clone(),
    ));
    let s = eventually(WAIT, "the ack completed", || async {
        let s = ingest
            .get(&format!("/v1/tasks/{id}"), Some(&token("both")))
            .await;
        let completed = s.json["completed"].as_array().cloned().unwrap_or_default();
        if completed.contains(&json!("dispatch:0")) {
            Ok(s)
        } else {
            Err(s.json)
        }
    })
    .await;
    assert_ne!(
        s.json["record_state"], "done",
        "the ack must not mark the task done: {}",
        s.json
    );
    shutdown.cancel();
    let _ = generate.await;
    let _ = dispatch.await;
}

#[tokio::test]
async fn repeated_idempotency_key_creates_nothing_new() {
    let ingest = TestIngest::start().await;
    let a = ingest
        .api(&token("submit"), &request(), Some("order-1"))
        .await;
    assert_eq!(a.status, 202);
    ingest.take_task_and_ack(Stage::Context).await;
    let again = ingest
        .api(&token("submit"), &request(), Some("order-1"))
        .await;
    assert_eq!(
        (again.status, again.json["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(again.json["task_id"], a.json["task_id"]);
    // Keys are per token holder: another client's "order-1" is its own request.
    let other = ingest
        .api(&token("both"), &request(), Some("order-1"))
        .await;
    assert_eq!(other.status, 202);
    ingest.take_task_and_ack(Stage::Context).await;
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn token_scopes_are_enforced() {
    let ingest = TestIngest::start().await;
    let a = ingest
        .post(
            "/v1/tasks",
            &[("content-type", "application/json".into())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((a.status, a.error()), (401, "unauthorized"));
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    let a = ingest.api("ctx_tok_unknown", &request(), None).await;
    assert_eq!((a.status, a.error()), (401, "unauthorized"));
    let a = ingest.api(&token("read"), &request(), None).await;
    assert_eq!((a.status, a.error()), (403, "forbidden"));
    let a = ingest
        .get(
            &format!("/v1/tasks/{}", contexten_envelope::TaskId::new()),
            Some(&token("submit")),
        )
        .await;
    assert_eq!((a.status, a.error()), (403, "forbidden"));
    let a = ingest
        .get(
            &format!("/v1/tasks/{}", contexten_envelope::TaskId::new()),
            None,
        )
        .await;
    assert_eq!(a.status, 401);
    let mut operator = request();
    operator["priority"] = json!("operator");
    let a = ingest.api(&token("both"), &operator, None).await;
    assert_eq!((a.status, a.error()), (403, "forbidden"));
    let a = ingest.api(&token("admin"), &operator, None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let (task, _) = ingest.take_task_and_ack(Stage::Context).await;
    assert_eq!(task.priority, Priority::Operator);
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn api_bad_input_gets_the_right_4xx() {
    let ingest = TestIngest::start().await;
    let auth = ("authorization", format!("Bearer {}", token("submit")));
    let json_type = ("content-type", "application/json".to_owned());
    let a = ingest
        .post(
            "/v1/tasks",
            &[auth.clone(), json_type.clone()],
            b"{\"text\": ".to_vec(),
        )
        .await;
    assert_eq!((a.status, a.error()), (400, "malformed_json"));
    let a = ingest
        .post(
            "/v1/tasks",
            &[auth.clone(), ("content-type", "text/plain".into())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((a.status, a.error()), (415, "unsupported_media_type"));
    for bad in [
        json!({"text": ""}),
        json!({"text": "x", "strategy": "magic"}),
        json!({"text": "x", "callback_url": "ftp://x"}),
        json!({"text": "x", "repository_url": "file:///etc"}),
        json!({"text": "x", "unknown_field": 1}),
    ] {
        let a = ingest
            .post(
                "/v1/tasks",
                &[auth.clone(), json_type.clone()],
                serde_json::to_vec(&bad).unwrap(),
            )
            .await;
        assert_eq!((a.status, a.error()), (400, "invalid_request"), "{bad}");
    }
    let big = json!({"text": "x".repeat(2 << 20)});
    let a = ingest
        .post(
            "/v1/tasks",
            &[auth, json_type],
            serde_json::to_vec(&big).unwrap(),
        )
        .await;
    assert_eq!((a.status, a.error()), (413, "body_too_large"));
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn openapi_document_describes_the_task_api() {
    let ingest = TestIngest::start().await;
    let a = ingest.get("/v1/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert!(a.json["openapi"].as_str().unwrap().starts_with("3."));
    assert!(a.json["paths"]["/v1/tasks"]["post"].is_object());
    assert!(a.json["paths"]["/v1/tasks/{id}"]["get"].is_object());
    assert!(
        a.json["components"]["schemas"]["CreateTask"]["properties"]["repository_url"].is_object()
    );
    assert!(a.json["components"]["securitySchemes"]["bearer"].is_object());
    let health = ingest.get("/healthz", None).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn api_tokens_file_is_reloaded_when_it_changes() {
    use ingest::tokens::{RELOAD_INTERVAL, TokenStore, hash_token};
    let dir = std::env::temp_dir().join(format!("ctx-tokens-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.toml");
    let (old, new) = (token("old"), token("new"));
    let write = |t: &str| {
        let file = format!(
            "[[tokens]]\nname = \"rotating\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n",
            hex::encode(hash_token(t))
        );
        std::fs::write(&path, file).unwrap();
    };
    write(&old);
    let store = TokenStore::load(Some(path.clone()), None).unwrap();
    assert!(store.authenticate(&old).is_some());
    let shutdown = contexten_broker::CancellationToken::new();
    tokio::spawn(store.clone().watch(shutdown.clone()));
    write(&new);
    eventually(RELOAD_INTERVAL * 5, "the tokens file reloaded", || async {
        store.authenticate(&new).is_some()
    })
    .await;
    assert!(
        store.authenticate(&old).is_none(),
        "the rotated-out token is revoked"
    );
    // A broken file keeps the previous list.
    std::fs::write(&path, "not toml [[").unwrap();
    tokio::time::sleep(RELOAD_INTERVAL * 2).await;
    assert!(store.authenticate(&new).is_some());
    shutdown.cancel();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `stage` with `handler` until the returned token is cancelled.
fn worker<H: contexten_broker::Handler>(
    ingest: &TestIngest,
    stage: Stage,
    handler: H,
) -> (
    contexten_broker::CancellationToken,
    tokio::task::JoinHandle<Result<(), contexten_broker::BrokerError>>,
) {
    let store = Store::new(&ingest.state.cfg.redis, ingest.names.clone()).unwrap();
    let shutdown = contexten_broker::CancellationToken::new();
    let options = WorkerOptions {
        service: "test-worker",
        stage,
        broker: ingest.state.cfg.broker.clone(),
        readiness: Readiness::new(&["broker"]),
    };
    let handle = tokio::spawn(run_worker(options, store, handler, shutdown.clone()));
    (shutdown, handle)
}

/// A task with no callback (`ReplyTarget::None`), answered only through the API.
async fn submit_without_callback(ingest: &TestIngest) -> String {
    let mut body = request();
    body.as_object_mut().unwrap().remove("callback_url");
    body["strategy"] = json!("generate");
    let a = ingest.api(&token("both"), &body, None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    a.json["task_id"].as_str().unwrap().to_owned()
}

/// How long the fake generator takes, so a waiting client really waits.
const GENERATION_TIME: std::time::Duration = std::time::Duration::from_millis(1500);
/// The wait the client asks for.
const CLIENT_WAIT_SECS: u64 = 10;

#[tokio::test]
async fn a_waiting_client_gets_the_answer_as_soon_as_it_lands() {
    let ingest = TestIngest::start().await;
    let id = submit_without_callback(&ingest).await;
    let generate = worker(
        &ingest,
        Stage::Generate,
        |mut env: TaskEnvelope| async move {
            assert_eq!(env.source.reply_to, ReplyTarget::None);
            tokio::time::sleep(GENERATION_TIME).await;
            let mut result = TaskResult::failure(Stage::Generate, "unused", "Added a retry.");
            result.kind = ResultKind::Code;
            result.reason = None;
            result.language = Some("rust".into());
            result.text = Some("```rust\nfn fetch_page() {}\n```".into());
            result
                .extra
                .insert("prompt".into(), json!("never shown through the API"));
            env.result = Some(result);
            env.reply = Some(ReplyKind::Final);
            env.cost.llm_calls = 1;
            env.cost.llm_prompt_tokens = 1200;
            Outcome::forward(Stage::Dispatch, env)
        },
    );
    // The dispatcher has nothing to post for a task without a target.
    let dispatch = worker(&ingest, Stage::Dispatch, |_env: TaskEnvelope| async move {
        Outcome::Done
    });

    let started = std::time::Instant::now();
    let a = ingest
        .get(
            &format!("/v1/tasks/{id}?wait={CLIENT_WAIT_SECS}"),
            Some(&token("both")),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "done", "{}", a.json);
    let answer = &a.json["answer"];
    assert_eq!(answer["kind"], "code");
    assert_eq!(answer["text"], "```rust\nfn fetch_page() {}\n```");
    assert_eq!(answer["language"], "rust");
    assert_eq!(answer["summary"], "Added a retry.");
    assert_eq!(answer["cost"]["llm_calls"], 1);
    assert_eq!(answer["cost"]["llm_prompt_tokens"], 1200);
    assert_eq!(answer["text_truncated"], false);
    assert!(!a.json.to_string().contains("never shown"), "{}", a.json);
    assert!(
        elapsed >= GENERATION_TIME,
        "answered before the answer existed: {elapsed:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(CLIENT_WAIT_SECS / 2),
        "the wait did not end when the answer landed: {elapsed:?}"
    );
    // Final stays final: a plain read gives the same answer at once.
    let again = ingest
        .get(&format!("/v1/tasks/{id}"), Some(&token("both")))
        .await;
    assert_eq!(again.json["answer"], a.json["answer"]);
    for (shutdown, handle) in [generate, dispatch] {
        shutdown.cancel();
        let _ = handle.await;
    }
}

#[tokio::test]
async fn a_failed_task_answers_with_its_reason_code_and_sentence() {
    let ingest = TestIngest::start().await;
    let id = submit_without_callback(&ingest).await;
    let generate = worker(&ingest, Stage::Generate, |_env: TaskEnvelope| async move {
        Outcome::dead(
            Reason::LlmRejected,
            "provider said 400 at https://llm.internal/v1",
        )
    });
    let dispatch = worker(&ingest, Stage::Dispatch, |_env: TaskEnvelope| async move {
        Outcome::Done
    });
    let a = ingest
        .get(
            &format!("/v1/tasks/{id}?wait={CLIENT_WAIT_SECS}"),
            Some(&token("both")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "failed", "{}", a.json);
    let answer = &a.json["answer"];
    assert_eq!(answer["kind"], "failure");
    assert_eq!(answer["reason"], "llm_rejected");
    assert_eq!(
        answer["summary"],
        contexten_broker::failure_text(Stage::Generate, "llm_rejected", None)
    );
    assert!(
        !a.json.to_string().contains("llm.internal"),
        "the detail stays with operators: {}",
        a.json
    );
    for (shutdown, handle) in [generate, dispatch] {
        shutdown.cancel();
        let _ = handle.await;
    }
}

#[tokio::test]
async fn a_bad_wait_is_a_400_and_a_short_wait_ends_with_the_state_as_it_is() {
    let ingest = TestIngest::start().await;
    let id = submit_without_callback(&ingest).await;
    for query in ["wait=31", "wait=-1", "wait=1.5", "wait=soon", "wiat=5"] {
        let a = ingest
            .get(&format!("/v1/tasks/{id}?{query}"), Some(&token("both")))
            .await;
        assert_eq!((a.status, a.error()), (400, "invalid_request"), "{query}");
        assert!(
            a.json["message"].as_str().unwrap().contains("wait"),
            "{query}: {}",
            a.json
        );
    }
    let started = std::time::Instant::now();
    let a = ingest
        .get(&format!("/v1/tasks/{id}?wait=1"), Some(&token("both")))
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "queued");
    assert!(a.json["answer"].is_null());
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn the_openapi_document_parses_and_describes_answers_states_errors_and_the_callback() {
    let ingest = TestIngest::start().await;
    let a = ingest.get("/v1/openapi.json", None).await;
    assert_eq!(a.status, 200);
    let spec = oas3::from_json(a.json.to_string()).expect("a valid OpenAPI 3.1 document");
    spec.validate_version().expect("OpenAPI 3.1");
    let components = spec.components.as_ref().expect("components");
    for schema in [
        "TaskStatus",
        "TaskState",
        "TaskAnswer",
        "AnswerKind",
        "Cost",
        "ErrorBody",
        "CallbackPayload",
        "CallbackData",
        "CallbackResult",
    ] {
        assert!(components.schemas.contains_key(schema), "{schema} missing");
    }
    let schemas = &a.json["components"]["schemas"];
    assert_eq!(
        schemas["TaskState"]["enum"],
        json!(["queued", "running", "retrying", "done", "failed"])
    );
    for field in ["text", "links", "cost", "fallback_reason", "reason"] {
        assert!(
            schemas["TaskAnswer"]["properties"][field].is_object(),
            "TaskAnswer.{field}"
        );
    }
    let get = spec
        .operation(&axum::http::Method::GET, "/v1/tasks/{id}")
        .expect("GET /v1/tasks/{id}");
    assert!(
        get.parameters(&spec)
            .unwrap()
            .iter()
            .any(|p| p.name == "wait")
    );
    let create = spec
        .operation(&axum::http::Method::POST, "/v1/tasks")
        .expect("POST /v1/tasks");
    let callbacks = create.callbacks(&spec);
    let reply = callbacks["taskReply"].paths["{$request.body#/callback_url}"]
        .post
        .as_ref()
        .expect("the callback is a POST");
    let headers: Vec<String> = reply
        .parameters(&spec)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        headers,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    assert!(
        a.json
            .to_string()
            .contains("#/components/schemas/CallbackPayload"),
        "the callback body refers to its schema"
    );
}

#[test]
fn the_callback_schema_matches_the_body_the_dispatcher_sends() {
    use contexten_envelope::{Request, Source};
    let mut env = TaskEnvelope::new(
        Source {
            kind: SourceKind::API,
            delivery_id: Some("client:order-1".into()),
            requested_by: Some("client".into()),
            reply_to: ReplyTarget::Callback {
                url: "https://example.test/hooks".into(),
            },
            extra: Default::default(),
        },
        Request::default(),
    );
    env.cost.api_calls.insert("github".into(), 2);
    let body = dispatcher::format::callback_body(&env, ReplyKind::Ack, env.created_at_ms);
    let ack: ingest::api::CallbackPayload = serde_json::from_slice(&body).expect("ack body");
    assert!(ack.data.result.is_none());
    assert_eq!(
        serde_json::to_value(&ack).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    );
    let mut result = TaskResult::failure(Stage::Agent, "unused", "Opened a pull request.");
    result.kind = ResultKind::AgentRun;
    result.reason = None;
    result.web_url = Some("https://codegen.example/run/7".into());
    result.pull_requests = vec!["https://github.com/octo-org/hello-world/pull/3".into()];
    env.result = Some(result);
    for kind in [ReplyKind::Progress, ReplyKind::Final, ReplyKind::Failure] {
        let body = dispatcher::format::callback_body(&env, kind, env.created_at_ms + 5);
        let parsed: ingest::api::CallbackPayload = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}: {}", String::from_utf8_lossy(&body)));
        assert_eq!(parsed.data.cost.api_calls["github"], 2);
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            "the schema's types carry every field of the body"
        );
    }
}

#[tokio::test]
async fn a_task_given_up_on_reads_as_failed_even_before_its_failure_answer_is_stored() {
    let ingest = TestIngest::start().await;
    let id = submit_without_callback(&ingest).await;
    // No dispatch worker: the failure answer waits in its queue.
    let generate = worker(&ingest, Stage::Generate, |_env: TaskEnvelope| async move {
        Outcome::dead(
            Reason::RepositoryNotFound,
            "git said 404 for a private host",
        )
    });
    let started = std::time::Instant::now();
    let a = ingest
        .get(
            &format!("/v1/tasks/{id}?wait={CLIENT_WAIT_SECS}"),
            Some(&token("both")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "failed", "{}", a.json);
    assert_eq!(a.json["record_state"], "dead_lettered:repository_not_found");
    assert_eq!(a.json["answer"]["reason"], "repository_not_found");
    assert_eq!(
        a.json["answer"]["summary"],
        contexten_broker::failure_text(Stage::Generate, "repository_not_found", None)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(CLIENT_WAIT_SECS / 2),
        "waited out the whole wait for an answer that cannot come: {:?}",
        started.elapsed()
    );
    generate.0.cancel();
    let _ = generate.1.await;
}

#[tokio::test]
async fn an_answer_whose_callback_was_refused_is_still_readable() {
    let ingest = TestIngest::start().await;
    let mut body = request();
    body["strategy"] = json!("generate");
    let a = ingest.api(&token("both"), &body, None).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let id = a.json["task_id"].as_str().unwrap().to_owned();
    let generate = worker(
        &ingest,
        Stage::Generate,
        |mut env: TaskEnvelope| async move {
            let mut result = TaskResult::failure(Stage::Generate, "unused", "A diff.");
            result.kind = ResultKind::Diff;
            result.reason = None;
            result.text = Some("--- a/x\n+++ b/x\n".into());
            env.result = Some(result);
            env.reply = Some(ReplyKind::Final);
            Outcome::forward(Stage::Dispatch, env)
        },
    );
    // The dispatcher refuses the callback's destination; the final answer is
    // dead-lettered there, but the requester can still read it.
    let dispatch = worker(&ingest, Stage::Dispatch, |env: TaskEnvelope| async move {
        match env.reply {
            Some(ReplyKind::Ack) => Outcome::Done,
            _ => Outcome::dead(Reason::OutboundRefused, "callback host is private"),
        }
    });
    let a = ingest
        .get(
            &format!("/v1/tasks/{id}?wait={CLIENT_WAIT_SECS}"),
            Some(&token("both")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["state"], "done", "{}", a.json);
    assert_eq!(a.json["answer"]["kind"], "diff");
    assert_eq!(a.json["answer"]["text"], "--- a/x\n+++ b/x\n");
    eventually(WAIT, "dead-lettered as outbound_refused", || async {
        ingest
            .get(&format!("/v1/tasks/{id}"), Some(&token("both")))
            .await
            .json["record_state"]
            == "dead_lettered:outbound_refused"
    })
    .await;
    for (shutdown, handle) in [generate, dispatch] {
        shutdown.cancel();
        let _ = handle.await;
    }
}
