//! A fake OpenAI-compatible server (wiremock, real wire format), a unique Redis
//! prefix per test, temporary cache directories, and envelope builders.

use contexten_broker::{Outcome, Store};
use contexten_config::{Env, RedisSettings};
use contexten_envelope::{
    ContextItem, Hints, Names, ReplyTarget, Request, Source, SourceKind, Stage, TaskContext,
    TaskEnvelope,
};
use contexten_testkit::{TestPrefix, machine_redis_url};
use generator_worker::{GenerateHandler, GeneratorConfig};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::{MockServer, Request as WireRequest, Respond, ResponseTemplate};

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Fixture {
    pub server: MockServer,
    /// Its keys in the machine's Redis go when the fixture drops.
    pub prefix: TestPrefix,
    pub store: Store,
    pub cache_dir: tempfile::TempDir,
    pub repo_cache: tempfile::TempDir,
}

/// A fake key, built so no literal secret sits in the fixtures.
pub fn fake_key() -> String {
    ["sk-", "test-", "generator-", "0000"].concat()
}

impl Fixture {
    pub async fn start() -> Self {
        contexten_telemetry::init_for_tests();
        let prefix = TestPrefix::new().clean_machine_redis();
        let url = machine_redis_url();
        let settings = RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", url.as_str())]))
            .expect("redis settings");
        Fixture {
            server: MockServer::start().await,
            store: Store::new(&settings, Names::new(prefix.as_str())).expect("store"),
            prefix,
            cache_dir: tempfile::tempdir().unwrap(),
            repo_cache: tempfile::tempdir().unwrap(),
        }
    }

    /// Settings pointing at the fake, with fast retries; `extra` overrides.
    pub fn config(&self, extra: &[(&str, &str)]) -> GeneratorConfig {
        self.config_in(self.cache_dir.path(), extra)
    }

    pub fn config_in(
        &self,
        cache_dir: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> GeneratorConfig {
        let base = format!("{}/v1", self.server.uri());
        let key = fake_key();
        let cache = cache_dir.display().to_string();
        let repos = self.repo_cache.path().display().to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("LLM_BASE_URL", &base),
            ("LLM_API_KEY", &key),
            ("LLM_MODEL", "gpt-4.1"),
            ("LLM_TIMEOUT_SECS", "5"),
            ("LLM_RETRY_BASE_MS", "20"),
            ("LLM_MAX_INLINE_WAIT_SECS", "3"),
            ("GENERATOR_CACHE_DIR", &cache),
            ("GENERATOR_REPO_CACHE_DIR", &repos),
            ("CONTEXTEN_ALLOW_LOCAL_REPOS", "1"),
        ];
        // Later pairs win: Env keeps the last value of a name.
        pairs.extend_from_slice(extra);
        GeneratorConfig::from_env(&Env::from_pairs(pairs)).expect("generator config")
    }

    pub fn handler(&self, extra: &[(&str, &str)]) -> GenerateHandler {
        GenerateHandler::new(&self.config(extra), self.store.clone()).expect("handler")
    }

    /// Every Redis key under the test prefix, with its raw value when a string.
    pub async fn redis_entries(&self, pattern: &str) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.store.connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:{pattern}", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut entries = Vec::new();
        for key in keys {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            entries.push((key, value.unwrap_or_default()));
        }
        entries
    }

    pub async fn breaker_state(&self) -> Option<String> {
        let mut conn = self.store.connection().await.unwrap();
        redis::cmd("HGET")
            .arg(format!("{}:breaker:llm", self.prefix))
            .arg("state")
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

/// A 200 chat completion with `content`, in OpenAI's format.
pub fn completion(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_400_000,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    }))
}

/// An OpenAI error body.
pub fn openai_error(status: u16, message: &str, kind: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
}

/// Responds with a fixed template and records when each request arrived.
#[derive(Clone)]
pub struct Recorder {
    pub template: ResponseTemplate,
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Recorder {
    pub fn new(template: ResponseTemplate) -> Self {
        Recorder {
            template,
            arrivals: Arc::default(),
        }
    }
}

impl Respond for Recorder {
    fn respond(&self, _request: &WireRequest) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        self.template.clone()
    }
}

/// The request bodies the fake received.
pub async fn bodies(server: &MockServer) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// A task asking for `symbol` in `language`, with a small context.
pub fn envelope(text: &str, language: &str, symbol: &str) -> TaskEnvelope {
    let source = Source {
        kind: SourceKind::API,
        delivery_id: None,
        requested_by: Some("tester".into()),
        reply_to: ReplyTarget::None,
        extra: Default::default(),
    };
    let mut env = TaskEnvelope::new(
        source,
        Request {
            text: text.into(),
            repository: None,
            hints: Hints {
                language: Some(language.into()),
                symbols: vec![symbol.into()],
                ..Hints::default()
            },
            extra: Default::default(),
        },
    );
    env.context = Some(TaskContext {
        items: vec![ContextItem {
            path: "app/timeutil.py".into(),
            score: 0.91,
            symbols: vec!["parse_time".into()],
            reasons: vec!["mentions durations".into()],
        }],
        prompt: "## app/timeutil.py\n```python\ndef parse_time(text): ...\n```\n".into(),
        prompt_tokens: 20,
        ..TaskContext::default()
    });
    env
}

/// The envelope forwarded to `stage`, or a panic naming the outcome.
pub fn forwarded(outcome: Outcome, stage: Stage) -> TaskEnvelope {
    match outcome {
        Outcome::Forward(mut next) if next.len() == 1 && next[0].stage == stage => {
            *next.remove(0).envelope
        }
        other => panic!("expected a forward to {stage:?}, got {other:?}"),
    }
}

pub const VALID_PY: &str = "def parse_duration(text: str) -> int:\n    \"\"\"Seconds in '1h30m'.\"\"\"\n    units = {\"h\": 3600, \"m\": 60, \"s\": 1}\n    total, number = 0, \"\"\n    for ch in text:\n        if ch.isdigit():\n            number += ch\n        else:\n            total += int(number) * units[ch]\n            number = \"\"\n    return total\n";
