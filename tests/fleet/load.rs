//! The load and the answer counting that the whole-fleet fault tests share
//! (tests/chaos and tests/ha): tasks from every source (API, GitHub, Slack,
//! Linear) sent at a steady rate, then, per task, how many final answers
//! reached the fake platforms (exactly once: none missing, none twice), how
//! long the first one took, and what was dead-lettered. Each test keeps only
//! its faults and its report.

use crate::fakes::Fakes;
use crate::harness::{Fleet, FleetClient, eventually, unix_now};
use contexten_envelope::{Names, Stage};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a sender keeps retrying one request while ingest answers 503.
pub const SEND_RETRY_WITHIN: Duration = Duration::from_secs(90);
/// How many requests are in flight at once.
const SENDERS: usize = 8;

/// One accepted request: what identifies its answer on its platform, and when
/// ingest accepted it.
#[derive(Debug, Clone)]
pub enum Sent {
    Api { task_id: String, at: Instant },
    Github { number: u64, at: Instant },
    Slack { thread_ts: String, at: Instant },
    Linear { issue_id: String, at: Instant },
}

impl Sent {
    /// When ingest accepted the request.
    pub fn accepted_at(&self) -> Instant {
        match self {
            Sent::Api { at, .. }
            | Sent::Github { at, .. }
            | Sent::Slack { at, .. }
            | Sent::Linear { at, .. } => *at,
        }
    }
}

/// A small Python repository under `dir/<name>` for the tasks that read one;
/// returns its `file://` URL.
pub fn repo(dir: &std::path::Path, name: &str) -> String {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(
        root.join("app/timeutil.py"),
        "def format_duration(seconds: int) -> str:\n    return f'{seconds}s'\n",
    )
    .unwrap();
    format!("file://{}", root.display())
}

/// Sends `tasks` requests from `SENDERS` tasks at a time, request `i` at
/// `started + i / rate` seconds, and returns the accepted ones.
pub async fn send_paced(
    client: &FleetClient,
    tasks: u64,
    rate: u64,
    started: Instant,
    repo_url: &str,
) -> Vec<Sent> {
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (client, sent, next, repo_url) = (
            client.clone(),
            sent.clone(),
            next.clone(),
            repo_url.to_owned(),
        );
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
    sent.lock().await.clone()
}

/// Request `i`: by `i % 10`, an API task (0-3), a GitHub comment command
/// (4-6), a Slack mention (7-8) or a labelled Linear issue (9).
pub async fn send_one(fleet: &FleetClient, i: u64, repo: &str) -> Option<Sent> {
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

fn is_final_marker(body: &str) -> bool {
    body.contains(":final -->") || body.contains(":failure -->")
}

/// The `p` quantile (0..=1) of an ascending list; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Answers counted per accepted request.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests with at least one final answer.
    pub answered: usize,
    /// Requests with none.
    pub missing: usize,
    /// Requests answered more than once.
    pub duplicated: usize,
    /// Failure callbacks of API tasks.
    pub failures: usize,
    /// Per source: (answered, accepted).
    pub by_source: BTreeMap<&'static str, (usize, usize)>,
    /// API ingest → first signed callback, ascending.
    pub latencies: Vec<Duration>,
    /// Accepted → first final answer on the source's platform, per source, ascending.
    pub by_source_latency: BTreeMap<&'static str, Vec<Duration>>,
    pub missing_detail: Vec<String>,
    pub duplicated_detail: Vec<String>,
}

