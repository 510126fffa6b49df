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

use contexten_envelope::{Names, Stage};
use contexten_fleet_tests::fakes::Fakes;
use contexten_fleet_tests::harness::*;
use contexten_testkit::{RabbitNode, RabbitOptions, RedisNode, RedisOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long the fleet may take to answer everything once the faults stop.
const DRAIN_WITHIN: Duration = Duration::from_secs(240);
/// How long a sender keeps retrying one request while ingest answers 503.
const SEND_RETRY_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
enum Sent {
    Api { task_id: String, at: Instant },
    Github { number: u64, at: Instant },
    Slack { thread_ts: String, at: Instant },
    Linear { issue_id: String, at: Instant },
}

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

fn repo(dir: &std::path::Path) -> String {
    let root = dir.join("chaos-repo");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(
        root.join("app/timeutil.py"),
        "def format_duration(seconds: int) -> str:\n    return f'{seconds}s'\n",
    )
    .unwrap();
    format!("file://{}", root.display())
}

async fn send_one(fleet: &FleetClient, i: u64, repo: &str) -> Option<Sent> {
    // 503 while the broker restarts: retry the same delivery, as providers do.
    let sent = contexten_testkit::poll(SEND_RETRY_WITHIN, Duration::from_millis(500), || async {
        let (status, sent) = match i % 10 {
            0..=3 => {
                let body = if i.is_multiple_of(2) {
                    json!({"text": format!("write a new module app/m{i}.py with a parse_duration function"), "repository_url": repo,
                           "strategy": "context", "callback_url": format!("{}/hooks/{i}", fleet.callback_uri)})
                } else {
                    json!({"text": "write a python function parse_duration(text)", "strategy": "simple",
                           "callback_url": format!("{}/hooks/{i}", fleet.callback_uri)})
                };
                let response = fleet.submit(&body, Some(&format!("chaos-{i}"))).await;
                let status = response.status();
                let task_id = response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["task_id"].as_str().map(str::to_owned));
                (
                    status,
                    task_id.map(|task_id| Sent::Api {
                        task_id,
                        at: Instant::now(),
                    }),
                )
            }
            4..=6 => {
                let number = 1000 + i;
                let command = if i % 20 == 4 {
                    "agent refactor the duration helpers and open a PR"
                } else {
                    "generate write a new module app/parsing.py with parse_duration"
                };
                let payload = json!({
                    "action": "created",
                    "issue": {"number": number, "title": "chaos", "state": "open", "body": "", "user": {"login": "octocat", "type": "User"}, "labels": [], "author_association": "OWNER"},
                    "comment": {"id": 500000 + i, "body": format!("/contexten {command}"), "user": {"login": "octocat", "type": "User"}, "author_association": "OWNER"},
                    "repository": {"id": 1, "name": "hello", "full_name": "octo/hello", "private": false, "owner": {"login": "octo", "type": "Organization"}, "clone_url": repo, "default_branch": "main"},
                    "sender": {"login": "octocat", "type": "User"}, "installation": {"id": 1}
                });
                let response = fleet
                    .github_webhook("issue_comment", &format!("chaos-gh-{i}"), &payload)
                    .await;
                (
                    response.status(),
                    Some(Sent::Github {
                        number,
                        at: Instant::now(),
                    }),
                )
            }
            7..=8 => {
                let thread_ts = format!("1764400000.{i:06}");
                let payload = json!({
                    "token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
                    "event_id": format!("Ev-chaos-{i}"), "event_time": unix_now(),
                    "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": true}],
                    "event": {"type": "app_mention", "user": "U0HUMAN", "text": "<@U0BOT> write a python function parse_duration(text)",
                              "ts": thread_ts, "channel": "C0CHAOS", "event_ts": thread_ts, "team": "T0001"}
                });
                let response = fleet.slack_event(&payload).await;
                (
                    response.status(),
                    Some(Sent::Slack {
                        thread_ts,
                        at: Instant::now(),
                    }),
                )
            }
            _ => {
                let issue_id = format!("iss-chaos-{i}");
                let payload = json!({
                    "action": "update", "type": "Issue", "actor": {"id": "u-grace", "type": "user", "name": "Grace"},
                    "createdAt": "2026-11-29T12:00:00.000Z",
                    "data": {"id": issue_id, "identifier": format!("ENG-{i}"), "title": "Write parse_duration",
                             "description": "A python function parse_duration(text).", "teamId": "team-1",
                             "labelIds": ["l-bot"], "labels": [{"id": "l-bot", "name": "contexten"}], "assigneeId": null},
                    "updatedFrom": {"labelIds": []}, "url": "https://linear.app/acme/issue/x", "organizationId": "org-1", "webhookId": "wh-chaos"
                });
                let response = fleet
                    .linear_webhook(&format!("chaos-linear-{i}"), payload)
                    .await;
                (
                    response.status(),
                    Some(Sent::Linear {
                        issue_id,
                        at: Instant::now(),
                    }),
                )
            }
        };
        if status.is_success() {
            Ok(sent)
        } else {
            Err(status)
        }
    })
    .await;
    sent.unwrap_or_else(|status| {
        eprintln!("request {i} still refused with {status} after {SEND_RETRY_WITHIN:?}");
        None
    })
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

