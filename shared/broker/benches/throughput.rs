//! Messages per second through one stage: the worker runtime with a no-op handler
//! against a raw lapin publish-confirm/consume/ack loop, measured side by side in
//! the same run (alternating rounds, medians reported).
//!
//! Both sides publish the same persistent, confirmed messages with the same
//! pipelining window into a stage queue declared by the real topology; the raw
//! side consumes with plain acks, the runtime side parses the envelope, checks and
//! records completion in Redis, runs the handler and acks.
//!
//! Both are measured twice, on classic queues and on quorum queues
//! (`QUEUE_TYPE=quorum`: the message's lane queue, the runtime consuming all
//! four lanes), all rounds interleaved in one run.
//!
//! `BENCH_MESSAGES` (default 3000) and `BENCH_ROUNDS` (default 5) tune the run.

use contexten_broker::{Outcome, Publisher, benchkit, topology};
use contexten_config::{ExposeSecret, QueueType};
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
async fn fixture(amqp: &str, redis: &str, queue_type: QueueType) -> Fixture {
    let mut f = Fixture::builder()
        .label("bench")
        .env(&[("QUEUE_TYPE", queue_type.as_str())])
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
        // The samples' queue: the stage queue, or their lane's in quorum mode.
        match f.settings.queue_type {
            QueueType::Classic => f.names.stage_queue(Stage::Generate),
            QueueType::Quorum => topology::lane_queue(&f.names, Stage::Generate, Priority::Normal),
        }
        .as_str(),
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
    let classic = fixture(&amqp, &redis, QueueType::Classic).await;
    let quorum = fixture(&amqp, &redis, QueueType::Quorum).await;
    let batch = |round: usize| (0..n).map(|i| sample(round * n + i)).collect::<Vec<_>>();

    // Warm-up: one small round of each.
    for (i, f) in [&classic, &quorum].into_iter().enumerate() {
        raw_round(f, &batch(1000 + 2 * i)[..200]).await;
        runtime_round(f, &batch(1001 + 2 * i)[..200]).await;
    }

    // raw classic, runtime classic, raw quorum, runtime quorum
    let mut results: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let base = 4 * round;
        results[0].push(raw_round(&classic, &batch(base)).await);
        results[1].push(runtime_round(&classic, &batch(base + 1)).await);
        results[2].push(raw_round(&quorum, &batch(base + 2)).await);
        results[3].push(runtime_round(&quorum, &batch(base + 3)).await);
        println!(
            "round {}: classic raw {:>7.0} runtime {:>7.0}   quorum raw {:>7.0} runtime {:>7.0} msg/s",
            round + 1,
            results[0][round],
            results[1][round],
            results[2][round],
            results[3][round]
        );
    }
    let [raw, runtime, quorum_raw, quorum_runtime] = results.map(median);
    println!();
    println!(
        "broker throughput, {n} persistent confirmed messages per round, prefetch {}, {rounds} rounds",
        prefetch()
    );
    println!("                                               classic    quorum  (msg/s, median)");
    println!("  raw lapin publish-confirm/consume/ack loop: {raw:>8.0}  {quorum_raw:>8.0}");
    println!("  worker runtime, no-op handler:              {runtime:>8.0}  {quorum_runtime:>8.0}");
    println!(
        "  ratio runtime / raw:                        {:>8.2}  {:>8.2} (target >= 0.80)",
        runtime / raw,
        quorum_runtime / quorum_raw
    );
    println!(
        "  quorum / classic, worker runtime:           {:>8.2}",
        quorum_runtime / runtime
    );
    drop(classic);
    drop(quorum);
}
