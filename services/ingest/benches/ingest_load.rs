//! ingest under load: signed GitHub `issue_comment` webhooks over loopback from
//! many keep-alive connections to an in-process ingest (port 0, unique prefix,
//! real RabbitMQ and Redis), at saturation and at half that rate, next to raw
//! lapin loops measured in the same run.
//!
//! Every accepted webhook is two confirmed messages (the persistent task to
//! `generate`, the transient acknowledgement to `dispatch`, published together
//! on one channel), so ingest's broker rate is twice its webhook rate. Two references, both with envelopes of the same size
//! and persistence:
//! - the foundation benchmark's raw publish-confirm/consume/ack loop
//!   (`contexten_broker::benchkit`, the reference the ingest issue names);
//! - a stricter publish-only loop: the same priority queues and messages
//!   (persistent task, transient acknowledgement), nothing consuming, the same
//!   number of publishes in flight as ingest has (two per connection) on as
//!   many channels as ingest uses.
//!
//! The queues get RabbitMQ's version 2 classic-queue index, as deployed (see
//! [`QueueFormat`]).
//!
//! The generator uses hyper's connection-level HTTP/1.1 client, one task per
//! keep-alive connection, so its own cost per request stays small. The open
//! loops (half load, and the broker alone at that rate) release requests in
//! 1 ms batches from a thread that keeps time with the OS timer (see [`pace`]);
//! latency counts from the release tick, and the generator's lag after the tick
//! is reported beside it. The CPU each part used at half load is reported too:
//! on two shared cores a "half" rate keeps the machine far busier than half,
//! because at lower rates fewer requests share each wake-up and write.
//!
//! ingest runs on a tokio runtime of its own with as many workers as the
//! binary starts (`INGEST_WORKER_THREADS`' default; `BENCH_SERVER_WORKERS`
//! overrides), the load generator on another
//! (`BENCH_CLIENT_WORKERS`, default 2), so neither queues behind the other's
//! tasks; they still share the machine's cores with RabbitMQ and Redis.
//!
//! `BENCH_WEBHOOKS` (default 4000 per round), `BENCH_CONNECTIONS` (default 128),
//! `BENCH_ROUNDS` (default 3) tune the run; figures are medians over rounds.
//! `BENCH_HALF_RATE` replaces "half of saturation" by a fixed rate.

use contexten_broker::{CancellationToken, Delivery, Publisher, benchkit};
use contexten_config::{Env, Secret};
use contexten_envelope::{
    Names, Priority, ReplyKind, ReplyTarget, Request, Source, SourceKind, Stage, TaskEnvelope,
};
use contexten_testkit::broker::BrokerFixture;
use contexten_testkit::{TestPrefix, eventually, machine_amqp_url, machine_redis_url};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use ingest::tokens::TokenStore;
use ingest::{AppState, IngestConfig};
use lapin::options::QueuePurgeOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::env_usize;

fn secret() -> String {
    ["bench-", "webhook-", "secret"].concat()
}

/// One pre-signed delivery.
struct Webhook {
    id: String,
    body: bytes::Bytes,
    signature: String,
}

fn deliveries(round: &str, n: usize) -> Vec<Webhook> {
    let key = Secret::from(secret());
    (0..n)
        .map(|i| {
            let number = 1 + i % 500;
            let body = serde_json::json!({
                "action": "created",
                "issue": {"number": number, "title": "Parser is slow", "body": "Parsing takes 2 ms.",
                          "user": {"login": "octocat", "type": "User"}, "labels": [], "state": "open"},
                "comment": {"id": 10_000 + i, "node_id": format!("IC_{round}_{i}"),
                            "body": "/contexten generate a function that parses `1h30m` durations",
                            "user": {"login": format!("dev-{}", i % 256), "type": "User"}, "author_association": "MEMBER"},
                "repository": {"id": 1296269, "full_name": "octo-org/hello-world", "name": "hello-world",
                               "clone_url": "https://github.com/octo-org/hello-world.git", "default_branch": "main"},
                // Many requesters, as in a real organisation (one window each);
                // every body is new (ingest ignores a signed body seen before
                // under another delivery id as a replay).
                "sender": {"login": format!("dev-{}", i % 256), "type": "User"},
                "installation": {"id": 2311213}
            });
            let body = serde_json::to_vec(&body).unwrap();
            let signature = format!("sha256={}", ingest::verify::sign_hex(&key, &body));
            Webhook {
                id: format!("{round}-{i}"),
                body: body.into(),
                signature,
            }
        })
        .collect()
}

