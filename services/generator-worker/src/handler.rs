//! The generate stage's handler: envelope in, outcome out.
//!
//! success → `TaskResult{Code|Diff}` to dispatch · no provider → a context-only
//! answer to dispatch · generation failed → the agent stage with
//! `fallback_reason` (code and one sentence, [`fallback_reason`]) when the
//! task's strategy allows it
//! ([`Strategy::allows_agent_fallback`]), else a dead letter whose failure
//! answer carries the reason code · provider busy for long → retry later.
//!
//! [`Strategy::allows_agent_fallback`]: contexten_envelope::Strategy::allows_agent_fallback

use crate::config::GeneratorConfig;
use crate::engine::{Engine, Failure, Policy, Spend};
use crate::job::Job;
use crate::prompt::{self, TEMPLATE_VERSION};
use crate::repo::{RepoReader, Snapshot};
use crate::{answer, validate};
use contexten_broker::{Handler, Outcome, Store};
use contexten_cache::{Cache, CacheConfig, Layer, SingleFlight};
use contexten_envelope::Reason;
use contexten_envelope::{Stage, TaskEnvelope};
use contexten_llm::{ChatRequest, LlmClient, LlmError, Message};
use contexten_resilience::{BreakerConfig, CircuitBreaker, RateLimiter, TokenBucket};
use contexten_telemetry::metric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The cross-replica generation lock's lease, renewed by its holder every third.
const LOCK_LEASE: Duration = Duration::from_secs(6);
/// What can stop the handler from being built.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("llm client: {0}")]
    Llm(#[from] LlmError),
}

/// A generated, checked answer as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub kind: String,
    pub language: Option<String>,
    pub text: String,
    pub summary: String,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    Generated,
    Cache(Layer),
    /// Another replica generated it while this one waited on the lock.
    OtherReplica,
    /// An identical task in this process generated it.
    Coalesced,
}

#[derive(Debug, Clone)]
struct Attempt {
    result: Result<Answer, Failure>,
    spend: Spend,
    provenance: Provenance,
}

/// Counters for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    pub model_calls: u64,
    pub probes: u64,
    pub breaker_waits: u64,
    pub retries: u64,
    pub cache_hits: u64,
    pub coalesced: u64,
    pub fallbacks: u64,
}

/// The generate stage.
pub struct GenerateHandler {
    engine: Option<Engine>,
    cache: Cache,
    flights: SingleFlight<Attempt>,
    repos: RepoReader,
    temperature: f32,
    max_tokens: u32,
    lock_ttl: Duration,
    /// `GENERATOR_CONTEXT_ONLY_SOURCE`.
    context_only_source: bool,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for GenerateHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateHandler")
            .field("engine", &self.engine)
            .field("cache", &self.cache)
            .finish()
    }
}