impl Report {
    /// Counts what the fakes have seen so far for each of `sent`.
    pub async fn collect(fleet: &Fleet, sent: &[Sent]) -> Report {
        let mut report = Report::default();
        let posts = FirstAnswers::from_posts(&fleet.fakes);
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
        let mut linear: HashMap<String, HashSet<String>> = HashMap::new();
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
        // Callbacks: distinct webhook ids of final/failure per task; the
        // earliest one's arrival is the API task's first answer.
        let mut callbacks: HashMap<String, HashSet<String>> = HashMap::new();
        let mut first_callback = HashMap::new();
        for seen in final_callbacks(&fleet.fakes) {
            if seen.kind == "task.failure" {
                report.failures += 1;
            }
            keep(&mut first_callback, seen.task_id.clone(), seen.at);
            callbacks
                .entry(seen.task_id)
                .or_default()
                .insert(seen.webhook_id);
        }
        let first = FirstAnswers {
            api: first_callback,
            ..posts
        };
        for s in sent {
            let (source, count) = match s {
                Sent::Api { task_id, .. } => {
                    ("api", callbacks.get(task_id).map_or(0, HashSet::len))
                }
                Sent::Github { number, .. } => ("github", github.get(number).copied().unwrap_or(0)),
                Sent::Slack { thread_ts, .. } => {
                    ("slack", slack.get(thread_ts).copied().unwrap_or(0))
                }
                Sent::Linear { issue_id, .. } => {
                    ("linear", linear.get(issue_id).map_or(0, HashSet::len))
                }
            };
            if let Some(latency) = first.latency(s) {
                if source == "api" {
                    report.latencies.push(latency);
                }
                report
                    .by_source_latency
                    .entry(source)
                    .or_default()
                    .push(latency);
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

    /// Collects until nothing is missing, or once more after `within`.
    pub async fn drain(fleet: &Fleet, sent: &[Sent], within: Duration) -> Report {
        let report = eventually(within, || async {
            let report = Report::collect(fleet, sent).await;
            (report.missing == 0).then_some(report)
        })
        .await;
        match report {
            Some(report) => report,
            None => Report::collect(fleet, sent).await,
        }
    }

    /// The fleet's last log lines when a task is missing or doubled, for the
    /// assertion messages (read before the fleet stops); empty otherwise.
    pub fn logs_if_wrong(&self, fleet: &Fleet) -> String {
        if self.missing > 0 || self.duplicated > 0 {
            fleet.logs(30)
        } else {
            String::new()
        }
    }

    /// Every accepted request answered exactly once: none twice, none missing.
    pub fn assert_exactly_once(&self, logs: &str) {
        assert_eq!(
            self.duplicated,
            0,
            "a reply was posted twice:\n{}\n{logs}",
            self.duplicated_detail.join("\n")
        );
        assert_eq!(
            self.missing,
            0,
            "tasks without a final answer:\n{}\n{logs}",
            self.missing_detail.join("\n")
        );
    }

    /// One line per source: answered / accepted.
    pub fn print_by_source(&self) {
        for (source, (answered, total)) in &self.by_source {
            println!("  {source:<8} {answered}/{total}");
        }
    }
}

/// The final and failure callbacks the fake callback receiver has seen.
fn final_callbacks(fakes: &Fakes) -> Vec<crate::fakes::CallbackSeen> {
    let seen = fakes
        .callbacks
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    seen.into_iter()
        .filter(|seen| seen.kind == "task.final" || seen.kind == "task.failure")
        .collect()
}

/// Keeps the earliest `at` per key.
fn keep<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Instant>, key: K, at: Instant) {
    let entry = map.entry(key).or_insert(at);
    *entry = (*entry).min(at);
}

/// When the first final answer of each API task (its callback), GitHub
/// issue, Slack thread and Linear issue reached the fakes.
#[derive(Default)]
pub struct FirstAnswers {
    api: HashMap<String, Instant>,
    github: HashMap<u64, Instant>,
    slack: HashMap<String, Instant>,
    linear: HashMap<String, Instant>,
}

impl FirstAnswers {
    /// What the fakes have seen so far.
    pub fn of(fakes: &Fakes) -> FirstAnswers {
        let mut first = FirstAnswers::from_posts(fakes);
        for seen in final_callbacks(fakes) {
            keep(&mut first.api, seen.task_id, seen.at);
        }
        first
    }

    /// The platforms' posts only (no API callbacks).
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

    /// When `sent`'s first final answer arrived, if it has.
    pub fn answered(&self, sent: &Sent) -> Option<Instant> {
        match sent {
            Sent::Api { task_id, .. } => self.api.get(task_id),
            Sent::Github { number, .. } => self.github.get(number),
            Sent::Slack { thread_ts, .. } => self.slack.get(thread_ts),
            Sent::Linear { issue_id, .. } => self.linear.get(issue_id),
        }
        .copied()
    }

    /// Accepted → first final answer, if it has come.
    pub fn latency(&self, sent: &Sent) -> Option<Duration> {
        self.answered(sent)
            .map(|answered| answered.saturating_duration_since(sent.accepted_at()))
    }
}

/// Dead letters per stage and reason.
pub async fn dead_letters(amqp_url: &str, prefix: &str) -> BTreeMap<String, usize> {
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

/// "none", or the dead letters per stage and reason.
pub fn describe_dead(dead: &BTreeMap<String, usize>) -> String {
    if dead.is_empty() {
        "none".to_owned()
    } else {
        format!("{dead:?}")
    }
}