/// Server-side latencies of the requests since the last [`take_server_latencies`].
static SERVER_LATENCIES: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

/// How late the generator started each half-load request after its release
/// tick, in µs, since the last [`take_send_lag`].
static SEND_LAG: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

/// p50 and p99 of the send lag since the last call, in ms.
fn take_send_lag() -> (f64, f64) {
    percentiles(std::mem::take(&mut *SEND_LAG.lock().unwrap()))
}

/// p50 and p99 of the server-side latencies since the last call, in ms.
fn take_server_latencies() -> (f64, f64) {
    percentiles(std::mem::take(&mut *SERVER_LATENCIES.lock().unwrap()))
}

/// p50 and p99 of `durations`, in ms (NaN when empty).
fn percentiles(mut durations: Vec<Duration>) -> (f64, f64) {
    durations.sort();
    let pick = |q: f64| {
        durations
            .get(((durations.len() as f64 * q) as usize).min(durations.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    (pick(0.5), pick(0.99))
}

/// [`Fleet::teardown`] stops it in order; a panic drops it as it is, which
/// still removes the topology, the keys and the queue policy.
struct Fleet {
    addr: std::net::SocketAddr,
    names: Names,
    /// As many channels as ingest publishes on.
    publisher_like_ingest: Publisher,
    shutdown: CancellationToken,
    server_runtime: tokio::runtime::Runtime,
    /// The prefix's topology and keys, removed on drop; its publisher is one
    /// channel with no payload store, as in the foundation benchmark.
    broker: BrokerFixture,
    _queue_format: QueueFormat,
}

/// The Helm chart and compose run RabbitMQ 4.1, whose classic queues always
/// use the version 2 index; a 3.x broker (3.10 on the development machines)
/// defaults to version 1, which costs more CPU and latency per persistent
/// message. So the bench moves its own queues (its unique prefix only) to
/// version 2 with a policy, measuring the queue format the project deploys,
/// and clears the policy on drop. Without `rabbitmqctl` (or on a broker
/// that refuses the key) it measures the broker's default and says so.
struct QueueFormat {
    policy: Option<String>,
}

impl QueueFormat {
    fn deployed(prefix: &str) -> QueueFormat {
        let name = format!("{prefix}-cqv2");
        let pattern = format!("^{prefix}\\.");
        let set = std::process::Command::new("rabbitmqctl")
            .args(["set_policy", "--apply-to", "queues", &name, &pattern])
            .arg(r#"{"queue-version":2}"#)
            .output();
        let applied = set.is_ok_and(|o| o.status.success());
        QueueFormat {
            policy: applied.then_some(name),
        }
    }

    fn describe(&self) -> &'static str {
        if self.policy.is_some() {
            "classic queues, version 2 index by policy (as on the RabbitMQ 4.1 the chart deploys)"
        } else {
            "the broker's default (no rabbitmqctl policy could be set)"
        }
    }
}

impl Drop for QueueFormat {
    fn drop(&mut self) {
        if let Some(name) = &self.policy {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["clear_policy", name])
                .output();
        }
    }
}

async fn start(amqp: &str, redis: &str) -> Fleet {
    // Production telemetry (filter, JSON logs, metrics recorder), at `warn` by
    // default so per-task info lines do not flood the bench output
    // (BENCH_RUST_LOG=info measures with them).
    let filter = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into());
    let telemetry = contexten_config::TelemetrySettings::from_env(
        &Env::from_pairs([("RUST_LOG", filter.as_str())]),
        "ingest-bench",
    )
    .unwrap();
    std::mem::forget(contexten_telemetry::init(&telemetry).unwrap());
    let prefix = TestPrefix::labelled("bench");
    // The policy is set before any of the prefix's queues is declared.
    let queue_format = QueueFormat::deployed(&prefix);
    println!("queue format: {}", queue_format.describe());
    let broker = BrokerFixture::builder()
        .prefix(&prefix)
        .amqp(amqp)
        .redis(redis)
        .plain_publisher()
        .start()
        .await;
    let gh = secret();
    let env = Env::from_pairs([
        ("AMQP_URL", amqp),
        ("REDIS_URL", redis),
        ("CONTEXTEN_PREFIX", prefix.as_str()),
        ("GITHUB_WEBHOOK_SECRET", gh.as_str()),
        // Every webhook still takes a permit of its requester's window (the
        // limiter's Redis round trip is part of what is measured), never refused.
        ("INGEST_REQUESTER_LIMIT", "100000"),
    ]);
    let cfg = IngestConfig::from_env(&env).unwrap();
    // ingest runs on a runtime of its own, sized as the binary sizes it, so the
    // load generator's tasks never queue on the server's workers.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_usize("BENCH_SERVER_WORKERS", cfg.worker_threads))
        .thread_name("ingest")
        .enable_all()
        .build()
        .unwrap();
    let (started, ready) = tokio::sync::oneshot::channel();
    server_runtime.spawn(async move {
        let state =
            Arc::new(
                AppState::new(
                    cfg,
                    TokenStore::default(),
                    contexten_trust::policy::PolicyStore::fixed(
                        contexten_trust::policy::Policy::none(),
                    ),
                )
                .unwrap(),
            );
        let readiness = ingest::ingest_readiness();
        let shutdown = CancellationToken::new();
        ingest::start_background(&state, &readiness, &shutdown, &shutdown);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Server-side latency: from the parsed request to the response.
        let app = ingest::router(state.clone(), readiness).layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let started = Instant::now();
                let response = next.run(request).await;
                SERVER_LATENCIES.lock().unwrap().push(started.elapsed());
                response
            },
        ));
        let stop = shutdown.clone();
        let limits = ingest::server::ConnectionLimits::from(&state.cfg.limits);
        let _ = started.send((addr, state, shutdown));
        ingest::server::serve_bounded(listener, app, limits, stop).await;
    });
    let (addr, state, shutdown) = ready.await.unwrap();
    eventually(Duration::from_secs(30), "ingest's publisher", || async {
        state.publisher.read().await.is_some()
    })
    .await;
    let names = state.names.clone();
    let publisher_like_ingest = Publisher::with_channels(
        &broker.connection,
        names.clone(),
        None,
        usize::MAX,
        ingest::PUBLISH_CHANNELS,
    )
    .await
    .unwrap();
    Fleet {
        addr,
        names,
        publisher_like_ingest,
        shutdown,
        server_runtime,
        broker,
        _queue_format: queue_format,
    }
}

