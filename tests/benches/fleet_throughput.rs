//! Whole-fleet capacity: API tasks per second at saturation through
//! context → generate → dispatch (a signed callback), and the CPU time each
//! process spends per task, so the README can state capacity per replica and
//! how many replicas of each worker one broker feeds.
//!
//! The five release binaries run as processes against the machine's RabbitMQ
//! and Redis (under a unique prefix, removed at the end) with zero-latency
//! fakes (wiremock) for the LLM and the callback receiver. A warm-up round
//! fills the context worker's analysis cache and the generator's repository
//! cache, so the rounds measure the steady state of one repository. Every
//! task's text differs, so the generator's answer cache never short-circuits a
//! task. The LLM limiters are lifted, so the figures are the fleet's own.
//!
//! CPU time is read from `/proc/<pid>/stat` (user + system) of each fleet
//! process, and of the broker and Redis processes that listen on the fleet's
//! ports (read only, found with `ss`; shown as n/a when they cannot be found).
//!
//! Knobs: `BENCH_TASKS` (tasks per round, default 1000), `BENCH_ROUNDS`
//! (default 3), `BENCH_CONCURRENCY` (requests in flight, default 32),
//! `BENCH_WARMUP` (default 20). Build the binaries first:
//! `cargo build --release --workspace --bins` (`make bench` does).

