//! Fake GitHub, Linear, Slack, Codegen, LLM and callback servers speaking the
//! real wire formats, recording what the fleet sent. Failures can be switched on
//! in bursts (LLM and Codegen) for the fault test.

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Every fake the fleet talks to.
pub struct Fakes {
    pub github: MockServer,
    pub linear: MockServer,
    pub slack: MockServer,
    pub codegen: MockServer,
    pub llm: MockServer,
    pub callback: MockServer,
    /// GitLab's REST v4 under `/api/v4` (see [`gitlab`]).
    pub gitlab: MockServer,
    /// While set, the LLM answers 503 (a burst of provider failures).
    pub llm_failing: Arc<AtomicBool>,
    /// While set, Codegen answers 502.
    pub codegen_failing: Arc<AtomicBool>,
    /// The code the fake LLM answers with.
    pub llm_answer: Arc<std::sync::Mutex<String>>,
    /// Every callback received, with its arrival time.
    pub callbacks: Arc<std::sync::Mutex<Vec<CallbackSeen>>>,
    /// Every GitHub comment, Slack message and Linear comment posted, with its
    /// arrival time (the fault test's per-source latency).
    pub posts: Arc<std::sync::Mutex<Vec<PostSeen>>>,
}

/// One reply posted to a fake platform.
#[derive(Debug, Clone)]
pub struct PostSeen {
    /// `github`, `slack` or `linear`.
    pub provider: &'static str,
    pub path: String,
    pub body: Value,
    pub at: std::time::Instant,
}

/// Records a post in `posts`.
fn seen_post(
    posts: &std::sync::Mutex<Vec<PostSeen>>,
    provider: &'static str,
    request: &Request,
    body: &Value,
) {
    if let Ok(mut posts) = posts.lock() {
        posts.push(PostSeen {
            provider,
            path: request.url.path().to_owned(),
            body: body.clone(),
            at: std::time::Instant::now(),
        });
    }
}

/// One callback delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct CallbackSeen {
    pub task_id: String,
    /// `task.ack`, `task.progress`, `task.final`, `task.failure`.
    pub kind: String,
    pub webhook_id: String,
    pub at: std::time::Instant,
}

/// A Slack channel the fake's bot is not a member of: `chat.postMessage`
/// there answers `not_in_channel`.
pub const OUTSIDE_CHANNEL: &str = "C0OUTSIDE";

/// The fields of a form-encoded body.
pub fn url_form(body: &[u8]) -> std::collections::HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect()
}

fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn body_json(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap_or(Value::Null)
}

impl Fakes {
    /// Serves the bare repositories under `root` (`<owner>/<repo>.git`) from the
    /// fake GitHub as `<github uri>/<owner>/<repo>.git`, git's smart HTTP.
    pub async fn serve_git(&self, root: &Path) {
        let root = root.to_path_buf();
        Mock::given(path_regex(r"^/[^/]+/[^/]+\.git/"))
            .respond_with(move |request: &Request| {
                contexten_testkit::git_http::respond(&root, request)
            })
            .mount(&self.github)
            .await;
    }