impl Fleet {
    async fn purge(&self) {
        let channel = self.broker.connection.create_channel().await.unwrap();
        for stage in Stage::QUEUED {
            channel
                .queue_purge(
                    self.names.stage_queue(stage).as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .unwrap();
        }
        let _ = channel.close(200, "purged".into()).await;
    }

    /// Stops ingest: the topology and keys go first (dropping the fixture),
    /// then ingest's runtime, then the queue policy.
    async fn teardown(self) {
        self.shutdown.cancel();
        let Fleet {
            server_runtime,
            broker,
            ..
        } = self;
        let _ = broker.connection.close(200, "bench done".into()).await;
        drop(broker);
        server_runtime.shutdown_background();
    }
}

/// An envelope like the ones ingest publishes (same size and priority).
fn envelope(i: usize) -> TaskEnvelope {
    let mut env = TaskEnvelope::new(
        Source {
            kind: SourceKind::GITHUB,
            delivery_id: Some(format!("raw-{i}")),
            requested_by: Some("octocat".into()),
            reply_to: ReplyTarget::Github {
                repo: "octo-org/hello-world".into(),
                number: 1 + (i % 500) as u64,
                comment_id: Some(10_000 + i as u64),
            },
            extra: Default::default(),
        },
        Request {
            text: "a function that parses `1h30m` durations".into(),
            ..Request::default()
        },
    );
    env.priority = Priority::Normal;
    env.strategy_rule = Some("command:generate".into());
    if i % 2 == 1 {
        env.reply = Some(ReplyKind::Ack);
    }
    env
}

/// The foundation benchmark's raw loop over `n` ingest-shaped envelopes.
async fn foundation_round(fleet: &Fleet, amqp: &str, n: usize) -> f64 {
    let envelopes: Vec<_> = (0..n).map(envelope).collect();
    benchkit::publish_consume_ack(
        amqp,
        &fleet.broker.publisher,
        fleet.names.stage_queue(Stage::Generate).as_str(),
        Stage::Generate,
        &envelopes,
        benchkit::PREFETCH,
    )
    .await
}

/// Publish-only loop: `n` messages alternating as ingest publishes them (a
/// persistent task to generate, a transient acknowledgement to dispatch) with
/// up to `window` confirms outstanding.
async fn raw_round(fleet: &Fleet, n: usize, window: usize) -> f64 {
    let envelopes: Vec<_> = (0..n).map(envelope).collect();
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    for (i, env) in envelopes.iter().enumerate() {
        if pending.len() >= window {
            let r: Result<(), _> = pending.next().await.unwrap();
            r.unwrap();
        }
        let publisher = &fleet.publisher_like_ingest;
        pending.push(Box::pin(async move {
            if i % 2 == 0 {
                publisher.publish(Stage::Generate, env).await
            } else {
                publisher.publish_transient(Stage::Dispatch, env).await
            }
        }));
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Open loop like [`paced`] without HTTP or Redis: at `rate` pairs/s, a task
/// and its acknowledgement published as ingest publishes them (together on one
/// channel, the task's confirm awaited); latency from the release tick to the
/// task's confirm. The broker's own share of ingest's latency at that rate.
async fn paced_raw(fleet: &Fleet, n: usize, rate: f64) -> LoadResult {
    let publisher = fleet.publisher_like_ingest.clone();
    let acks = tokio_util::task::TaskTracker::new();
    let ack_confirms = acks.clone();
    let start = Instant::now();
    let tasks = pace(n, rate, move |i, due| {
        let (publisher, acks) = (publisher.clone(), ack_confirms.clone());
        tokio::spawn(async move {
            let messages = vec![
                publisher
                    .message(Stage::Generate, &envelope(2 * i), Delivery::Persistent)
                    .await
                    .unwrap(),
                publisher
                    .message(Stage::Dispatch, &envelope(2 * i + 1), Delivery::Transient)
                    .await
                    .unwrap(),
            ];
            let ok = match publisher.publish_together(messages).await {
                Ok(pending) => {
                    let mut pending = pending.into_iter();
                    let (task, ack) = (pending.next(), pending.next());
                    if let Some(ack) = ack {
                        acks.spawn(ack.confirmed());
                    }
                    match task {
                        Some(task) => task.confirmed().await.is_ok(),
                        None => false,
                    }
                }
                Err(_) => false,
            };
            (due.elapsed(), ok)
        })
    })
    .await;
    let (latencies, failures) = gather(tasks).await;
    let elapsed = start.elapsed();
    acks.close();
    acks.wait().await;
    summarise(latencies, elapsed, failures)
}

/// An open loop's schedule: request `i` of `n` at `rate` per second, released
/// in batches on a 1 ms clock. A thread of its own keeps the clock with the
/// OS timer: tokio's timer wheel fires about 1 ms after the deadline (measured:
/// sends started 1.0 ms late at p50, 2.3 ms at p99), which counted the
/// generator's own lag as ingest's latency. `release(i, tick)` starts request
/// `i`; its latency counts from `tick`, so a late release is not forgiven.
async fn pace<F>(
    n: usize,
    rate: f64,
    mut release: F,
) -> FuturesUnordered<tokio::task::JoinHandle<(Duration, bool)>>
where
    F: FnMut(usize, Instant) -> tokio::task::JoinHandle<(Duration, bool)> + Send + 'static,
{
    const TICK: Duration = Duration::from_millis(1);
    tokio::task::spawn_blocking(move || {
        let tasks = FuturesUnordered::new();
        let start = Instant::now();
        let mut next = 0;
        for tick in 1.. {
            let at = start + TICK * tick;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let due = ((TICK * tick).as_secs_f64() * rate).ceil() as usize;
            while next < due.min(n) {
                tasks.push(release(next, at));
                next += 1;
            }
            if next == n {
                break;
            }
        }
        tasks
    })
    .await
    .unwrap()
}

struct LoadResult {
    accepted_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: usize,
}

/// One keep-alive HTTP/1.1 connection (hyper's connection-level client: no
/// pool lookups or URL parsing per request, so the generator costs little).
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Conn { sender }
    }

    /// Sends one delivery; true when ingest answered 202.
    async fn send(&mut self, d: &Webhook) -> bool {
        let request = hyper::Request::post("/webhooks/github")
            .header("host", "ingest")
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", d.id.as_str())
            .header("x-hub-signature-256", d.signature.as_str())
            .body(Full::new(d.body.clone()))
            .unwrap();
        if self.sender.ready().await.is_err() {
            return false;
        }
        match self.sender.send_request(request).await {
            Ok(response) => {
                let ok = response.status() == hyper::StatusCode::ACCEPTED;
                ok && response.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        }
    }
}

/// The latencies of an open loop's sends and how many failed.
async fn gather(
    mut tasks: FuturesUnordered<tokio::task::JoinHandle<(Duration, bool)>>,
) -> (Vec<Duration>, usize) {
    let (mut latencies, mut failures) = (Vec::new(), 0);
    while let Some(r) = tasks.next().await {
        let (latency, ok) = r.unwrap();
        latencies.push(latency);
        failures += usize::from(!ok);
    }
    (latencies, failures)
}

fn summarise(latencies: Vec<Duration>, elapsed: Duration, failures: usize) -> LoadResult {
    let accepted_per_s = (latencies.len() - failures) as f64 / elapsed.as_secs_f64();
    let (p50_ms, p99_ms) = percentiles(latencies);
    LoadResult {
        accepted_per_s,
        p50_ms,
        p99_ms,
        failures,
    }
}

/// Closed loop: `conns` clients sending back to back.
async fn saturation(conns: &mut Vec<Conn>, batch: Vec<Webhook>) -> LoadResult {
    let batch = Arc::new(batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for mut conn in conns.drain(..) {
        let (batch, next) = (batch.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(d) = batch.get(i) else { break };
                let t = Instant::now();
                if !conn.send(d).await {
                    failures += 1;
                }
                latencies.push(t.elapsed());
            }
            (latencies, failures, conn)
        }));
    }
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for w in workers {
        let (l, f, conn) = w.await.unwrap();
        latencies.extend(l);
        failures += f;
        conns.push(conn);
    }
    summarise(latencies, start.elapsed(), failures)
}

