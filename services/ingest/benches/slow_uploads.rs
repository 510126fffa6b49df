//! ingest's memory under many slow uploads (README, "How ingest bounds its
//! resources"): `BENCH_UPLOADS` (default 300) connections each announce a
//! `BENCH_UPLOAD_BYTES` (default 1 MiB) webhook body and send it at
//! `BENCH_UPLOAD_RATE` bytes/s (default 64 KiB/s, so a body takes longer than
//! the 15 s request timeout), against an in-process ingest (port 0, unique
//! prefix, real RabbitMQ and Redis) with its default bounds, then with the
//! bounds lifted, in one run. It reports the answers (503 shed at once, 408
//! cut off) and the process's resident memory above its baseline, sampled
//! every 50 ms.

use contexten_broker::CancellationToken;
use contexten_config::Env;
use contexten_testkit::broker::BrokerFixture;
use contexten_testkit::{machine_amqp_url, machine_redis_url};
use ingest::IngestConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::env_usize;

/// Resident memory of this process in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One slow upload; the status code of the answer (0 = none).
async fn upload(addr: std::net::SocketAddr, bytes: usize, rate: usize) -> u16 {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return 0;
    };
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-github-event: issue_comment\r\nx-github-delivery: {}\r\n\
         x-hub-signature-256: sha256=00\r\ncontent-length: {bytes}\r\n\r\n",
        uuid::Uuid::now_v7()
    );
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let chunk = vec![b' '; 16 * 1024];
    let every = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
    let (mut read, mut write) = tcp.into_split();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            if write.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            sent += n;
            tokio::time::sleep(every).await;
        }
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    sender.abort();
    String::from_utf8_lossy(&reply)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3)?.parse().ok())
        .unwrap_or(0)
}

struct PhaseResult {
    answers: BTreeMap<u16, usize>,
    peak_above_baseline: u64,
    elapsed: Duration,
}

async fn phase(amqp: &str, redis: &str, extra: &[(&str, &str)]) -> PhaseResult {
    // The phase's topology and keys, removed when it ends (or panics).
    let broker = BrokerFixture::builder()
        .label("bench")
        .amqp(amqp)
        .redis(redis)
        .start()
        .await;
    let mut pairs = vec![
        ("AMQP_URL", amqp),
        ("REDIS_URL", redis),
        ("CONTEXTEN_PREFIX", broker.prefix.as_str()),
        (
            "GITHUB_WEBHOOK_SECRET",
            "bench-secret-not-used-for-anything",
        ),
    ];
    pairs.extend_from_slice(extra);
    let cfg = IngestConfig::from_env(&Env::from_pairs(pairs)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::serve(cfg, listener, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let uploads = env_usize("BENCH_UPLOADS", 300);
    let bytes = env_usize("BENCH_UPLOAD_BYTES", 1 << 20);
    let rate = env_usize("BENCH_UPLOAD_RATE", 64 * 1024);
    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..uploads)
        .map(|_| tokio::spawn(upload(addr, bytes, rate)))
        .collect();
    let mut answers = BTreeMap::new();
    for task in tasks {
        *answers.entry(task.await.unwrap_or(0)).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    shutdown.cancel();
    let _ = server.await;
    PhaseResult {
        answers,
        peak_above_baseline: peak.load(Ordering::Relaxed).saturating_sub(baseline),
        elapsed,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn report(name: &str, result: &PhaseResult) {
    println!(
        "{name:<44} peak RSS above baseline {:>7.1} MiB   answers {:?}   {:.1} s",
        mib(result.peak_above_baseline),
        result.answers,
        result.elapsed.as_secs_f64()
    );
}

fn main() {
    let (amqp, redis) = (machine_amqp_url(), machine_redis_url());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{} slow uploads of {} bytes at {} bytes/s",
            env_usize("BENCH_UPLOADS", 300),
            env_usize("BENCH_UPLOAD_BYTES", 1 << 20),
            env_usize("BENCH_UPLOAD_RATE", 64 * 1024)
        );
        let bounded = phase(&amqp, &redis, &[]).await;
        report("default bounds (64 MiB body budget)", &bounded);
        let lifted = phase(
            &amqp,
            &redis,
            &[
                ("INGEST_BODY_MEMORY_BYTES", "17179869184"),
                ("INGEST_MAX_CONCURRENT_REQUESTS", "100000"),
            ],
        )
        .await;
        report("bounds lifted (budget 16 GiB, 100000 slots)", &lifted);
        println!(
            "ratio bounded/lifted peak: {:.2}",
            bounded.peak_above_baseline as f64 / lifted.peak_above_baseline.max(1) as f64
        );
    });
}
