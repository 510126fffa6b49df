//! The fault test: tasks from every source while a driver SIGKILLs and restarts
//! random worker processes, crashes the fleet's RabbitMQ once (SIGKILL, then a
//! restart on the same data), pauses its Redis for a few seconds, and makes the
//! fake LLM and Codegen fail in bursts. At the end every task must have exactly
//! one final answer and no reply may be posted twice.
//!
//! The fleet runs on a RabbitMQ node and a Redis of the test's own
//! (contexten-testkit), so the machine's services are never touched and are
//! gone when the test ends. `CHAOS_TASKS` (default 60; `make chaos` uses 500)
//! sets the load, `CHAOS_RATE` (default 10) the requests per second.

use contexten_fleet_tests::harness::*;
use contexten_fleet_tests::load::{
    Report, dead_letters, describe_dead, percentile, repo, send_paced,
};
use contexten_testkit::{RabbitNode, RabbitOptions, RedisNode, RedisOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long the fleet may take to answer everything once the faults stop.
const DRAIN_WITHIN: Duration = Duration::from_secs(240);

/// A tiny deterministic generator (xorshift), enough to pick victims.
struct Dice(u64);
impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A broker crash: SIGKILL to the fleet's own RabbitMQ node, two seconds
/// down, then a restart on the same data. Every connection drops without a
/// goodbye; durable queues and confirmed persistent messages survive.
async fn rabbitmq_crash(node: &RabbitNode, begun: Instant) {
    let down = begun.elapsed();
    node.kill().await.expect("kill the fleet's RabbitMQ node");
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.restart()
        .await
        .expect("restart the fleet's RabbitMQ node");
    eprintln!(
        "chaos: RabbitMQ crashed at {:.1} s, back at {:.1} s",
        down.as_secs_f64(),
        begun.elapsed().as_secs_f64()
    );
}

/// Freezes the fleet's own redis-server (SIGSTOP, then SIGCONT) for `seconds`:
/// unreachable, but its data survives, as in a network partition.
async fn redis_pause(node: &RedisNode, seconds: u64, begun: Instant) {
    let at = begun.elapsed();
    node.pause(Duration::from_secs(seconds))
        .await
        .expect("pause the fleet's Redis");
    eprintln!(
        "chaos: Redis paused from {:.1} s for {seconds} s",
        at.as_secs_f64()
    );
}

/// What the driver actually did.
#[derive(Default)]
struct Events {
    kills: std::sync::atomic::AtomicU64,
    rabbitmq_restarts: std::sync::atomic::AtomicU64,
    redis_pauses: std::sync::atomic::AtomicU64,
    llm_bursts: std::sync::atomic::AtomicU64,
    codegen_bursts: std::sync::atomic::AtomicU64,
}

#[tokio::test]
async fn every_task_gets_exactly_one_answer_under_faults() {
    let tasks: u64 = std::env::var("CHAOS_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let (rabbit, redis) = tokio::join!(
        RabbitNode::start(RabbitOptions::default()),
        RedisNode::start(RedisOptions::default()),
    );
    let rabbit = Arc::new(rabbit.expect("the test's own RabbitMQ node starts"));
    let redis = Arc::new(redis.expect("the test's own Redis starts"));
    let options = FleetOptions {
        replicas: 2,
        amqp_url: Some(rabbit.amqp_url()),
        redis_url: Some(redis.url()),
        extra: vec![
            ("MAX_ATTEMPTS".into(), "25".into()),
            ("LLM_BREAKER_FAILURES".into(), "5".into()),
            ("LLM_BREAKER_OPEN_SECS".into(), "1".into()),
            // The fake LLM has no quota: the fleet-wide request and token limits
            // (60 requests a minute by default) would hold hundreds of tasks
            // back for a minute and hide what the faults cost.
            ("LLM_REQUESTS_PER_MIN".into(), "100000".into()),
            ("LLM_TOKENS_PER_MIN".into(), "100000000".into()),
        ],
    };
    let fleet = Arc::new(Mutex::new(
        Fleet::start(options).await.expect("fleet starts"),
    ));
    let (repo_url, fakes_llm, fakes_codegen) = {
        let f = fleet.lock().await;
        (
            repo(f.dir.path(), "chaos-repo"),
            f.fakes.llm_failing.clone(),
            f.fakes.codegen_failing.clone(),
        )
    };
    let started = Instant::now();

    // The driver: kills, restarts, one broker restart, one Redis pause, bursts.
    // Requests are paced over `send_window`, so the faults overlap the work.
    let rate: u64 = std::env::var("CHAOS_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let send_window = Duration::from_millis(tasks * 1000 / rate.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(Events::default());
    let driver = {
        let (fleet, stop, events) = (fleet.clone(), stop.clone(), events.clone());
        let (fakes_llm, fakes_codegen) = (fakes_llm.clone(), fakes_codegen.clone());
        let (rabbit, redis) = (rabbit.clone(), redis.clone());
        tokio::spawn(async move {
            let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ tasks);
            let begun = started;
            // CHAOS_FAULTS=0 measures the same load without faults (latency baseline).
            if std::env::var("CHAOS_FAULTS").is_ok_and(|v| v == "0") {
                return;
            }
            let mut round = 0u64;
            loop {
                let done = stop.load(Ordering::SeqCst);
                let broker_due = begun.elapsed() >= send_window.mul_f64(0.3);
                let redis_due = begun.elapsed() >= send_window.mul_f64(0.6);
                if events.rabbitmq_restarts.load(Ordering::SeqCst) == 0 && (broker_due || done) {
                    rabbitmq_crash(&rabbit, begun).await;
                    events.rabbitmq_restarts.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if events.redis_pauses.load(Ordering::SeqCst) == 0 && (redis_due || done) {
                    redis_pause(&redis, 3, begun).await;
                    events.redis_pauses.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if done {
                    return;
                }
                round += 1;
                {
                    let mut f = fleet.lock().await;
                    let workers: Vec<&'static str> = f
                        .services
                        .iter()
                        .filter(|s| s.name != "ingest")
                        .map(|s| s.log_name)
                        .collect();
                    let victim = workers[dice.next(workers.len() as u64) as usize];
                    f.service(victim).kill().await;
                    events.kills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300 + dice.next(500))).await;
                    let _ = f.service(victim).start();
                }
                let burst = Duration::from_millis(1500);
                if round.is_multiple_of(3) {
                    fakes_llm.store(true, Ordering::SeqCst);
                    tokio::time::sleep(burst).await;
                    fakes_llm.store(false, Ordering::SeqCst);
                    events.llm_bursts.fetch_add(1, Ordering::SeqCst);
                }
                if round.is_multiple_of(4) {
                    fakes_codegen.store(true, Ordering::SeqCst);
                    tokio::time::sleep(burst).await;
                    fakes_codegen.store(false, Ordering::SeqCst);
                    events.codegen_bursts.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(500 + dice.next(1000))).await;
            }
        })
    };

    // The load: every source, eight requests at a time.
    let client = fleet.lock().await.client.clone();
    let sent = send_paced(&client, tasks, rate, started, &repo_url).await;
    let sending_took = started.elapsed();
    // Keep the faults going a little after the last request, then stop them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    driver.await.unwrap();
    fakes_llm.store(false, Ordering::SeqCst);
    fakes_codegen.store(false, Ordering::SeqCst);
    {
        let mut f = fleet.lock().await;
        for service in &mut f.services {
            if !service.is_running() {
                let _ = service.start();
            }
        }
    }

    let fleet = Arc::try_unwrap(fleet)
        .ok()
        .expect("no other holders")
        .into_inner();
    let report = Report::drain(&fleet, &sent, DRAIN_WITHIN).await;
    let dead = dead_letters(&fleet.amqp_url, &fleet.prefix).await;
    let depths = contexten_fleet_tests::cleanup::depths_on(&fleet.amqp_url, &fleet.prefix).await;

    println!("\n=== chaos report ===");
    println!(
        "requests sent: {tasks}, accepted: {}, refused after retries: {}",
        sent.len(),
        tasks as usize - sent.len()
    );
    println!(
        "faults: {} worker SIGKILLs + restarts, {} RabbitMQ crash(es) + restart(s), {} Redis pause(s) of 3 s, {} LLM and {} Codegen failure bursts of 1.5 s",
        events.kills.load(Ordering::SeqCst),
        events.rabbitmq_restarts.load(Ordering::SeqCst),
        events.redis_pauses.load(Ordering::SeqCst),
        events.llm_bursts.load(Ordering::SeqCst),
        events.codegen_bursts.load(Ordering::SeqCst)
    );
    println!(
        "sending took {:.1} s; answered within {:.1} s of the start",
        sending_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "answered exactly once: {}, missing: {}, duplicated: {}",
        report.answered, report.missing, report.duplicated
    );
    report.print_by_source();
    println!("failure answers among them: {}", report.failures);
    println!("dead letters: {}", describe_dead(&dead));
    println!("queue depths at the end: {depths:?}");
    if !report.latencies.is_empty() {
        let l = &report.latencies;
        println!(
            "API ingest → signed callback latency over {} tasks: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l[l.len() - 1]
        );
    }
    let mut all: Vec<Duration> = report
        .by_source_latency
        .values()
        .flatten()
        .copied()
        .collect();
    all.sort();
    for (source, l) in report
        .by_source_latency
        .iter()
        .map(|(s, l)| (*s, l))
        .chain([("all", &all)])
    {
        if let Some(max) = l.last() {
            println!(
                "  {source:<7} accepted → first final answer over {} tasks: p50 {:?}, p90 {:?}, p99 {:?}, max {max:?}",
                l.len(),
                percentile(l, 0.5),
                percentile(l, 0.9),
                percentile(l, 0.99),
            );
        }
    }
    let logs = report.logs_if_wrong(&fleet);
    fleet.stop().await;
    // The test's own broker and Redis go with it (they are killed on drop).
    drop((rabbit, redis));
    assert_eq!(sent.len() as u64, tasks, "ingest refused requests for good");
    let faults = !std::env::var("CHAOS_FAULTS").is_ok_and(|v| v == "0");
    assert_eq!(
        events.rabbitmq_restarts.load(Ordering::SeqCst),
        u64::from(faults),
        "the broker restart happened"
    );
    report.assert_exactly_once(&logs);
    let unexplained: Vec<_> = depths
        .iter()
        .filter(|(q, n)| **n > 0 && !q.ends_with(".dead"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "work left in queues: {unexplained:?}"
    );
}