/// Open loop at `rate` webhooks/s (see [`pace`]) over the keep-alive
/// connections; a request that finds every connection busy waits, and the wait
/// counts.
async fn paced(conns: &mut Vec<Conn>, batch: Vec<Webhook>, rate: f64) -> LoadResult {
    let total = conns.len();
    let idle = Arc::new(std::sync::Mutex::new(std::mem::take(conns)));
    let returned = Arc::new(tokio::sync::Notify::new());
    let batch = Arc::new(batch);
    let start = Instant::now();
    let pool = (idle.clone(), returned.clone());
    let tasks = pace(batch.len(), rate, move |i, due| {
        let (idle, returned, batch) = (pool.0.clone(), pool.1.clone(), batch.clone());
        tokio::spawn(async move {
            let mut conn = loop {
                let notified = returned.notified();
                if let Some(conn) = idle.lock().unwrap().pop() {
                    break conn;
                }
                notified.await;
            };
            SEND_LAG.lock().unwrap().push(due.elapsed());
            let ok = conn.send(&batch[i]).await;
            let latency = due.elapsed();
            idle.lock().unwrap().push(conn);
            returned.notify_one();
            (latency, ok)
        })
    })
    .await;
    let (latencies, failures) = gather(tasks).await;
    let elapsed = start.elapsed();
    let mut idle = idle.lock().unwrap();
    assert_eq!(idle.len(), total, "every connection came back");
    conns.append(&mut idle);
    summarise(latencies, elapsed, failures)
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds of this process's threads named `name` (ingest's runtime).
fn cpu_of_threads(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .map(|tid| cpu_seconds_of(&format!("self/task/{tid}")))
        .sum()
}

