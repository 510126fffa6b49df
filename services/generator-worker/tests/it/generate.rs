//! The handler called directly against the fake provider, one test per "Done
//! when" item of the issue (and a few around them).

use crate::helpers::*;
use contexten_broker::{Handler, Outcome};
use contexten_envelope::{ReplyKind, ResultKind, Stage, Strategy};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn a_fenced_code_answer_is_extracted_validated_and_sent_to_dispatch() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(completion(&format!("```python\n{VALID_PY}```")))
        .expect(1)
        .mount(&fx.server)
        .await;
    let handler = fx.handler(&[]);
    let env = envelope(
        "add parse_duration to parse 1h30m",
        "python",
        "parse_duration",
    );
    let out = forwarded(handler.handle(env).await, Stage::Dispatch);

    let result = out.result.expect("a result");
    assert_eq!(result.kind, ResultKind::Code);
    assert_eq!(result.language.as_deref(), Some("python"));
    assert_eq!(result.text.as_deref(), Some(VALID_PY));
    assert!(
        result.summary.contains("parses as python"),
        "{}",
        result.summary
    );
    assert_eq!(out.reply, Some(ReplyKind::Final));
    assert_eq!(out.fallback_reason, None);
    assert_eq!(
        (
            out.cost.llm_calls,
            out.cost.llm_prompt_tokens,
            out.cost.llm_completion_tokens
        ),
        (1, 120, 40)
    );
    // The prompt follows the contract: model, low temperature, [system, user]
    // carrying the request, the symbol and the context worker's prompt.
    let body = &bodies(&fx.server).await[0];
    assert_eq!(body["model"], "gpt-4.1");
    assert!((body["temperature"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    assert_eq!(body["messages"][0]["role"], "system");
    let user = body["messages"][1]["content"].as_str().unwrap();
    for part in [
        "add parse_duration to parse 1h30m",
        "`parse_duration`",
        "def parse_time(text)",
    ] {
        assert!(user.contains(part), "prompt lacks {part:?}:\n{user}");
    }
}

#[tokio::test]
async fn a_prose_plus_code_answer_is_extracted_and_validated() {
    let fx = Fixture::start().await;
    let answer = format!(
        "Here is an implementation that handles hours, minutes and seconds:\n\n```py\n{VALID_PY}```\n\nCall it with a string such as `1h30m`; it returns seconds."
    );
    Mock::given(method("POST"))
        .respond_with(completion(&answer))
        .expect(1)
        .mount(&fx.server)
        .await;
    let out = forwarded(
        fx.handler(&[])
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    let result = out.result.unwrap();
    assert_eq!(result.kind, ResultKind::Code);
    assert_eq!(result.text.as_deref(), Some(VALID_PY));
}

/// A task of a strategy that includes the agent (the only kind that may fall back).
fn agent_task(text: &str, language: &str, symbol: &str) -> contexten_envelope::TaskEnvelope {
    let mut env = envelope(text, language, symbol);
    env.strategy = Strategy::Agent;
    env
}

#[tokio::test]
async fn an_invalid_answer_gets_one_repair_round_then_falls_back_to_the_agent() {
    let fx = Fixture::start().await;
    let broken = "```python\ndef parse_duration(text):\n    return (int(text) +\n```";
    Mock::given(method("POST"))
        .respond_with(completion(broken))
        .expect(2)
        .mount(&fx.server)
        .await;
    let out = forwarded(
        fx.handler(&[])
            .handle(agent_task(
                "write parse_duration",
                "python",
                "parse_duration",
            ))
            .await,
        Stage::Agent,
    );
    let reason = out.fallback_reason.expect("a fallback reason");
    assert_eq!(
        reason,
        "generation_invalid: the generated code was still invalid after one repair (it did not parse or its diff did not apply)",
        "a code and one sentence, not the validation detail"
    );
    assert!(out.result.is_none());
    assert_eq!(out.cost.llm_calls, 2);
    // The repair round sent the first answer back with the validation error.
    let repair = &bodies(&fx.server).await[1]["messages"];
    assert_eq!(repair.as_array().unwrap().len(), 4);
    assert_eq!(repair[2]["role"], "assistant");
    assert_eq!(repair[2]["content"], broken);
    let error = repair[3]["content"].as_str().unwrap();
    assert!(error.contains("python syntax error"), "{error}");
    // A failed generation is not cached.
    assert!(fx.redis_entries("cache:generator:*").await.is_empty());
}

#[tokio::test]
async fn an_invalid_answer_to_a_generation_request_is_a_failure_and_never_an_agent_run() {
    let fx = Fixture::start().await;
    let broken = "```python\ndef parse_duration(text):\n    return (int(text) +\n```";
    Mock::given(method("POST"))
        .respond_with(completion(broken))
        .expect(4)
        .mount(&fx.server)
        .await;
    let handler = fx.handler(&[]);
    for strategy in [Strategy::Simple, Strategy::Context] {
        let mut task = envelope(
            &format!("write parse_duration ({})", strategy.as_str()),
            "python",
            "parse_duration",
        );
        task.strategy = strategy;
        match handler.handle(task).await {
            // The runtime turns the dead letter into the requester's failure
            // answer (reason code + one sentence); nothing goes to the agent.
            Outcome::DeadLetter(reason) => {
                assert_eq!(reason.code, "generation_invalid");
                assert!(reason.detail.contains("python syntax error"), "{reason:?}");
            }
            other => panic!("{strategy:?}: expected a dead letter, got {other:?}"),
        }
    }
    assert_eq!(handler.stats().fallbacks, 0);
}

#[tokio::test]
async fn a_repaired_answer_is_accepted() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(completion("I would write it like this: parse the units."))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fx.server)
        .await;
    Mock::given(method("POST"))
        .respond_with(completion(VALID_PY))
        .expect(1)
        .mount(&fx.server)
        .await;
    let out = forwarded(
        fx.handler(&[])
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    let result = out.result.unwrap();
    assert_eq!(result.text.as_deref(), Some(VALID_PY));
    assert!(result.summary.contains("repaired"), "{}", result.summary);
    assert_eq!(out.cost.llm_calls, 2);
}

#[tokio::test]
async fn a_429_retry_after_is_honoured_before_calling_again() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(
            openai_error(
                429,
                "Rate limit reached for gpt-4.1",
                "requests",
                "rate_limit_exceeded",
            )
            .insert_header("retry-after", "1"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fx.server)
        .await;
    let recorder = Recorder::new(completion(VALID_PY));
    Mock::given(method("POST"))
        .respond_with(recorder.clone())
        .expect(1)
        .mount(&fx.server)
        .await;
    let started = Instant::now();
    let out = forwarded(
        fx.handler(&[])
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    let second_call = recorder.arrivals.lock().unwrap()[0];
    assert!(
        second_call.duration_since(started) >= Duration::from_secs(1),
        "called again after {:?}",
        second_call.duration_since(started)
    );
    assert_eq!(out.result.unwrap().kind, ResultKind::Code);
    assert_eq!(out.cost.llm_calls, 2);
    // A 429 says "busy", not "down": the breaker stays closed.
    assert_ne!(fx.breaker_state().await.as_deref(), Some("open"));
}

#[tokio::test]
async fn a_long_retry_after_reschedules_the_task_instead_of_holding_it() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(
            openai_error(429, "Rate limit reached", "tokens", "rate_limit_exceeded")
                .insert_header("retry-after", "120"),
        )
        .expect(1)
        .mount(&fx.server)
        .await;
    let outcome = fx
        .handler(&[])
        .handle(envelope("write parse_duration", "python", "parse_duration"))
        .await;
    match outcome {
        Outcome::RetryAfter(delay, reason) => {
            assert_eq!(delay, Duration::from_secs(120));
            assert_eq!(reason.code, "llm_rate_limited");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_burst_of_5xx_opens_the_breaker_which_half_opens_and_closes_with_tasks_delayed_not_lost()
{
    let fx = Fixture::start().await;
    let settings = [
        ("LLM_MAX_RETRIES", "2"),
        ("LLM_BREAKER_FAILURES", "3"),
        ("LLM_BREAKER_OPEN_SECS", "1"),
        ("LLM_MAX_INLINE_WAIT_SECS", "5"),
    ];
    let handler = Arc::new(fx.handler(&settings));
    Mock::given(method("POST"))
        .respond_with(openai_error(
            503,
            "The server is overloaded",
            "server_error",
            "",
        ))
        .expect(3)
        .mount(&fx.server)
        .await;
    // The burst: three 5xx in a row open the breaker; that task goes to the agent.
    let out = forwarded(
        handler
            .handle(agent_task(
                "write parse_duration",
                "python",
                "parse_duration",
            ))
            .await,
        Stage::Agent,
    );
    let reason = out.fallback_reason.unwrap();
    assert_eq!(
        reason, "llm_unavailable: the language model could not be reached",
        "the provider's status stays in the logs"
    );
    assert_eq!(fx.breaker_state().await.as_deref(), Some("open"));
    fx.server.verify().await;

    // The server recovers (slowly, so the probe is visibly alone in flight).
    fx.server.reset().await;
    let recorder = Recorder::new(completion(VALID_PY).set_delay(Duration::from_millis(300)));
    Mock::given(method("POST"))
        .respond_with(recorder.clone())
        .expect(3)
        .mount(&fx.server)
        .await;
    let started = Instant::now();
    let tasks: Vec<_> = ["one", "two", "three"]
        .into_iter()
        .map(|n| {
            let handler = handler.clone();
            tokio::spawn(async move {
                handler
                    .handle(envelope(
                        &format!("write parse_duration {n}"),
                        "python",
                        "parse_duration",
                    ))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let out = forwarded(
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap(),
            Stage::Dispatch,
        );
        assert_eq!(
            out.result.unwrap().kind,
            ResultKind::Code,
            "delayed, not lost"
        );
    }
    let arrivals = recorder.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    // Delayed while open, then one probe alone (half-open), then the rest.
    assert!(
        arrivals[0].duration_since(started) >= Duration::from_millis(500),
        "{:?}",
        arrivals[0].duration_since(started)
    );
    assert!(arrivals[1].duration_since(arrivals[0]) >= Duration::from_millis(250));
    let stats = handler.stats();
    assert!(stats.probes >= 1 && stats.breaker_waits >= 3, "{stats:?}");
    assert_eq!(fx.breaker_state().await.as_deref(), Some("closed"));
}

#[tokio::test]
async fn a_cache_hit_makes_no_call_in_this_replica_or_another() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(completion(VALID_PY))
        .expect(1)
        .mount(&fx.server)
        .await;
    let handler = fx.handler(&[]);
    let first = forwarded(
        handler
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    assert_eq!(first.cost.llm_calls, 1);
    let again = forwarded(
        handler
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    let result = again.result.unwrap();
    assert_eq!(result.text.as_deref(), Some(VALID_PY));
    assert!(
        result.summary.contains("from the cache"),
        "{}",
        result.summary
    );
    assert_eq!(again.cost.llm_calls, 0);
    // Another replica (own memory and disk) finds it in Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let replica = generator_worker::GenerateHandler::new(
        &fx.config_in(other_dir.path(), &[]),
        fx.store.clone(),
    )
    .unwrap();
    let third = forwarded(
        replica
            .handle(envelope("write parse_duration", "python", "parse_duration"))
            .await,
        Stage::Dispatch,
    );
    assert_eq!(third.result.unwrap().text.as_deref(), Some(VALID_PY));
    assert_eq!(
        (handler.stats().cache_hits, replica.stats().model_calls),
        (1, 0)
    );
}

#[tokio::test]
async fn ten_identical_concurrent_tasks_make_one_call() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(completion(VALID_PY).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&fx.server)
        .await;
    let handler = Arc::new(fx.handler(&[]));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move {
                handler
                    .handle(envelope("write parse_duration", "python", "parse_duration"))
                    .await
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        let out = forwarded(
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap(),
            Stage::Dispatch,
        );
        assert_eq!(out.result.unwrap().text.as_deref(), Some(VALID_PY));
        calls += out.cost.llm_calls;
    }
    assert_eq!(calls, 1, "one task carries the call in its ledger");
    let stats = handler.stats();
    assert_eq!(stats.model_calls, 1);
    assert_eq!(stats.coalesced + stats.cache_hits, 9, "{stats:?}");
}

#[tokio::test]
async fn identical_tasks_on_two_replicas_make_one_call() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(completion(VALID_PY).set_delay(Duration::from_millis(400)))
        .expect(1)
        .mount(&fx.server)
        .await;
    let other_dir = tempfile::tempdir().unwrap();
    let replicas = [
        Arc::new(fx.handler(&[])),
        Arc::new(
            generator_worker::GenerateHandler::new(
                &fx.config_in(other_dir.path(), &[]),
                fx.store.clone(),
            )
            .unwrap(),
        ),
    ];
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let handler = replicas[i % 2].clone();
            tokio::spawn(async move {
                handler
                    .handle(envelope("write parse_duration", "python", "parse_duration"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let out = forwarded(
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap(),
            Stage::Dispatch,
        );
        assert_eq!(out.result.unwrap().text.as_deref(), Some(VALID_PY));
    }
    assert_eq!(
        replicas[0].stats().model_calls + replicas[1].stats().model_calls,
        1
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(std::fs::read(path).unwrap());
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn cached_entries_on_disk_and_in_redis_are_unreadable_in_clear_with_a_key() {
    let marker = b"parse_duration";
    for encrypted in [true, false] {
        let fx = Fixture::start().await;
        Mock::given(method("POST"))
            .respond_with(completion(VALID_PY))
            .expect(1)
            .mount(&fx.server)
            .await;
        let key = [
            "00112233445566778899aabbccddeeff",
            "00112233445566778899aabbccddeeff",
        ]
        .concat();
        let settings: Vec<(&str, &str)> = if encrypted {
            vec![("CACHE_ENCRYPTION_KEY", key.as_str())]
        } else {
            vec![]
        };
        let handler = fx.handler(&settings);
        let out = forwarded(
            handler
                .handle(envelope("write parse_duration", "python", "parse_duration"))
                .await,
            Stage::Dispatch,
        );
        assert_eq!(out.result.unwrap().text.as_deref(), Some(VALID_PY));
        let on_disk = files_under(fx.cache_dir.path());
        let in_redis: Vec<Vec<u8>> = fx
            .redis_entries("cache:generator:*")
            .await
            .into_iter()
            .filter(|(k, _)| !k.contains(":lock:"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            (on_disk.len(), in_redis.len()),
            (1, 1),
            "one entry per layer"
        );
        for entry in on_disk.iter().chain(&in_redis) {
            // Without a key the same check finds the code: the assertion has teeth.
            assert_eq!(contains(entry, marker), !encrypted, "encrypted={encrypted}");
        }
        // And the sealed entry still serves a hit to the key holder.
        if encrypted {
            let again = forwarded(
                handler
                    .handle(envelope("write parse_duration", "python", "parse_duration"))
                    .await,
                Stage::Dispatch,
            );
            assert_eq!(again.cost.llm_calls, 0);
        }
    }
}

#[tokio::test]
async fn without_a_provider_the_context_only_answer_lists_files_but_no_contents() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&fx.server)
        .await;
    let answer = |settings: &[(&str, &str)]| {
        let handler = fx.handler(settings);
        async move {
            forwarded(
                handler
                    .handle(envelope("write parse_duration", "python", "parse_duration"))
                    .await,
                Stage::Dispatch,
            )
        }
    };
    let out = answer(&[("LLM_API_KEY", "")]).await;
    assert_eq!(out.reply, Some(ReplyKind::Final));
    assert_eq!(out.cost.llm_calls, 0);
    let result = out.result.unwrap();
    assert_eq!(result.kind, ResultKind::ContextOnly);
    assert_eq!(result.reason.as_deref(), Some("no_llm_provider"));
    assert!(
        result.summary.contains("no LLM provider"),
        "{}",
        result.summary
    );
    let text = result.text.unwrap();
    assert!(
        text.contains("`app/timeutil.py` (score 0.91): parse_time (mentions durations)"),
        "{text}"
    );
    // Neither the context's file contents nor the prompt by default.
    for part in [
        "def parse_time(text)",
        "[system]",
        "[user]",
        "untrusted-data",
    ] {
        assert!(!text.contains(part), "answer has {part:?}:\n{text}");
    }

    // An operator may turn the prompt (contents included) on.
    let out = answer(&[("LLM_API_KEY", ""), ("GENERATOR_CONTEXT_ONLY_SOURCE", "1")]).await;
    let text = out.result.unwrap().text.unwrap();
    for part in [
        "Context only",
        "`app/timeutil.py` (score 0.91)",
        "[system]",
        "[user]",
        "write parse_duration",
        "def parse_time(text)",
    ] {
        assert!(text.contains(part), "answer lacks {part:?}:\n{text}");
    }
}

#[tokio::test]
async fn an_empty_request_is_dead_lettered_with_a_reason() {
    let fx = Fixture::start().await;
    let outcome = fx.handler(&[]).handle(envelope("  ", "python", "f")).await;
    assert!(
        matches!(&outcome, Outcome::DeadLetter(r) if r.code == "invalid_request"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_spent_fleet_quota_defers_the_task_without_counting_an_attempt() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .respond_with(completion(VALID_PY))
        .expect(1)
        .mount(&fx.server)
        .await;
    let settings = [
        ("LLM_REQUESTS_PER_MIN", "1"),
        ("LLM_MAX_INLINE_WAIT_SECS", "1"),
    ];
    let handler = fx.handler(&settings);
    let first = handler
        .handle(envelope("write parse_duration", "python", "parse_duration"))
        .await;
    forwarded(first, Stage::Dispatch);
    // The second task finds the one request of the minute taken.
    let mut second = envelope("write parse_size", "python", "parse_size");
    second.attempt = 3;
    match handler.handle(second).await {
        Outcome::Forward(next) => {
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].stage, Stage::Generate, "it waits in its own stage");
            let delay = next[0].delay.expect("after a delay");
            assert!(
                delay > Duration::from_secs(1) && delay <= Duration::from_secs(61),
                "{delay:?}"
            );
        }
        other => panic!("expected a deferral, not a counted retry: {other:?}"),
    }
}