use contexten_fleet_tests::harness::{Fleet, FleetClient, FleetOptions};
use contexten_testkit::env_or;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long one round may take before the benchmark gives up on it.
const ROUND_WITHIN: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tasks: usize = env_or("BENCH_TASKS", 1000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let warmup: usize = env_or("BENCH_WARMUP", 20);

    let fleet = Fleet::start(FleetOptions {
        // The fleet's own limits on the LLM (requests and tokens per minute
        // across the fleet) would measure the limiter, not the capacity.
        extra: [
            ("RUST_LOG", "warn"),
            ("LLM_REQUESTS_PER_MIN", "100000"),
            ("LLM_TOKENS_PER_MIN", "100000000"),
            ("LLM_MAX_CONCURRENCY", "64"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..FleetOptions::default()
    })
    .await?;
    let repo = sample_repo(fleet.dir.path());
    let clock_ticks = clock_ticks_per_second();
    let mut processes: Vec<(String, u32)> = fleet
        .services
        .iter()
        .filter_map(|s| s.pid().map(|pid| (s.log_name.to_owned(), pid)))
        .collect();
    for (name, url) in [("rabbitmq", &fleet.amqp_url), ("redis", &fleet.redis_url)] {
        match port_of(url).and_then(listener_pid) {
            Some(pid) => processes.push((name.to_owned(), pid)),
            None => eprintln!("{name}: no listening process found; its CPU shows as n/a"),
        }
    }

    println!(
        "fleet throughput: {tasks} API tasks a round, {rounds} rounds, {concurrency} in flight, \
         strategy context (context → generate → dispatch to a callback)"
    );
    let started = Instant::now();
    run_round(&fleet, &repo, "warmup", warmup, concurrency).await?;
    println!(
        "warm-up: {warmup} tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut per_second = Vec::new();
    let mut cpu_per_task: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let before = cpu_ticks(&processes);
        let started = Instant::now();
        let mut round_latencies =
            run_round(&fleet, &repo, &format!("r{round}"), tasks, concurrency).await?;
        let wall = started.elapsed().as_secs_f64();
        let after = cpu_ticks(&processes);
        per_second.push(tasks as f64 / wall);
        for (name, _) in &processes {
            if let (Some(a), Some(b)) = (after.get(name), before.get(name)) {
                let ms = (a - b) as f64 * 1000.0 / clock_ticks / tasks as f64;
                cpu_per_task.entry(name.clone()).or_default().push(ms);
            }
        }
        println!(
            "round {round}: {tasks} tasks in {wall:.1} s = {:.1} tasks/s",
            tasks as f64 / wall
        );
        latencies.append(&mut round_latencies);
    }
    latencies.sort_by(f64::total_cmp);
    let throughput = median(&mut per_second);
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| tasks/s at saturation (median of {rounds}) | {throughput:.1} |");
    println!(
        "| latency submit → final callback p50 / p99 | {:.0} ms / {:.0} ms |",
        percentile(&latencies, 0.50) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0
    );
    println!();
    println!("| process | CPU ms per task (median) | tasks/s per core at that cost |");
    println!("|---|---|---|");
    let mut medians = BTreeMap::new();
    for (name, _) in &processes {
        match cpu_per_task.get_mut(name) {
            Some(values) => {
                let ms = median(values);
                medians.insert(name.clone(), ms);
                println!("| {name} | {ms:.2} | {} |", per_core(ms));
            }
            None => println!("| {name} | n/a | n/a |"),
        }
    }
    if let Some(&broker) = medians.get("rabbitmq") {
        println!();
        println!(
            "One broker core carries about {} tasks/s, enough to keep busy:",
            per_core(broker)
        );
        for worker in ["ingest", "context-worker", "generator-worker", "dispatcher"] {
            if let Some(&ms) = medians.get(worker) {
                println!(
                    "  {worker}: {:.1} single-core replicas",
                    ms / broker.max(f64::EPSILON)
                );
            }
        }
    }
    fleet.stop().await;
    Ok(())
}

/// Sends `count` API tasks with at most `concurrency` submissions in flight
/// and waits until each has its final callback; returns each task's latency
/// from submission to final callback, in seconds.
async fn run_round(
    fleet: &Fleet,
    repo: &str,
    round: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<f64>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let client: FleetClient = fleet.client.clone();
        let body = json!({
            "text": format!("write a new module app/gen_{round}_{i}.py with a parse_duration function"),
            "repository_url": repo,
            "strategy": "context",
            "callback_url": format!("{}/hooks/{round}", fleet.client.callback_uri),
        });
        let key = format!("bench-{round}-{i}");
        senders.spawn(async move {
            let sent = Instant::now();
            let response = client.submit(&body, Some(&key)).await;
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            drop(permit);
            match answer["task_id"].as_str() {
                Some(id) if status.is_success() => Ok((id.to_owned(), sent)),
                _ => Err(anyhow::anyhow!("ingest answered {status}: {answer}")),
            }
        });
    }
    let mut submitted: HashMap<String, Instant> = HashMap::new();
    while let Some(joined) = senders.join_next().await {
        let (id, at) = joined??;
        submitted.insert(id, at);
    }
    let deadline = Instant::now() + ROUND_WITHIN;
    loop {
        let finals: HashMap<String, Instant> = {
            let seen = fleet.fakes.callbacks.lock().expect("callback log");
            seen.iter()
                .filter(|c| c.kind == "task.final" || c.kind == "task.failure")
                .filter(|c| submitted.contains_key(&c.task_id))
                .map(|c| (c.task_id.clone(), c.at))
                .collect()
        };
        if finals.len() == submitted.len() {
            let failures: HashSet<String> = {
                let seen = fleet.fakes.callbacks.lock().expect("callback log");
                seen.iter()
                    .filter(|c| c.kind == "task.failure" && submitted.contains_key(&c.task_id))
                    .map(|c| c.task_id.clone())
                    .collect()
            };
            anyhow::ensure!(
                failures.is_empty(),
                "{} tasks failed instead of answering (first: {:?})\n{}",
                failures.len(),
                failures.iter().next(),
                fleet.logs(20)
            );
            return Ok(submitted
                .iter()
                .map(|(id, sent)| finals[id].duration_since(*sent).as_secs_f64())
                .collect());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "round {round}: {} of {} tasks answered within {ROUND_WITHIN:?}\n{}",
            finals.len(),
            submitted.len(),
            fleet.logs(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small Python package (40 modules importing each other), enough that the
/// context worker's analysis and prompt are real work.
fn sample_repo(dir: &Path) -> String {
    let root = dir.join("bench-repo");
    std::fs::create_dir_all(root.join("app")).expect("repo dir");
    for i in 0..40 {
        let previous = if i > 0 {
            format!("from app.mod{} import helper_{}\n\n", i - 1, i - 1)
        } else {
            String::new()
        };
        let body = format!(
            "\"\"\"Module {i}: durations and their units.\"\"\"\n{previous}\n\
             UNITS_{i} = {{'h': 3600, 'm': 60, 's': 1}}\n\n\n\
             def helper_{i}(seconds: int) -> str:\n    \"\"\"Render seconds as hours and minutes.\"\"\"\n    \
             hours, rest = divmod(seconds, 3600)\n    return f'{{hours}}h{{rest // 60}}m'\n\n\n\
             class Formatter{i}:\n    def render(self, value: int) -> str:\n        return helper_{i}(value)\n"
        );
        std::fs::write(root.join(format!("app/mod{i}.py")), body).expect("module");
    }
    std::fs::write(root.join("README.md"), "# bench\nDuration helpers.\n").expect("readme");
    format!("file://{}", root.display())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU ticks of each process that is still there.
fn cpu_ticks(processes: &[(String, u32)]) -> HashMap<String, u64> {
    processes
        .iter()
        .filter_map(|(name, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) start at state.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some((name.clone(), user + system))
        })
        .collect()
}

fn port_of(url: &str) -> Option<u16> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    host_port.rsplit(':').next()?.parse().ok()
}

/// The process listening on a loopback TCP port, as `ss` reports it.
fn listener_pid(port: u16) -> Option<u32> {
    let output = std::process::Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let at = text.find("pid=")? + 4;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn per_core(cpu_ms_per_task: f64) -> String {
    if cpu_ms_per_task > 0.0 {
        format!("{:.0}", 1000.0 / cpu_ms_per_task)
    } else {
        "n/a".into()
    }
}
