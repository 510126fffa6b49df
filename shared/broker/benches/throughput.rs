//! Messages per second through one stage: the worker runtime with a no-op handler
//! against a raw lapin publish-confirm/consume/ack loop, measured side by side in
//! the same run (alternating rounds, medians reported).
//!
//! Both sides publish the same persistent, confirmed messages with the same
//! pipelining window into a stage queue declared by the real topology; the raw
//! side consumes with plain acks, the runtime side parses the envelope, checks and
//! records completion in Redis, runs the handler and acks.
//!
//! `BENCH_MESSAGES` (default 3000) and `BENCH_ROUNDS` (default 5) tune the run.

use contexten_broker::{Outcome, Publisher, benchkit};
use contexten_config::ExposeSecret;
use contexten_envelope::{Priority, ReplyTarget, Request, Source, SourceKind, Stage, TaskEnvelope};
use contexten_testkit::broker::BrokerFixture as Fixture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn prefetch() -> u16 {
    env_usize("BENCH_PREFETCH", benchkit::PREFETCH.into()) as u16
}

fn env_usize(name: &str, default: usize) -> usize {
    contexten_testkit::env_or(name, default)
}

fn sample(i: usize) -> TaskEnvelope {
    let source = Source {
        kind: SourceKind::API,
        delivery_id: Some(format!("bench-{i}")),
        requested_by: Some("bench".into()),
        reply_to: ReplyTarget::Callback {
            url: "http://127.0.0.1:9/hook".into(),
        },
        extra: Default::default(),
    };
    let mut env = TaskEnvelope::new(
        source,
        Request {
            text: "write a function that parses durations".into(),
            ..Request::default()
        },
    );
    env.priority = Priority::Normal;
    env
}

async fn publish_all(publisher: &Publisher, envelopes: &[TaskEnvelope]) {
    benchkit::publish_all(
        publisher,
        Stage::Generate,
        envelopes,
        benchkit::CONFIRM_WINDOW,
    )
    .await;
}

/// The testkit's fixture under a `bench-` prefix, publishing as the CLI
/// does (no payload offload); its topology and keys go on drop.
async fn fixture(amqp: &str, redis: &str) -> Fixture {
    let mut f = Fixture::builder()
        .label("bench")
        .amqp(amqp)
        .redis(redis)
        .prefetch(prefetch())
        .plain_publisher()
        .start()
        .await;
    f.settings.shutdown_timeout = Duration::from_secs(30);
    f
}

/// The raw loop: plain consume and ack on its own connection.
async fn raw_round(f: &Fixture, envelopes: &[TaskEnvelope]) -> f64 {
    benchkit::publish_consume_ack(
        f.settings.amqp_url.expose_secret(),
        &f.publisher,
        f.names.stage_queue(Stage::Generate).as_str(),
        Stage::Generate,
        envelopes,
        prefetch(),
    )
    .await
}

/// The runtime with a no-op handler, stopped gracefully once every message was
/// handled (so every ack is in).
async fn runtime_round(f: &Fixture, envelopes: &[TaskEnvelope]) -> f64 {
    let n = envelopes.len();
    let handled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (h, d) = (handled.clone(), done.clone());
    let handler = move |_env: TaskEnvelope| {
        let (h, d) = (h.clone(), d.clone());
        async move {
            if h.fetch_add(1, Ordering::SeqCst) + 1 == n {
                d.notify_one();
            }
            Outcome::Done
        }
    };
    let worker = f.spawn_worker("bench", Stage::Generate, f.settings.clone(), handler);
    while !worker.readiness.is_ready("broker") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    tokio::join!(publish_all(&f.publisher, envelopes), done.notified());
    worker.stop().await;
    let elapsed = start.elapsed();
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let n = env_usize("BENCH_MESSAGES", 3000);
    let rounds = env_usize("BENCH_ROUNDS", 5);
    let f = fixture(&amqp, &redis).await;
    let batch = |round: usize| (0..n).map(|i| sample(round * n + i)).collect::<Vec<_>>();

    // Warm-up: one small round of each.
    raw_round(&f, &batch(1000)[..200]).await;
    runtime_round(&f, &batch(1001)[..200]).await;

    let (mut raw, mut runtime) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        raw.push(raw_round(&f, &batch(2 * round)).await);
        runtime.push(runtime_round(&f, &batch(2 * round + 1)).await);
        println!(
            "round {}: raw {:>8.0} msg/s   runtime {:>8.0} msg/s",
            round + 1,
            raw[round],
            runtime[round]
        );
    }
    let (raw_median, runtime_median) = (median(raw), median(runtime));
    println!();
    println!(
        "broker throughput, {n} persistent confirmed messages per round, prefetch {}, {rounds} rounds",
        prefetch()
    );
    println!("  raw lapin publish-confirm/consume/ack loop: {raw_median:>8.0} msg/s (median)");
    println!("  worker runtime, no-op handler:              {runtime_median:>8.0} msg/s (median)");
    println!(
        "  ratio runtime / raw:                        {:>8.2} (target >= 0.80)",
        runtime_median / raw_median
    );
    drop(f);
}