impl GenerateHandler {
    /// Builds the handler; without `LLM_API_KEY` it answers context-only.
    pub fn new(config: &GeneratorConfig, store: Store) -> Result<Self, GeneratorError> {
        let engine = LlmClient::from_settings(&config.llm)?.map(|client| {
            let breaker = CircuitBreaker::new(
                store.clone(),
                "llm",
                BreakerConfig {
                    failure_threshold: config.breaker_failures,
                    open_for: config.breaker_open,
                    probe_timeout: config.llm.timeout + Duration::from_secs(5),
                },
            );
            let requests = RateLimiter::new(
                store.clone(),
                "llm-requests",
                config.requests_per_min,
                Duration::from_secs(60),
            );
            let tokens = TokenBucket::new(
                store.clone(),
                "llm-tokens",
                config.tokens_per_min,
                Duration::from_secs(60),
            );
            Engine::new(
                client,
                breaker,
                requests,
                tokens,
                Policy {
                    max_concurrency: config.max_concurrency,
                    max_retries: config.max_retries,
                    retry_base: config.retry_base,
                    inline_wait: config.inline_wait,
                    max_tokens: config.llm.max_tokens,
                },
            )
        });
        let cache = Cache::new(
            CacheConfig {
                name: "generator",
                memory_entries: config.cache_memory_entries,
                ttl: config.cache_ttl,
                disk_dir: config.cache_dir.clone(),
                encryption: config.encryption.clone(),
            },
            Some(store.retyped()),
        );
        Ok(GenerateHandler {
            engine,
            cache,
            flights: SingleFlight::default(),
            repos: RepoReader::new(
                config.allow_local_repos,
                config.repo_cache_dir.clone(),
                config.git_timeout,
            )
            .with_github_token(config.github_token.clone())
            .with_outbound(config.outbound.clone()),
            temperature: config.llm.temperature,
            max_tokens: config.llm.max_tokens,
            // How long a waiter waits for another replica's generation at most:
            // a call, retries and a repair call.
            lock_ttl: (config.llm.timeout * 2 + Duration::from_secs(10))
                .min(Duration::from_secs(300)),
            context_only_source: config.context_only_source,
            cache_hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// The answer cache (tests inspect its layers).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The counters so far.
    pub fn stats(&self) -> GeneratorStats {
        let engine = self.engine.as_ref().map(|e| e.stats());
        let read = |c: Option<&AtomicU64>| c.map_or(0, |c| c.load(Ordering::Relaxed));
        GeneratorStats {
            model_calls: read(engine.map(|s| &s.calls)),
            probes: read(engine.map(|s| &s.probes)),
            breaker_waits: read(engine.map(|s| &s.breaker_waits)),
            retries: read(engine.map(|s| &s.retries)),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The cache key of `job`: normalised prompt, context fingerprint, provider,
    /// model, temperature, max tokens, language, kind and template version.
    pub fn cache_key(&self, engine: &Engine, job: &Job, messages: &[Message]) -> String {
        let prompt: Vec<(String, String)> = messages
            .iter()
            .map(|m| (format!("{:?}", m.role), normalise(&m.content)))
            .collect();
        let material = serde_json::json!({
            "template": TEMPLATE_VERSION,
            "kind": job.kind.as_str(),
            "language": job.language.map(|l| l.name()),
            "provider": engine.client().provider(),
            "model": engine.client().model(),
            "temperature": format!("{:.3}", self.temperature),
            "max_tokens": self.max_tokens,
            "context": job.fingerprint,
            "prompt": prompt,
        });
        hex::encode(Sha256::digest(material.to_string().as_bytes()))
    }

    async fn snapshot(&self, envelope: &TaskEnvelope) -> Option<Snapshot> {
        let repository = envelope.request.repository.as_ref()?;
        match self
            .repos
            .open(&repository.url, repository.reference.as_deref())
            .await
        {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                // Without the snapshot the job is new code from the context alone.
                tracing::warn!(task_id = %envelope.task_id, error = %e, "repository unavailable");
                None
            }
        }
    }

    async fn produce(
        &self,
        engine: &Engine,
        key: &str,
        job: &Job,
        messages: Vec<Message>,
        snapshot: Option<&Snapshot>,
    ) -> Attempt {
        let cached = |provenance| {
            move |answer| Attempt {
                result: Ok(answer),
                spend: Spend::default(),
                provenance,
            }
        };
        // A task that waited for the in-process flight may find the entry now.
        if let Some(hit) = self.cache.get(key).await
            && let Some(answer) = decode(&hit.value)
        {
            return cached(Provenance::Cache(hit.layer))(answer);
        }
        let locked = self.cache.try_lock(key, LOCK_LEASE).await;
        if !locked
            && let Some(hit) = self.cache.wait_for(key, self.lock_ttl).await
            && let Some(answer) = decode(&hit.value)
        {
            return cached(Provenance::OtherReplica)(answer);
        }
        // Keep the lease alive while generating, so a replica that dies (SIGKILL)
        // frees the waiters within one lease instead of after a whole generation.
        let keep_alive = locked.then(|| {
            let (cache, key) = (self.cache.clone(), key.to_owned());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_LEASE / 3).await;
                    cache.extend_lock(&key, LOCK_LEASE).await;
                }
            })
        });
        let mut spend = Spend::default();
        let result = self
            .generate(engine, job, messages, snapshot, &mut spend)
            .await;
        if let Some(task) = keep_alive {
            task.abort();
        }
        if let Ok(answer) = &result
            && let Ok(bytes) = serde_json::to_vec(answer)
        {
            self.cache.put(key, &bytes).await;
        }
        if locked {
            self.cache.unlock(key).await;
        }
        Attempt {
            result,
            spend,
            provenance: Provenance::Generated,
        }
    }

    /// One call, a check, and at most one repair round.
    async fn generate(
        &self,
        engine: &Engine,
        job: &Job,
        mut messages: Vec<Message>,
        snapshot: Option<&Snapshot>,
        spend: &mut Spend,
    ) -> Result<Answer, Failure> {
        let model = engine.client().model().to_owned();
        let first = engine
            .call(
                &ChatRequest {
                    messages: messages.clone(),
                },
                spend,
            )
            .await?;
        let error = match validate::check(job, &first, &self.repos, snapshot).await {
            Ok(checked) => return Ok(answer::generated(job, checked, &model, false)),
            Err(error) => error,
        };
        tracing::info!(error = %error, "answer invalid; one repair round");
        messages.push(Message::assistant(first));
        messages.push(prompt::repair(job, &error.0));
        let second = engine.call(&ChatRequest { messages }, spend).await?;
        match validate::check(job, &second, &self.repos, snapshot).await {
            Ok(checked) => Ok(answer::generated(job, checked, &model, true)),
            Err(error) => Err(Failure::Fallback {
                code: Reason::GenerationInvalid,
                detail: format!("the answer was still invalid after one repair round: {error}"),
            }),
        }
    }
}

