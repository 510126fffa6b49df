//! The generate handler against a zero-latency fake provider (a tiny in-process
//! axum server answering every `POST /v1/chat/completions` with a fixed, valid
//! completion): tasks per second and per-task overhead (p50, p99) for cache
//! misses (limiter, token bucket, breaker, Redis lock, one HTTP call, extraction,
//! tree-sitter check, cache write in memory, disk and Redis) and for cache hits
//! (memory; and Redis for a replica with a cold memory and disk).
//!
//! The handler is called directly: the broker runtime has its own benchmark
//! (`cargo bench -p contexten-broker`). Needs Redis on `REDIS_URL`.
//! `BENCH_TASKS` (default 2000) and `BENCH_CONCURRENCY` (default 16) tune the run.

use axum::Router;
use axum::routing::post;
use contexten_broker::{Handler, Outcome, Store};
use contexten_config::{Env, RedisSettings};
use contexten_envelope::{Hints, Names, ReplyTarget, Request, Source, SourceKind, TaskEnvelope};
use contexten_testkit::{TestPrefix, machine_redis_url};
use generator_worker::{GenerateHandler, GeneratorConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"```python\ndef parse_duration(text: str) -> int:\n    units = {\"h\": 3600, \"m\": 60, \"s\": 1}\n    total, number = 0, \"\"\n    for ch in text:\n        if ch.isdigit():\n            number += ch\n        else:\n            total += int(number) * units[ch]\n            number = \"\"\n    return total\n```"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":40,"total_tokens":160}}"#;

fn env_usize(name: &str, default: usize) -> usize {
    contexten_testkit::env_or(name, default)
}

fn task(i: usize) -> TaskEnvelope {
    let source = Source {
        kind: SourceKind::API,
        delivery_id: None,
        requested_by: Some("bench".into()),
        reply_to: ReplyTarget::None,
        extra: Default::default(),
    };
    TaskEnvelope::new(
        source,
        Request {
            text: format!("write parse_duration, variant {i}"),
            repository: None,
            hints: Hints {
                language: Some("python".into()),
                symbols: vec!["parse_duration".into()],
                ..Hints::default()
            },
            extra: Default::default(),
        },
    )
}

async fn fake_provider() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async { ([("content-type", "application/json")], ANSWER) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Handles `tasks` with `concurrency` in flight; every outcome must be a forward.
async fn run(handler: &Arc<GenerateHandler>, tasks: Vec<TaskEnvelope>, concurrency: usize) -> Run {
    let started = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(tasks));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (handler, queue) = (handler.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(env) = queue.lock().unwrap().pop() else {
                    return latencies;
                };
                let at = Instant::now();
                let outcome = handler.handle(env).await;
                latencies.push(at.elapsed());
                assert!(matches!(outcome, Outcome::Forward(_)), "{outcome:?}");
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn report(label: &str, run: &Run) {
    println!(
        "  {label:<34} {:>8.0} tasks/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        run.per_second,
        run.p50.as_secs_f64() * 1000.0,
        run.p99.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    let tasks = env_usize("BENCH_TASKS", 2000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let base = fake_provider().await;
    // The bench's Redis keys go when the prefix drops.
    let redis = machine_redis_url();
    let prefix = TestPrefix::labelled("bench");
    prefix.clean_redis(&redis);
    let store = Store::new(
        &RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", redis.as_str())])).unwrap(),
        Names::new(prefix.as_str()),
    )
    .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let key = ["sk-", "bench"].concat();
    let settings = |dir: &std::path::Path| {
        let dir = dir.display().to_string();
        GeneratorConfig::from_env(&Env::from_pairs([
            ("LLM_BASE_URL", base.as_str()),
            ("LLM_API_KEY", key.as_str()),
            ("LLM_MAX_CONCURRENCY", "64"),
            ("LLM_REQUESTS_PER_MIN", "100000"),
            ("LLM_TOKENS_PER_MIN", "100000000"),
            ("GENERATOR_CACHE_DIR", dir.as_str()),
            ("GENERATOR_CACHE_MEMORY_ENTRIES", "100000"),
            ("CACHE_ENCRYPTION_KEY", &"ab".repeat(32)),
        ]))
        .unwrap()
    };
    let handler =
        Arc::new(GenerateHandler::new(&settings(cache_dir.path()), store.clone()).unwrap());
    let all: Vec<TaskEnvelope> = (0..tasks).map(task).collect();

    // Warm up connections and the grammar before measuring.
    run(
        &handler,
        (tasks..tasks + 50).map(task).collect(),
        concurrency,
    )
    .await;

    println!();
    println!(
        "generator handler, zero-latency fake provider, {tasks} tasks, {concurrency} in flight, cache sealed (AES-256-GCM)"
    );
    let miss = run(&handler, all.clone(), concurrency).await;
    report("miss (generate, validate, cache):", &miss);
    let calls = handler.stats().model_calls;
    let hit = run(&handler, all.clone(), concurrency).await;
    report("hit (memory):", &hit);
    assert_eq!(handler.stats().model_calls, calls, "hits make no call");
    let cold = Arc::new(GenerateHandler::new(&settings(cold_dir.path()), store.clone()).unwrap());
    let redis_hit = run(&cold, all.clone(), concurrency).await;
    report("hit (redis, cold replica):", &redis_hit);
    assert_eq!(cold.stats().model_calls, 0);
    let one_dir = tempfile::tempdir().unwrap();
    let one = Arc::new(GenerateHandler::new(&settings(one_dir.path()), store.clone()).unwrap());
    let one_at_a_time: Vec<TaskEnvelope> = (tasks * 2..tasks * 2 + 500).map(task).collect();
    let sequential = run(&one, one_at_a_time.clone(), 1).await;
    report("miss, one at a time:", &sequential);
    let sequential_hit = run(&one, one_at_a_time, 1).await;
    report("hit (memory), one at a time:", &sequential_hit);
}
