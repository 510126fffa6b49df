//! One trace per task (docs/design.md §8): a GitHub comment and an API task go
//! through the fleet while it exports spans to an in-process OTLP receiver;
//! each task's spans form one trace across the services on its path, in causal
//! order, and every log line naming the task carries that trace's id.

use crate::{github_comment, sample_repo};
use contexten_fleet_tests::harness::*;
use contexten_fleet_tests::otlp::{CLIENT, CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The five binaries' log files (the harness writes `<dir>/<name>.log`).
const LOGS: [&str; 5] = [
    "ingest",
    "context-worker",
    "generator-worker",
    "agent-worker",
    "dispatcher",
];

#[tokio::test]
async fn each_task_is_one_trace_across_the_fleet_and_its_log_lines_carry_its_trace_id() {
    let receiver = OtlpReceiver::start().await;
    let fleet = Fleet::start(FleetOptions {
        extra: receiver.fleet_env(),
        ..FleetOptions::default()
    })
    .await
    .expect("fleet starts");
    let repo = sample_repo(fleet.dir.path());

    let payload = github_comment(
        &repo,
        9,
        4901,
        "/contexten generate add a parse_duration function to app/timeutil.py next to format_duration",
    );
    let response = fleet
        .github_webhook("issue_comment", "d-gh-trace", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let github_task = task_id_of(response.json().await.unwrap());

    // The agent strategy's path: ingest → agent → dispatch.
    let payload = github_comment(
        &repo,
        10,
        4902,
        "/contexten agent refactor the duration helpers and open a PR",
    );
    let response = fleet
        .github_webhook("issue_comment", "d-gh-trace-agent", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let agent_task = task_id_of(response.json().await.unwrap());

    let callback = format!("{}/hooks/contexten", fleet.fakes.callback.uri());
    // The API adopts the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = fleet
        .http
        .post(format!("{}/v1/tasks", fleet.ingest_url))
        .bearer_auth(api_token())
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .json(
            &json!({"text": "write a new module app/parsing.py with a parse_duration function",
                      "repository_url": repo, "strategy": "context", "callback_url": callback}),
        )
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(response.status(), 202);
    let api_task = task_id_of(response.json().await.unwrap());

    let mut services = std::collections::BTreeSet::new();
    for (task, answer_peer) in [
        (&github_task, "github"),
        (&api_task, "callback"),
        (&agent_task, "github"),
    ] {
        let is_agent = task == &agent_task;
        // The trace is complete once every link of the chain has arrived.
        let missing = std::sync::Mutex::new(String::new());
        let spans = eventually(FLOW_WITHIN, || {
            let missing = &missing;
            let receiver = &receiver;
            async move {
                let spans = receiver.spans().await;
                let Some(trace) = trace_of(&spans, task) else {
                    *missing.lock().unwrap() = "no ingest server span names the task".into();
                    return None;
                };
                let mine: Vec<ReceivedSpan> =
                    spans.into_iter().filter(|s| s.trace_id == trace).collect();
                let checked = if is_agent {
                    check_agent_chain(&mine)
                } else {
                    check_causal_chain(&mine, answer_peer)
                };
                match checked {
                    Ok(()) => Some(mine),
                    Err(why) => {
                        *missing.lock().unwrap() = why;
                        None
                    }
                }
            }
        })
        .await;
        let Some(spans) = spans else {
            panic!(
                "no complete trace for {task}: {}\n{}",
                missing.lock().unwrap(),
                fleet.logs(40)
            );
        };
        let trace = spans[0].trace_id.clone();
        // Every span naming the task is in this one trace.
        let all = receiver.spans().await;
        for span in all.iter().filter(|s| s.attr("task_id") == task.as_str()) {
            assert_eq!(span.trace_id, trace, "{span:#?}");
        }
        if task == &api_task {
            assert_eq!(
                trace, caller_trace,
                "the API adopts the caller's traceparent"
            );
        }
        check_logs(&fleet, task, &trace);
        services.extend(spans.iter().map(|s| s.service.clone()));
    }
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [
            "agent-worker",
            "context-worker",
            "dispatcher",
            "generator-worker",
            "ingest"
        ],
        "the traces cover the five binaries"
    );
    fleet.stop().await;
}

fn task_id_of(accepted: Value) -> String {
    accepted["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a task id: {accepted}"))
        .to_owned()
}

/// The trace of the ingest server span that names `task`.
fn trace_of(spans: &[ReceivedSpan], task: &str) -> Option<String> {
    spans
        .iter()
        .find(|s| s.service == "ingest" && s.kind == SERVER && s.attr("task_id") == task)
        .map(|s| s.trace_id.clone())
}

/// Whether `ancestor` is `span` or one of its ancestors.
fn descends(by_id: &HashMap<&str, &ReceivedSpan>, span: &ReceivedSpan, ancestor: &str) -> bool {
    let mut current = Some(span);
    while let Some(s) = current {
        if s.span_id == ancestor {
            return true;
        }
        current = by_id.get(s.parent_span_id.as_str()).copied();
    }
    false
}

/// ingest server → publish → process context (when the task's strategy has
/// that stage) → publish → process generate → LLM client → publish → process
/// dispatch → answer client, each a descendant of the one before, with the
/// conventions' attributes; `Err` names the first link missing.
fn check_causal_chain(spans: &[ReceivedSpan], answer_peer: &str) -> Result<(), String> {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let find = |what: &str, after: &ReceivedSpan, pick: &dyn Fn(&ReceivedSpan) -> bool| {
        spans
            .iter()
            .find(|s| pick(s) && s.span_id != after.span_id && descends(&by_id, s, &after.span_id))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} {} parent {}",
                            s.service, s.name, s.span_id, s.parent_span_id
                        )
                    })
                    .collect();
                format!(
                    "no {what} under {} ({}): {names:#?}",
                    after.name, after.service
                )
            })
    };
    let server = spans
        .iter()
        .find(|s| s.service == "ingest" && s.kind == SERVER)
        .cloned()
        .ok_or("no ingest server span")?;
    let publish = |stage: &'static str| {
        move |s: &ReceivedSpan| s.kind == PRODUCER && s.name == format!("publish {stage}")
    };
    let process = |service: &'static str, stage: &'static str| {
        move |s: &ReceivedSpan| {
            s.kind == CONSUMER && s.service == service && s.name == format!("process {stage}")
        }
    };
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    let mut before_generate = server.clone();
    if let Ok(to_context) = find("publish context", &server, &publish("context")) {
        let context = find(
            "process context",
            &to_context,
            &process("context-worker", "context"),
        )?;
        if context.attr("contexten.outcome") != "forward" {
            return Err(format!("the context stage did not forward: {context:#?}"));
        }
        producers.push(to_context);
        before_generate = context.clone();
        consumers.push(context);
    }
    let to_generate = find("publish generate", &before_generate, &publish("generate"))?;
    let generate = find(
        "process generate",
        &to_generate,
        &process("generator-worker", "generate"),
    )?;
    let llm = find("LLM client span", &generate, &|s| {
        s.kind == CLIENT && s.service == "generator-worker"
    })?;
    let to_dispatch = find("publish dispatch", &generate, &publish("dispatch"))?;
    let dispatch = find(
        "process dispatch",
        &to_dispatch,
        &process("dispatcher", "dispatch"),
    )?;
    let answer = find("answer client span", &dispatch, &|s| {
        s.kind == CLIENT && s.attr("peer.service") == answer_peer
    })?;

    assert_eq!(server.attr("http.request.method"), "POST");
    assert!(
        server.attr("http.route").starts_with("/webhooks/")
            || server.attr("http.route") == "/v1/tasks",
        "{server:#?}"
    );
    assert!(
        server.attr("http.response.status_code").starts_with('2'),
        "{server:#?}"
    );
    assert!(!server.attr("correlation_id").is_empty(), "{server:#?}");
    assert!(
        llm.start_ns <= to_dispatch.start_ns,
        "the LLM answers before the publish"
    );
    assert_eq!(
        generate.attr("contexten.outcome"),
        "forward",
        "{generate:#?}"
    );
    producers.extend([to_generate, to_dispatch]);
    consumers.extend([generate, dispatch]);
    for producer in &producers {
        assert_eq!(
            producer.attr("messaging.system"),
            "rabbitmq",
            "{producer:#?}"
        );
        assert!(
            !producer.attr("messaging.destination.name").is_empty(),
            "{producer:#?}"
        );
        assert!(
            !producer
                .attr("messaging.rabbitmq.destination.routing_key")
                .is_empty(),
            "{producer:#?}"
        );
        assert!(
            !producer.attr("messaging.message.id").is_empty(),
            "{producer:#?}"
        );
    }
    for consumer in &consumers {
        assert_eq!(
            consumer.attr("messaging.system"),
            "rabbitmq",
            "{consumer:#?}"
        );
        assert!(
            !consumer.attr("messaging.destination.name").is_empty(),
            "{consumer:#?}"
        );
        assert!(
            !consumer.attr("messaging.message.id").is_empty(),
            "{consumer:#?}"
        );
        assert!(!consumer.attr("task_id").is_empty(), "{consumer:#?}");
    }
    for client in [&llm, &answer] {
        assert!(
            !client.attr("http.request.method").is_empty(),
            "{client:#?}"
        );
        assert_eq!(client.attr("server.address"), "127.0.0.1", "{client:#?}");
        assert!(
            client.attr("http.response.status_code").starts_with('2'),
            "{client:#?}"
        );
    }
    Ok(())
}

