//! A fake Codegen REST API on a wiremock server, speaking the real wire format:
//! `AgentRunResponse` bodies, both error shapes (`{message, status_code}` and
//! `{detail, status_code}`), FastAPI 422 lists, upper- and lower-case statuses,
//! bearer auth, and a log of every request with its arrival time.

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const ORG_ID: u64 = 4242;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
    pub status: u16,
}

/// A canned answer for creates whose prompt contains `needle` (any prompt when
/// `None`), used `times` times (forever when `None`).
pub struct CreateRule {
    pub needle: Option<String>,
    pub times: Option<usize>,
    pub response: ResponseTemplate,
    pub status: u16,
}

#[derive(Default)]
struct Run {
    statuses: VecDeque<String>,
    last: String,
    metadata: Value,
}

#[derive(Default)]
struct State {
    next_id: u64,
    runs: HashMap<u64, Run>,
    creates: Vec<Seen>,
    gets: Vec<(Instant, u64)>,
    resumes: Vec<Value>,
    lists: usize,
    rules: Vec<CreateRule>,
    /// Status sequences by prompt needle; the default when none matches.
    sequences: Vec<(String, Vec<String>)>,
    default_sequence: Vec<String>,
    /// Every request in arrival order, with its endpoint.
    timeline: Vec<(Instant, &'static str)>,
    /// Added to every response while set.
    delay: Option<Duration>,
}

/// The fake server and what it saw.
#[derive(Clone)]
pub struct FakeCodegen {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
    token: String,
}

pub fn error_body(shape: &str, status: u16, text: &str) -> Value {
    match shape {
        "detail" => json!({"detail": text, "status_code": status}),
        _ => json!({"message": text, "status_code": status}),
    }
}

pub fn error(status: u16, shape: &str, text: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(error_body(shape, status, text))
}

impl FakeCodegen {
    pub async fn start(token: &str) -> Self {
        let server = Arc::new(MockServer::start().await);
        let state = Arc::new(Mutex::new(State {
            next_id: 100,
            default_sequence: vec!["PENDING".into(), "running".into(), "COMPLETE".into()],
            ..State::default()
        }));
        let fake = FakeCodegen {
            server,
            state,
            token: token.to_owned(),
        };
        let base = format!("/v1/organizations/{ORG_ID}/agent");
        Mock::given(method("POST"))
            .and(path(format!("{base}/run")))
            .respond_with(Endpoint(fake.clone(), Kind::Create))
            .mount(&fake.server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{base}/run/resume")))
            .respond_with(Endpoint(fake.clone(), Kind::Resume))
            .mount(&fake.server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(format!(r"^{base}/run/\d+$")))
            .respond_with(Endpoint(fake.clone(), Kind::Get))
            .mount(&fake.server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{base}/runs")))
            .respond_with(Endpoint(fake.clone(), Kind::List))
            .mount(&fake.server)
            .await;
        fake
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Statuses every new (or resumed) run reports, one per GET; the last repeats.
    pub fn default_statuses(&self, statuses: &[&str]) {
        self.state.lock().unwrap().default_sequence =
            statuses.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Statuses for runs whose prompt contains `needle`.
    pub fn statuses_for(&self, needle: &str, statuses: &[&str]) {
        self.state.lock().unwrap().sequences.push((
            needle.to_owned(),
            statuses.iter().map(|s| (*s).to_owned()).collect(),
        ));
    }

    /// Delays every response from now on (the requests still arrive at once).
    pub fn slow_down(&self, delay: Duration) {
        self.state.lock().unwrap().delay = Some(delay);
    }

    /// Every request so far: arrival time and endpoint.
    pub fn timeline(&self) -> Vec<(Instant, &'static str)> {
        self.state.lock().unwrap().timeline.clone()
    }

    pub fn rule(&self, rule: CreateRule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// A run that exists already (created by a request whose answer was lost).
    pub fn insert_run(&self, metadata: Value) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = state.next_id;
        let sequence = state.default_sequence.clone();
        state.runs.insert(id, new_run(&sequence, metadata));
        id
    }

    pub fn creates(&self) -> Vec<Seen> {
        self.state.lock().unwrap().creates.clone()
    }

    pub fn gets(&self) -> Vec<(Instant, u64)> {
        self.state.lock().unwrap().gets.clone()
    }

    pub fn resumes(&self) -> Vec<Value> {
        self.state.lock().unwrap().resumes.clone()
    }

    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }
}

fn new_run(sequence: &[String], metadata: Value) -> Run {
    Run {
        statuses: sequence.iter().cloned().collect(),
        last: sequence
            .last()
            .cloned()
            .unwrap_or_else(|| "COMPLETE".into()),
        metadata,
    }
}

fn run_body(id: u64, status: &str, metadata: &Value) -> Value {
    let done = status.eq_ignore_ascii_case("complete") || status.eq_ignore_ascii_case("completed");
    json!({
        "id": id,
        "organization_id": ORG_ID,
        "status": status,
        "created_at": "2026-11-29T12:00:00.000000",
        "web_url": format!("https://codegen.com/agent/trace/{id}"),
        "result": if done { json!(format!("Run {id}: refactored the parser and added tests.")) } else { Value::Null },
        "summary": if done { json!(format!("Run {id} opened a pull request")) } else { Value::Null },
        "source_type": "API",
        "github_pull_requests": if done { json!([{
            "id": id * 10,
            "title": "Refactor the parser",
            "url": format!("https://github.com/octo/hello/pull/{id}"),
            "created_at": "2026-11-29T12:05:00.000000",
            "head_branch_name": format!("codegen-bot/run-{id}")
        }]) } else { Value::Null },
        "metadata": metadata,
    })
}

enum Kind {
    Create,
    Resume,
    Get,
    List,
}

struct Endpoint(FakeCodegen, Kind);

impl Respond for Endpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let response = self.answer(at, request);
        let mut state = self.0.state.lock().unwrap();
        let name = match self.1 {
            Kind::Create => "create",
            Kind::Resume => "resume",
            Kind::Get => "get",
            Kind::List => "list",
        };
        state.timeline.push((at, name));
        match state.delay {
            Some(delay) => response.set_delay(delay),
            None => response,
        }
    }
}

impl Endpoint {
    fn answer(&self, at: Instant, request: &Request) -> ResponseTemplate {
        let fake = &self.0;
        let bearer = format!("Bearer {}", fake.token);
        let authorised = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(bearer.as_str());
        if !authorised {
            return error(
                403,
                "message",
                "You do not have access to this organization.",
            );
        }
        let mut state = fake.state.lock().unwrap();
        match self.1 {
            Kind::Create => {
                let body: Value = request.body_json().unwrap_or(Value::Null);
                let prompt = body["prompt"].as_str().unwrap_or_default().to_owned();
                if prompt.is_empty() {
                    let detail = json!({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]});
                    state.creates.push(Seen {
                        at,
                        body,
                        status: 422,
                    });
                    return ResponseTemplate::new(422).set_body_json(detail);
                }
                let rule = state.rules.iter_mut().find(|r| {
                    r.needle
                        .as_ref()
                        .is_none_or(|n| prompt.contains(n.as_str()))
                        && r.times != Some(0)
                });
                if let Some(rule) = rule {
                    if let Some(times) = rule.times.as_mut() {
                        *times -= 1;
                    }
                    let (response, status) = (rule.response.clone(), rule.status);
                    if status != 200 {
                        state.creates.push(Seen { at, body, status });
                        return response;
                    }
                    return create(&mut state, at, body, &prompt, Some(response));
                }
                create(&mut state, at, body, &prompt, None)
            }
            Kind::Resume => {
                let body: Value = request.body_json().unwrap_or(Value::Null);
                state.resumes.push(body.clone());
                let id = body["agent_run_id"].as_u64().unwrap_or(0);
                let prompt = body["prompt"].as_str().unwrap_or_default().to_owned();
                let sequence = sequence_for(&state, &prompt);
                match state.runs.get_mut(&id) {
                    None => error(404, "message", "Agent run not found."),
                    Some(run) => {
                        run.statuses = sequence.iter().cloned().collect();
                        run.last = sequence.last().cloned().unwrap_or_default();
                        ResponseTemplate::new(200).set_body_json(run_body(
                            id,
                            "ACTIVE",
                            &run.metadata,
                        ))
                    }
                }
            }
            Kind::Get => {
                let id: u64 = request
                    .url
                    .path()
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                state.gets.push((at, id));
                match state.runs.get_mut(&id) {
                    None => error(404, "detail", "Agent run not found."),
                    Some(run) => {
                        let status = run.statuses.pop_front().unwrap_or_else(|| run.last.clone());
                        ResponseTemplate::new(200).set_body_json(run_body(
                            id,
                            &status,
                            &run.metadata,
                        ))
                    }
                }
            }
            Kind::List => {
                state.lists += 1;
                let mut ids: Vec<u64> = state.runs.keys().copied().collect();
                ids.sort_unstable_by(|a, b| b.cmp(a));
                let items: Vec<Value> = ids
                    .iter()
                    .take(100)
                    .map(|id| run_body(*id, "ACTIVE", &state.runs[id].metadata))
                    .collect();
                let total = ids.len();
                ResponseTemplate::new(200).set_body_json(json!({
                    "items": items, "total": total, "page": 1, "size": 100,
                    "pages": total.div_ceil(100).max(1)
                }))
            }
        }
    }
}

fn sequence_for(state: &State, prompt: &str) -> Vec<String> {
    state
        .sequences
        .iter()
        .find(|(needle, _)| prompt.contains(needle.as_str()))
        .map(|(_, seq)| seq.clone())
        .unwrap_or_else(|| state.default_sequence.clone())
}

/// A successful create; `template` carries extras such as a delay.
fn create(
    state: &mut State,
    at: Instant,
    body: Value,
    prompt: &str,
    template: Option<ResponseTemplate>,
) -> ResponseTemplate {
    state.next_id += 1;
    let id = state.next_id;
    let sequence = sequence_for(state, prompt);
    let metadata = body["metadata"].clone();
    state.runs.insert(id, new_run(&sequence, metadata.clone()));
    state.creates.push(Seen {
        at,
        body,
        status: 200,
    });
    template
        .unwrap_or_else(|| ResponseTemplate::new(200))
        .set_body_json(run_body(id, "PENDING", &metadata))
}

/// Largest number of `times` inside any window of `window` starting at one of them.
pub fn max_in_any_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| t.duration_since(sorted[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}