fn is_final_marker(body: &str) -> bool {
    body.contains(":final -->") || body.contains(":failure -->")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
            repo(f.dir.path()),
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
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let mut senders = Vec::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = fleet.lock().await.client.clone();
    for _ in 0..8 {
        let (client, sent, next, repo_url) =
            (client.clone(), sent.clone(), next.clone(), repo_url.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= tasks {
                    return;
                }
                // Pace: request i goes out at i/rate seconds.
                let due = started + Duration::from_millis(i * 1000 / rate.max(1));
                tokio::time::sleep_until(due.into()).await;
                if let Some(s) = send_one(&client, i, &repo_url).await {
                    sent.lock().await.push(s);
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
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

    let sent = sent.lock().await.clone();
    let fleet = Arc::try_unwrap(fleet)
        .ok()
        .expect("no other holders")
        .into_inner();
    let report = eventually(DRAIN_WITHIN, || async {
        let report = Report::collect(&fleet, &sent).await;
        (report.missing == 0).then_some(report)
    })
    .await;
    let report = match report {
        Some(report) => report,
        None => Report::collect(&fleet, &sent).await,
    };
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
    for (source, (answered, total)) in &report.by_source {
        println!("  {source:<8} {answered}/{total}");
    }
    println!("failure answers among them: {}", report.failures);
    println!(
        "dead letters: {}",
        if dead.is_empty() {
            "none".to_owned()
        } else {
            format!("{dead:?}")
        }
    );
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
    let missing_detail = report.missing_detail.join("\n");
    let logs = if report.missing > 0 || report.duplicated > 0 {
        fleet.logs(30)
    } else {
        String::new()
    };
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
    assert_eq!(
        report.duplicated,
        0,
        "a reply was posted twice:\n{}\n{logs}",
        report.duplicated_detail.join("\n")
    );
    assert_eq!(
        report.missing, 0,
        "tasks without a final answer:\n{missing_detail}\n{logs}"
    );
    let unexplained: Vec<_> = depths
        .iter()
        .filter(|(q, n)| **n > 0 && !q.ends_with(".dead"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "work left in queues: {unexplained:?}"
    );
}

#[derive(Debug, Default)]
struct Report {
    answered: usize,
    missing: usize,
    duplicated: usize,
    failures: usize,
    by_source: BTreeMap<&'static str, (usize, usize)>,
    latencies: Vec<Duration>,
    /// Accepted → first final answer on the source's platform, per source.
    by_source_latency: BTreeMap<&'static str, Vec<Duration>>,
    missing_detail: Vec<String>,
    duplicated_detail: Vec<String>,
}

impl Report {
    async fn collect(fleet: &Fleet, sent: &[Sent]) -> Report {
        let mut report = Report::default();
        let first = FirstAnswers::from_posts(&fleet.fakes);
        // GitHub: final/failure comments per issue, by their hidden marker.
        let mut github: HashMap<u64, usize> = HashMap::new();
        for r in Fakes::requests(&fleet.fakes.github, "POST", "/repos/octo/hello/issues/*").await {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if r.url.path().ends_with("/comments")
                && is_final_marker(body["body"].as_str().unwrap_or_default())
            {
                let number = r
                    .url
                    .path()
                    .split('/')
                    .nth(5)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *github.entry(number).or_default() += 1;
            }
        }
        // Slack: messages whose metadata says final/failure, per thread.
        let mut slack: HashMap<String, usize> = HashMap::new();
        for r in Fakes::requests(&fleet.fakes.slack, "POST", "/api/chat.postMessage").await {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let kind = body["metadata"]["event_payload"]["kind"]
                .as_str()
                .unwrap_or_default();
            if kind == "final" || kind == "failure" {
                *slack
                    .entry(body["thread_ts"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
        // Linear: created comments per issue, distinct ids; the ack is "on it".
        let mut linear: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for r in Fakes::requests(&fleet.fakes.linear, "POST", "/graphql").await {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let input = &body["variables"]["input"];
            if body["query"]
                .as_str()
                .unwrap_or_default()
                .contains("commentCreate")
            {
                let text = input["body"].as_str().unwrap_or_default().to_lowercase();
                if text.contains("on it") && !text.contains("```") {
                    continue;
                }
                linear
                    .entry(input["issueId"].as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .insert(input["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        // Callbacks: distinct webhook ids of final/failure per task.
        let mut callbacks: HashMap<String, (std::collections::HashSet<String>, Instant)> =
            HashMap::new();
        for seen in fleet
            .fakes
            .callbacks
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
        {
            if seen.kind == "task.final" || seen.kind == "task.failure" {
                if seen.kind == "task.failure" {
                    report.failures += 1;
                }
                let entry = callbacks
                    .entry(seen.task_id.clone())
                    .or_insert_with(|| (Default::default(), seen.at));
                entry.0.insert(seen.webhook_id);
                entry.1 = entry.1.min(seen.at);
            }
        }
        for s in sent {
            let (source, count) = match s {
                Sent::Api { task_id, at } => {
                    let entry = callbacks.get(task_id);
                    if let Some((_, arrived)) = entry {
                        report
                            .latencies
                            .push(arrived.saturating_duration_since(*at));
                    }
                    ("api", entry.map(|e| e.0.len()).unwrap_or(0))
                }
                Sent::Github { number, .. } => ("github", github.get(number).copied().unwrap_or(0)),
                Sent::Slack { thread_ts, .. } => {
                    ("slack", slack.get(thread_ts).copied().unwrap_or(0))
                }
                Sent::Linear { issue_id, .. } => {
                    ("linear", linear.get(issue_id).map(|s| s.len()).unwrap_or(0))
                }
            };
            let (accepted, answered) = match s {
                Sent::Api { task_id, at } => (at, callbacks.get(task_id).map(|e| e.1)),
                Sent::Github { number, at } => (at, first.github.get(number).copied()),
                Sent::Slack { thread_ts, at } => (at, first.slack.get(thread_ts).copied()),
                Sent::Linear { issue_id, at } => (at, first.linear.get(issue_id).copied()),
            };
            if let Some(answered) = answered {
                report
                    .by_source_latency
                    .entry(source)
                    .or_default()
                    .push(answered.saturating_duration_since(*accepted));
            }
            let entry = report.by_source.entry(source).or_default();
            entry.1 += 1;
            match count {
                0 => {
                    report.missing += 1;
                    report.missing_detail.push(format!("{s:?}"));
                }
                1 => {
                    report.answered += 1;
                    entry.0 += 1;
                }
                n => {
                    report.answered += 1;
                    report.duplicated += 1;
                    report
                        .duplicated_detail
                        .push(format!("{s:?} answered {n} times"));
                    entry.0 += 1;
                }
            }
        }
        report.latencies.sort();
        for latencies in report.by_source_latency.values_mut() {
            latencies.sort();
        }
        report
    }
}

/// Keeps the earliest `at` per key.
fn keep<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Instant>, key: K, at: Instant) {
    let entry = map.entry(key).or_insert(at);
    *entry = (*entry).min(at);
}

/// When the first final answer of each GitHub issue, Slack thread and Linear
/// issue reached the fake platform.
#[derive(Default)]
struct FirstAnswers {
    github: HashMap<u64, Instant>,
    slack: HashMap<String, Instant>,
    linear: HashMap<String, Instant>,
}

impl FirstAnswers {
    fn from_posts(fakes: &Fakes) -> FirstAnswers {
        let mut first = FirstAnswers::default();
        let posts = fakes.posts.lock().map(|p| p.clone()).unwrap_or_default();
        for post in posts {
            match post.provider {
                "github" if is_final_marker(post.body["body"].as_str().unwrap_or_default()) => {
                    if let Some(number) = post.path.split('/').nth(5).and_then(|n| n.parse().ok()) {
                        keep(&mut first.github, number, post.at);
                    }
                }
                "slack" => {
                    let kind = post.body["metadata"]["event_payload"]["kind"]
                        .as_str()
                        .unwrap_or_default();
                    if kind == "final" || kind == "failure" {
                        let thread = post.body["thread_ts"].as_str().unwrap_or_default();
                        keep(&mut first.slack, thread.to_owned(), post.at);
                    }
                }
                "linear" => {
                    let input = &post.body["variables"]["input"];
                    let text = input["body"].as_str().unwrap_or_default().to_lowercase();
                    // The "on it" acknowledgement is not an answer.
                    let ack = text.contains("on it") && !text.contains("```");
                    if !ack {
                        let issue = input["issueId"].as_str().unwrap_or_default();
                        keep(&mut first.linear, issue.to_owned(), post.at);
                    }
                }
                _ => {}
            }
        }
        first
    }
}

/// Dead letters per stage and reason.
async fn dead_letters(amqp_url: &str, prefix: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let Ok(connection) =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await
    else {
        return counts;
    };
    if let Ok(channel) = connection.create_channel().await {
        let names = Names::new(prefix);
        for stage in Stage::QUEUED {
            for letter in contexten_cli::list_dead(&channel, &names, stage, 10_000)
                .await
                .unwrap_or_default()
            {
                *counts
                    .entry(format!("{}:{}", stage.as_str(), letter.reason))
                    .or_default() += 1;
            }
        }
    }
    let _ = connection.close(200, "report".into()).await;
    counts
}