impl GenerateHandler {
    /// A generation that failed for good goes to the agent only when the task's
    /// strategy allows it: a Codegen run can write to repositories, which a
    /// request routed to plain generation never asked for. Otherwise the task
    /// is dead-lettered with the reason code; the requester's failure answer
    /// says what happened in one sentence, the detail stays in the logs.
    fn fall_back(&self, mut envelope: TaskEnvelope, code: Reason, detail: String) -> Outcome {
        let strategy = envelope.strategy.as_str();
        if !envelope.strategy.allows_agent_fallback() {
            metric::generation("failed");
            tracing::warn!(task_id = %envelope.task_id, %code, strategy, detail = %detail, "generation failed; the strategy does not allow the agent");
            return Outcome::dead(code, detail);
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        metric::generation("fallback");
        // A platform's own code is unbounded; the fleet's reasons are a fixed set.
        metric::generator_fallback(match &code {
            Reason::Platform(_) => "platform",
            own => own.as_str(),
        });
        tracing::warn!(task_id = %envelope.task_id, %code, strategy, detail = %detail, "generation failed; falling back to the agent");
        envelope.fallback_reason = Some(fallback_reason(&code));
        Outcome::forward(Stage::Agent, envelope)
    }
}

/// `fallback_reason`: the stable code and one sentence a requester can read
/// (the agent's answer repeats it). The detail (validation errors, provider
/// messages, paths) stays in the log line written with it.
pub fn fallback_reason(code: &Reason) -> String {
    let sentence = match code {
        Reason::GenerationInvalid => {
            "the generated code was still invalid after one repair (it did not parse or its diff did not apply)"
        }
        Reason::LlmRejected => "the language model refused the request",
        Reason::LlmBreakerOpen => "the language model has been failing and is paused for now",
        Reason::LlmUnavailable => "the language model could not be reached",
        _ => "code generation failed",
    };
    format!("{code}: {sentence}")
}

fn decode(bytes: &[u8]) -> Option<Answer> {
    serde_json::from_slice(bytes).ok()
}

/// Trailing spaces and runs of blank lines do not change the meaning of a prompt.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.trim().lines().map(str::trim_end) {
        if line.is_empty() {
            if blank {
                continue;
            }
            blank = true;
        } else {
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Handler for GenerateHandler {
    async fn handle(&self, mut envelope: TaskEnvelope) -> Outcome {
        if envelope.request.text.trim().is_empty() {
            return Outcome::dead(
                Reason::InvalidRequest,
                "the request has no text to generate from",
            );
        }
        let snapshot = self.snapshot(&envelope).await;
        let job = Job::build(&envelope, &self.repos, snapshot.as_ref()).await;
        let messages = prompt::messages(&job);
        let Some(engine) = &self.engine else {
            metric::generation("context_only");
            return answer::context_only(envelope, &job, &messages, self.context_only_source);
        };
        let key = self.cache_key(engine, &job, &messages);
        if let Some(hit) = self.cache.get(&key).await
            && let Some(cached) = decode(&hit.value)
        {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            metric::generation("cached");
            return answer::success(envelope, cached, Provenance::Cache(hit.layer));
        }
        let (attempt, leader) = self
            .flights
            .run(&key, || {
                self.produce(engine, &key, &job, messages, snapshot.as_ref())
            })
            .await;
        let provenance = if leader {
            let spend = attempt.spend;
            envelope.cost.llm_prompt_tokens += spend.prompt_tokens;
            envelope.cost.llm_completion_tokens += spend.completion_tokens;
            envelope.cost.llm_calls += spend.calls;
            attempt.provenance
        } else {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            Provenance::Coalesced
        };
        match attempt.result {
            Ok(generated) => {
                if matches!(provenance, Provenance::Cache(_) | Provenance::OtherReplica) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                }
                metric::generation(match provenance {
                    Provenance::Generated => "generated",
                    Provenance::Coalesced => "coalesced",
                    _ => "cached",
                });
                answer::success(envelope, generated, provenance)
            }
            Err(Failure::Fallback { code, detail }) => self.fall_back(envelope, code, detail),
            Err(Failure::Reschedule {
                delay,
                code,
                detail,
            }) => {
                metric::generation("rescheduled");
                Outcome::retry(delay, code, detail)
            }
            Err(Failure::Defer { delay, code }) => {
                metric::generation("deferred");
                tracing::info!(
                    %code,
                    delay_ms = delay.as_millis() as u64,
                    "waiting for the LLM quota"
                );
                Outcome::later(Stage::Generate, delay, envelope)
            }
        }
    }
}