    pub async fn start() -> Self {
        let fakes = Fakes {
            github: MockServer::start().await,
            linear: MockServer::start().await,
            slack: MockServer::start().await,
            codegen: MockServer::start().await,
            llm: MockServer::start().await,
            callback: MockServer::start().await,
            gitlab: MockServer::start().await,
            llm_failing: Arc::default(),
            codegen_failing: Arc::default(),
            callbacks: Arc::default(),
            posts: Arc::default(),
            llm_answer: Arc::new(std::sync::Mutex::new(
                "Here it is:\n\n```python\ndef parse_duration(text: str) -> int:\n    \"\"\"Seconds in a '1h30m' string.\"\"\"\n    units = {'h': 3600, 'm': 60, 's': 1}\n    total, number = 0, ''\n    for ch in text:\n        if ch.isdigit():\n            number += ch\n        else:\n            total += int(number) * units[ch]\n            number = ''\n    return total\n```\n".into(),
            )),
        };
        fakes.mount_github().await;
        fakes.mount_linear().await;
        fakes.mount_slack().await;
        fakes.mount_codegen().await;
        fakes.mount_llm().await;
        gitlab::mount(&fakes.gitlab).await;
        let seen = fakes.callbacks.clone();
        Mock::given(method("POST"))
            .respond_with(move |request: &Request| {
                let body = body_json(request);
                let header = |name: &str| {
                    request
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                if let Ok(mut seen) = seen.lock() {
                    seen.push(CallbackSeen {
                        task_id: body["data"]["task_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        kind: body["type"].as_str().unwrap_or_default().to_owned(),
                        webhook_id: header("webhook-id"),
                        at: std::time::Instant::now(),
                    });
                }
                ResponseTemplate::new(204)
            })
            .mount(&fakes.callback)
            .await;
        fakes
    }

    async fn mount_github(&self) {
        let ids = Arc::new(AtomicU64::new(9000));
        // Comments per issue path, so a marker search finds what was posted.
        let threads: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Value>>>> =
            Arc::default();
        let store = threads.clone();
        let posts = self.posts.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .respond_with(move |request: &Request| {
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let body = body_json(request);
                seen_post(&posts, "github", request, &body);
                let comment = json!({
                    "id": id,
                    "node_id": format!("IC_{id}"),
                    "html_url": format!("https://github.com{}#issuecomment-{id}", request.url.path()),
                    "body": body["body"],
                    "user": {"login": "contexten-bot", "type": "Bot"},
                    "created_at": "2026-11-29T12:00:00Z",
                    "updated_at": "2026-11-29T12:00:00Z"
                });
                if let Ok(mut threads) = store.lock() {
                    threads.entry(request.url.path().to_owned()).or_default().push(comment.clone());
                }
                ResponseTemplate::new(201).set_body_json(comment)
            })
            .mount(&self.github)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/repos/[^/]+/[^/]+/issues/(comments/)?\d+/reactions$",
            ))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(json!({"id": 1, "content": "eyes"})),
            )
            .mount(&self.github)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .respond_with(move |request: &Request| {
                let page = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "page")
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(1);
                let comments = threads
                    .lock()
                    .ok()
                    .and_then(|t| t.get(request.url.path()).cloned())
                    .unwrap_or_default();
                let page: Vec<Value> = comments
                    .into_iter()
                    .skip((page - 1) * 100)
                    .take(100)
                    .collect();
                ResponseTemplate::new(200).set_body_json(Value::Array(page))
            })
            .mount(&self.github)
            .await;
    }

    async fn mount_linear(&self) {
        let ids = Arc::new(AtomicU64::new(1));
        let created: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
        let posts = self.posts.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/graphql$"))
            .respond_with(move |request: &Request| {
                let body = body_json(request);
                let query = body["query"].as_str().unwrap_or_default();
                if query.contains("commentCreate") {
                    seen_post(&posts, "linear", request, &body);
                    let n = ids.fetch_add(1, Ordering::SeqCst);
                    let id = body["variables"]["input"]["id"].as_str().map(str::to_owned).unwrap_or_else(|| format!("c-{n}"));
                    if let Ok(mut created) = created.lock() {
                        created.insert(id.clone());
                    }
                    ResponseTemplate::new(200).set_body_json(json!({"data": {"commentCreate": {
                        "success": true,
                        "comment": {"id": id, "url": format!("https://linear.app/acme/comment/{id}")}
                    }}}))
                } else {
                    let id = body["variables"]["id"].as_str().unwrap_or_default().to_owned();
                    let known = created.lock().map(|c| c.contains(&id)).unwrap_or(false);
                    let comment = if known {
                        json!({"id": id, "url": format!("https://linear.app/acme/comment/{id}")})
                    } else {
                        Value::Null
                    };
                    ResponseTemplate::new(200).set_body_json(json!({"data": {"comment": comment}}))
                }
            })
            .mount(&self.linear)
            .await;
    }

    async fn mount_slack(&self) {
        let ts = Arc::new(AtomicU64::new(1));
        let threads: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Value>>>> =
            Arc::default();
        let store = threads.clone();
        let posts = self.posts.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/chat\.postMessage$"))
            .respond_with(move |request: &Request| {
                let body = body_json(request);
                // A channel the bot was never invited to, as Slack refuses it.
                if body["channel"] == OUTSIDE_CHANNEL {
                    return ResponseTemplate::new(200)
                        .set_body_json(json!({"ok": false, "error": "not_in_channel"}));
                }
                seen_post(&posts, "slack", request, &body);
                let n = ts.fetch_add(1, Ordering::SeqCst);
                let message = json!({
                    "type": "message", "ts": format!("1764417600.{n:06}"),
                    "text": body["text"], "thread_ts": body["thread_ts"], "metadata": body["metadata"]
                });
                let thread = format!("{}/{}", body["channel"].as_str().unwrap_or_default(), body["thread_ts"].as_str().unwrap_or_default());
                if let Ok(mut threads) = store.lock() {
                    threads.entry(thread).or_default().push(message.clone());
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "ok": true, "channel": body["channel"], "ts": message["ts"], "message": message
                }))
            })
            .mount(&self.slack)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/conversations\.replies$"))
            .respond_with(move |request: &Request| {
                let param = |name: &str| {
                    request
                        .url
                        .query_pairs()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let thread = format!("{}/{}", param("channel"), param("ts"));
                let messages = threads
                    .lock()
                    .ok()
                    .and_then(|t| t.get(&thread).cloned())
                    .unwrap_or_default();
                ResponseTemplate::new(200)
                    .set_body_json(json!({"ok": true, "messages": messages, "has_more": false}))
            })
            .mount(&self.slack)
            .await;
        // The three upload calls: the upload URL points back at this fake
        // (in production it is on files.slack.com).
        let files = Arc::new(AtomicU64::new(1));
        let upload_base = self.slack.uri();
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/files\.getUploadURLExternal$"))
            .respond_with(move |_: &Request| {
                let n = files.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(200).set_body_json(json!({
                    "ok": true,
                    "upload_url": format!("{upload_base}/upload/v1/F{n:08}"),
                    "file_id": format!("F{n:08}"),
                }))
            })
            .mount(&self.slack)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/upload/v1/"))
            .respond_with(|request: &Request| {
                ResponseTemplate::new(200).set_body_string(format!("OK - {}", request.body.len()))
            })
            .mount(&self.slack)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/files\.completeUploadExternal$"))
            .respond_with(|request: &Request| {
                let form: std::collections::HashMap<String, String> = url_form(&request.body);
                let files: Value = form
                    .get("files")
                    .and_then(|f| serde_json::from_str(f).ok())
                    .unwrap_or(Value::Null);
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "files": files}))
            })
            .mount(&self.slack)
            .await;
        // A slash command's response_url (hooks.slack.com in production).
        Mock::given(method("POST"))
            .and(path_regex(r"^/commands/"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&self.slack)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/reactions\.add$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .mount(&self.slack)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/conversations\.replies$"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "messages": []})),
            )
            .mount(&self.slack)
            .await;
    }

    async fn mount_codegen(&self) {
        let ids = Arc::new(AtomicU64::new(100));
        let failing = self.codegen_failing.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1/organizations/\d+/agent/run$"))
            .respond_with(move |request: &Request| {
                if failing.load(Ordering::SeqCst) {
                    return ResponseTemplate::new(502)
                        .set_body_json(json!({"detail": "bad gateway"}));
                }
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let body = body_json(request);
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id, "organization_id": 7, "status": "ACTIVE",
                    "created_at": "2026-11-29T12:00:00Z",
                    "web_url": format!("https://codegen.com/agent/trace/{id}"),
                    "result": null, "metadata": body["metadata"], "github_pull_requests": []
                }))
            })
            .mount(&self.codegen)
            .await;
        let failing = self.codegen_failing.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/v1/organizations/\d+/agent/run/\d+$"))
            .respond_with(move |request: &Request| {
                if failing.load(Ordering::SeqCst) {
                    return ResponseTemplate::new(503).set_body_json(json!({"message": "unavailable"}));
                }
                let id: u64 = request.url.path().rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id, "organization_id": 7, "status": "COMPLETE",
                    "created_at": "2026-11-29T12:00:00Z",
                    "web_url": format!("https://codegen.com/agent/trace/{id}"),
                    "summary": "Refactored the parser and opened a pull request",
                    "result": "Split parse_duration into a tokenizer and an evaluator.",
                    "github_pull_requests": [{"id": id, "title": "Refactor parser", "url": format!("https://github.com/octo/hello/pull/{id}"), "head_branch_name": "codegen/refactor"}]
                }))
            })
            .mount(&self.codegen)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/v1/organizations/\d+/agent/runs$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"items": [], "total": 0, "page": 1, "size": 100, "pages": 0}),
            ))
            .mount(&self.codegen)
            .await;
    }

    async fn mount_llm(&self) {
        let failing = self.llm_failing.clone();
        let answer = self.llm_answer.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1/chat/completions$"))
            .respond_with(move |_request: &Request| {
                if failing.load(Ordering::SeqCst) {
                    return ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "overloaded", "type": "server_error", "code": null}}));
                }
                let content = answer.lock().map(|a| a.clone()).unwrap_or_default();
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": "chatcmpl-fleet", "object": "chat.completion", "created": 1764417600, "model": "gpt-4.1",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 420, "completion_tokens": 96, "total_tokens": 516}
                }))
            })
            .mount(&self.llm)
            .await;
    }

    /// Requests a fake received whose path matches `pattern`.
    pub async fn requests(server: &MockServer, method_name: &str, pattern: &str) -> Vec<Request> {
        let re = regex_lite(pattern);
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == method_name && re(r.url.path()))
            .collect()
    }
}