/// CPU seconds of the processes named `name` (the broker, Redis), if visible.
fn cpu_of_named(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .map(|pid| cpu_seconds_of(&pid))
        .sum()
}

fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The "half load" rate: half of the round's saturation, or `BENCH_HALF_RATE`
/// webhooks/s when set (to compare latencies at one fixed rate across changes).
fn half_rate(saturation: f64) -> f64 {
    std::env::var("BENCH_HALF_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(saturation / 2.0)
}

/// Where the CPU went during one phase: this process's threads by name, the
/// broker and Redis (in cores), and how busy the whole machine was.
struct CpuUsage {
    started: Instant,
    machine: (f64, f64),
    parts: [f64; 5],
    cores: [f64; 5],
    machine_busy: f64,
}

impl CpuUsage {
    const PARTS: [&'static str; 5] = ["ingest", "lapin-io-loop", "load", "RabbitMQ", "Redis"];

    fn read() -> [f64; 5] {
        [
            cpu_of_threads("ingest"),
            cpu_of_threads("lapin-io-loop"),
            cpu_of_threads("load"),
            cpu_of_named("beam.smp"),
            cpu_of_named("redis-server"),
        ]
    }

    /// (busy, total) jiffies of all cores, from /proc/stat.
    fn machine() -> (f64, f64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
        let total: f64 = ticks.iter().sum();
        (total - idle, total)
    }

    fn start() -> CpuUsage {
        CpuUsage {
            started: Instant::now(),
            machine: Self::machine(),
            parts: Self::read(),
            cores: [0.0; 5],
            machine_busy: 0.0,
        }
    }

    fn finish(mut self) -> CpuUsage {
        let wall = self.started.elapsed().as_secs_f64();
        let now = Self::read();
        for (i, core) in self.cores.iter_mut().enumerate() {
            *core = (now[i] - self.parts[i]) / wall;
        }
        let machine = Self::machine();
        self.machine_busy = (machine.0 - self.machine.0) / (machine.1 - self.machine.1).max(1.0);
        self
    }
}

impl std::fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, cores) in Self::PARTS.iter().zip(self.cores) {
            write!(f, "{name} {cores:.2} cores, ")?;
        }
        write!(f, "machine {:.0} % busy", 100.0 * self.machine_busy)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    // The load generator's runtime; ingest has its own (see `start`).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_usize("BENCH_CLIENT_WORKERS", 2))
        .thread_name("load")
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let (amqp, redis) = (machine_amqp_url(), machine_redis_url());
    let n = env_usize("BENCH_WEBHOOKS", 4000);
    let connections = env_usize("BENCH_CONNECTIONS", 128);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let fleet = start(&amqp, &redis).await;
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(Conn::open(fleet.addr).await);
    }

    // Warm-up: connections, EVALSHA cache, queues.
    saturation(&mut conns, deliveries("warm", 500)).await;
    raw_round(&fleet, 500, 2 * connections).await;
    foundation_round(&fleet, &amqp, 500).await;
    fleet.purge().await;

    let mut foundation = vec![];
    let (mut raw, mut sat, mut sat_p50, mut sat_p99) = (vec![], vec![], vec![], vec![]);
    let (mut half, mut half_p50, mut half_p99) = (vec![], vec![], vec![]);
    let (mut half_server_p99, mut half_broker_p99) = (vec![], vec![]);
    let (mut half_lag_p99, mut half_busy) = (vec![], vec![]);
    let mut failures = 0;
    for round in 0..rounds {
        let f = foundation_round(&fleet, &amqp, 2 * n).await;
        fleet.purge().await;
        let (cpu, beam, redis_cpu) = (
            cpu_seconds(),
            cpu_of_named("beam.smp"),
            cpu_of_named("redis-server"),
        );
        let r = raw_round(&fleet, 2 * n, 2 * connections).await;
        let raw_cpu_us = (cpu_seconds() - cpu) * 1e6 / (2 * n) as f64;
        let raw_beam_us = (cpu_of_named("beam.smp") - beam) * 1e6 / (2 * n) as f64;
        let raw_redis_us = (cpu_of_named("redis-server") - redis_cpu) * 1e6 / (2 * n) as f64;
        fleet.purge().await;
        let batch = deliveries(&format!("s{round}"), n);
        let (cpu, server_cpu, beam, redis_cpu) = (
            cpu_seconds(),
            cpu_of_threads("ingest"),
            cpu_of_named("beam.smp"),
            cpu_of_named("redis-server"),
        );
        let s = saturation(&mut conns, batch).await;
        let sat_cpu_us = (cpu_seconds() - cpu) * 1e6 / n as f64;
        let sat_server_us = (cpu_of_threads("ingest") - server_cpu) * 1e6 / n as f64;
        let sat_beam_us = (cpu_of_named("beam.smp") - beam) * 1e6 / n as f64;
        let sat_redis_us = (cpu_of_named("redis-server") - redis_cpu) * 1e6 / n as f64;
        fleet.purge().await;
        take_server_latencies();
        take_send_lag();
        let usage = CpuUsage::start();
        let h = paced(
            &mut conns,
            deliveries(&format!("h{round}"), n / 2),
            half_rate(s.accepted_per_s),
        )
        .await;
        let usage = usage.finish();
        let (server_p50, server_p99) = take_server_latencies();
        let (lag_p50, lag_p99) = take_send_lag();
        fleet.purge().await;
        let hr = paced_raw(&fleet, n / 2, half_rate(s.accepted_per_s)).await;
        fleet.purge().await;
        println!(
            "         half load inside ingest (request parsed → response): p50 {server_p50:.2} ms p99 {server_p99:.2} ms; \
             broker alone, the same publishes at the same rate: p50 {:.2} ms p99 {:.2} ms; \
             generator's send lag after the release tick: p50 {lag_p50:.2} ms p99 {lag_p99:.2} ms",
            hr.p50_ms, hr.p99_ms
        );
        println!("         half load CPU: {usage}");
        half_server_p99.push(server_p99);
        half_broker_p99.push(hr.p99_ms);
        half_lag_p99.push(lag_p99);
        half_busy.push(usage.machine_busy);
        failures += s.failures + h.failures;
        println!(
            "round {}: foundation {:>6.0} msg/s | publish-only {:>7.0} msg/s | saturation {:>6.0} webhooks/s ({:>7.0} msg/s) p50 {:>5.2} ms p99 {:>6.2} ms | half {:>6.0}/s p50 {:>5.2} ms p99 {:>6.2} ms",
            round + 1,
            f,
            r,
            s.accepted_per_s,
            2.0 * s.accepted_per_s,
            s.p50_ms,
            s.p99_ms,
            h.accepted_per_s,
            h.p50_ms,
            h.p99_ms
        );
        println!(
            "         CPU per unit: raw loop {raw_cpu_us:.0} µs/msg here + RabbitMQ {raw_beam_us:.0} + Redis {raw_redis_us:.0}; \
             ingest {sat_cpu_us:.0} µs/webhook here (of which ingest's runtime {sat_server_us:.0}) + RabbitMQ {sat_beam_us:.0} + Redis {sat_redis_us:.0}"
        );
        foundation.push(f);
        raw.push(r);
        sat.push(s.accepted_per_s);
        sat_p50.push(s.p50_ms);
        sat_p99.push(s.p99_ms);
        half.push(h.accepted_per_s);
        half_p50.push(h.p50_ms);
        half_p99.push(h.p99_ms);
    }
    let (foundation, raw, sat) = (median(foundation), median(raw), median(sat));
    println!();
    println!(
        "ingest load: {n} signed GitHub issue_comment webhooks per round, {connections} keep-alive connections, {rounds} rounds (medians)"
    );
    println!(
        "  foundation raw publish-confirm/consume/ack loop (ingest-shaped envelopes): {foundation:>8.0} msg/s"
    );
    println!(
        "  publish-only raw loop (same queues and messages, {} in flight):         {raw:>8.0} msg/s",
        2 * connections
    );
    println!(
        "  saturation: {sat:>6.0} webhooks/s accepted = {:>7.0} broker msg/s (task + ack), p50 {:.2} ms, p99 {:.2} ms",
        2.0 * sat,
        median(sat_p50),
        median(sat_p99)
    );
    println!(
        "  ratio ingest broker msg/s / foundation loop: {:.2} (target >= 0.70)",
        2.0 * sat / foundation
    );
    println!(
        "  ratio ingest broker msg/s / publish-only loop: {:.2} (stricter: nothing consumes)",
        2.0 * sat / raw
    );
    println!(
        "  half load ({:.0} webhooks/s offered): {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms (target p99 < 10 ms)",
        half_rate(sat),
        median(half),
        median(half_p50),
        median(half_p99)
    );
    println!(
        "    of which inside ingest p99 {:.2} ms; the broker alone at that rate p99 {:.2} ms; the generator's send lag p99 {:.2} ms; the machine {:.0} % busy",
        median(half_server_p99),
        median(half_broker_p99),
        median(half_lag_p99),
        100.0 * median(half_busy)
    );
    if failures > 0 {
        println!("  WARNING: {failures} webhooks were not answered 202");
    }
    fleet.teardown().await;
}