/// ingest server → publish agent → process agent → Codegen client → publish
/// dispatch → process dispatch → GitHub client.
fn check_agent_chain(spans: &[ReceivedSpan]) -> Result<(), String> {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let find = |what: &str, after: &ReceivedSpan, pick: &dyn Fn(&ReceivedSpan) -> bool| {
        spans
            .iter()
            .find(|s| pick(s) && s.span_id != after.span_id && descends(&by_id, s, &after.span_id))
            .cloned()
            .ok_or_else(|| format!("no {what} under {} ({})", after.name, after.service))
    };
    let server = spans
        .iter()
        .find(|s| s.service == "ingest" && s.kind == SERVER)
        .cloned()
        .ok_or("no ingest server span")?;
    let to_agent = find("publish agent", &server, &|s| {
        s.kind == PRODUCER && s.name == "publish agent"
    })?;
    let agent = find("process agent", &to_agent, &|s| {
        s.kind == CONSUMER && s.service == "agent-worker" && s.name == "process agent"
    })?;
    let codegen = find("Codegen client span", &agent, &|s| {
        s.kind == CLIENT && s.attr("peer.service") == "codegen"
    })?;
    let to_dispatch = find("publish dispatch", &agent, &|s| {
        s.kind == PRODUCER && s.service == "agent-worker" && s.name == "publish dispatch"
    })?;
    let dispatch = find("process dispatch", &to_dispatch, &|s| {
        s.kind == CONSUMER && s.service == "dispatcher"
    })?;
    find("GitHub client span", &dispatch, &|s| {
        s.kind == CLIENT && s.attr("peer.service") == "github"
    })?;
    assert_eq!(codegen.attr("server.address"), "127.0.0.1", "{codegen:#?}");
    assert!(
        codegen.attr("http.response.status_code").starts_with('2'),
        "{codegen:#?}"
    );
    Ok(())
}

/// Every line of the five logs that names `task` carries `trace` (and a span id).
fn check_logs(fleet: &Fleet, task: &str, trace: &str) {
    let mut naming = 0;
    for name in LOGS {
        let path = fleet.dir.path().join(format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(task)) {
            naming += 1;
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("{name}: not a JSON line: {line}"));
            assert_eq!(parsed["trace_id"], trace, "{name}: {line}");
            assert_eq!(
                parsed["span_id"].as_str().map(str::len),
                Some(16),
                "{name}: {line}"
            );
        }
    }
    assert!(naming > 0, "no log line names {task}");
}