/// A tiny matcher for the patterns used here: a path prefix followed by `*`, or an exact path.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |path: &str| match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern,
    }
}

/// A fake GitLab speaking REST v4 under [`gitlab::API`] (docs/platforms.md,
/// GitLab): notes on issues and merge requests, replies in a discussion,
/// award emoji, and the newest-first note listing the dispatcher searches
/// for a marker. Every call without [`gitlab::token`] in `PRIVATE-TOKEN` is
/// answered 401, as GitLab does.
pub mod gitlab {
    use super::{Arc, AtomicU64, Ordering, body_json};
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    /// The API's base path (`GITLAB_API_URL` is the fake's URI plus this).
    pub const API: &str = "/api/v4";

    /// The access token the fake accepts, built by concatenation so no
    /// fixture holds a literal one.
    pub fn token() -> String {
        ["glpat-", "fleet-", "fake"].concat()
    }

    /// One request the fake received.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        /// The `PRIVATE-TOKEN` header as sent.
        pub token: Option<String>,
        pub body: Value,
    }

    fn refused(request: &Request) -> Option<ResponseTemplate> {
        let sent = request
            .headers
            .get("private-token")
            .and_then(|v| v.to_str().ok());
        (sent != Some(token().as_str())).then(|| {
            ResponseTemplate::new(401).set_body_json(json!({"message": "401 Unauthorized"}))
        })
    }

    /// `/api/v4/projects/{id}/{issues|merge_requests}/{iid}` of a notes path.
    fn noteable(path: &str) -> String {
        let path = path.strip_suffix("/notes").unwrap_or(path);
        match path.rfind("/discussions/") {
            Some(at) => path[..at].to_owned(),
            None => path.to_owned(),
        }
    }

    const NOTEABLE: &str = r"^/api/v4/projects/\d+/(issues|merge_requests)/\d+";

    pub async fn mount(server: &MockServer) {
        let ids = Arc::new(AtomicU64::new(7000));
        // Notes per issue or merge request, so a marker search finds them.
        let notes: Arc<std::sync::Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
        let store = notes.clone();
        let note_ids = ids.clone();
        Mock::given(method("POST"))
            .and(path_regex(format!(
                r"{NOTEABLE}/(discussions/[0-9A-Za-z]+/)?notes$"
            )))
            .respond_with(move |request: &Request| {
                if let Some(refusal) = refused(request) {
                    return refusal;
                }
                let id = note_ids.fetch_add(1, Ordering::SeqCst);
                let body = body_json(request);
                let note = json!({
                    "id": id,
                    "type": request.url.path().contains("/discussions/").then_some("DiscussionNote"),
                    "body": body["body"],
                    "author": {"id": 99, "username": "contexten-bot"},
                    "created_at": "2026-12-06T12:00:00.000Z",
                    "system": false
                });
                if let Ok(mut notes) = store.lock() {
                    notes
                        .entry(noteable(request.url.path()))
                        .or_default()
                        .push(note.clone());
                }
                ResponseTemplate::new(201).set_body_json(note)
            })
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(format!(r"{NOTEABLE}/(notes/\d+/)?award_emoji$")))
            .respond_with(move |request: &Request| {
                if let Some(refusal) = refused(request) {
                    return refusal;
                }
                let id = ids.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(201)
                    .set_body_json(json!({"id": id, "name": body_json(request)["name"]}))
            })
            .mount(server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(format!(r"{NOTEABLE}/notes$")))
            .respond_with(move |request: &Request| {
                if let Some(refusal) = refused(request) {
                    return refusal;
                }
                let mut all = notes
                    .lock()
                    .ok()
                    .and_then(|n| {
                        n.get(request.url.path().trim_end_matches("/notes"))
                            .cloned()
                    })
                    .unwrap_or_default();
                all.reverse();
                ResponseTemplate::new(200).set_body_json(Value::Array(all))
            })
            .mount(server)
            .await;
    }

    /// Every request to the API, in arrival order.
    pub async fn requests(server: &MockServer) -> Vec<Seen> {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().starts_with(API))
            .map(|r| Seen {
                method: r.method.to_string(),
                path: r.url.path().to_owned(),
                token: r
                    .headers
                    .get("private-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body_json(&r),
            })
            .collect()
    }

    /// The notes posted to exactly `path` (`/api/v4/projects/15/issues/7/notes`
    /// or a discussion's `.../discussions/{id}/notes`).
    pub async fn posted(server: &MockServer, path: &str) -> Vec<Seen> {
        requests(server)
            .await
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .collect()
    }

    /// Every note posted anywhere (plain or in a discussion).
    pub async fn all_notes(server: &MockServer) -> Vec<Seen> {
        requests(server)
            .await
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/notes"))
            .collect()
    }

    /// Every award emoji given.
    pub async fn awards(server: &MockServer) -> Vec<Seen> {
        requests(server)
            .await
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/award_emoji"))
            .collect()
    }
}
