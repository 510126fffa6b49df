//! One model call with everything around it: bounded concurrency per process, the
//! fleet-wide request and token limits, the shared circuit breaker, and retries
//! with exponential backoff (backon) that honour `Retry-After`. Short waits happen
//! in-process; a long one reschedules the task; a provider that keeps failing or
//! a breaker that stays open sends the task to the agent.

use backon::{BackoffBuilder, ExponentialBuilder};
use contexten_envelope::Reason;
use contexten_llm::{ChatRequest, LlmClient, LlmError};
use contexten_resilience::{CircuitBreaker, Permit, RateLimiter, TokenBucket};
use contexten_telemetry::{client, metric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often a caller re-checks a breaker that is open or probing.
const BREAKER_POLL: Duration = Duration::from_millis(100);

/// Why a generation did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Hand the task to the agent stage with this reason.
    Fallback { code: Reason, detail: String },
    /// Try the generate stage again after `delay`, counting an attempt.
    Reschedule {
        delay: Duration,
        code: Reason,
        detail: String,
    },
    /// The fleet's own LLM quota (`LLM_REQUESTS_PER_MIN`, `LLM_TOKENS_PER_MIN`)
    /// is spent: wait `delay` for it without counting an attempt. Waiting for
    /// our own limit is not a failure; counted, a burst above the quota would
    /// exhaust its tasks' retries and fail them while the provider is fine.
    Defer { delay: Duration, code: Reason },
}

/// Tokens and calls spent, for the envelope's cost ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub calls: u32,
}

/// Counters a test or an operator can read (also exported as metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub calls: AtomicU64,
    pub probes: AtomicU64,
    pub breaker_waits: AtomicU64,
    pub retries: AtomicU64,
}

/// The limits and retry policy of an [`Engine`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_concurrency: usize,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub inline_wait: Duration,
    pub max_tokens: u32,
}

/// Calls the model under the fleet's limits.
pub struct Engine {
    client: LlmClient,
    breaker: CircuitBreaker,
    requests: RateLimiter,
    tokens: TokenBucket,
    slots: Semaphore,
    policy: Policy,
    stats: Arc<EngineStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("client", &self.client)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Engine {
    /// An engine around `client`.
    pub fn new(
        client: LlmClient,
        breaker: CircuitBreaker,
        requests: RateLimiter,
        tokens: TokenBucket,
        policy: Policy,
    ) -> Self {
        Engine {
            client,
            breaker,
            requests,
            tokens,
            slots: Semaphore::new(policy.max_concurrency.max(1)),
            policy,
            stats: Arc::default(),
        }
    }

    /// The client (provider and model names).
    pub fn client(&self) -> &LlmClient {
        &self.client
    }

    /// The counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// One completion, retried as the policy allows; the answer's text.
    pub async fn call(&self, request: &ChatRequest, spend: &mut Spend) -> Result<String, Failure> {
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.slots.acquire().await.ok();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.retry_base)
            .with_max_delay(self.policy.inline_wait.max(self.policy.retry_base))
            .with_max_times(self.policy.max_retries as usize)
            .with_jitter()
            .build();
        let mut tries = 0u32;
        loop {
            self.take_budget(request).await?;
            let permit = self.breaker_permit().await?;
            if matches!(permit, Permit::Probe(_) | Permit::Local { probe: true }) {
                self.stats.probes.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            spend.calls += 1;
            tries += 1;
            let provider = self.client.provider();
            // Each try is a CLIENT span of its own; a retry says which resend it is.
            let sent = client::resend(tries - 1, self.client.complete(request));
            let error = match sent.await {
                Ok(answer) => {
                    self.breaker.record(&permit, true).await;
                    spend.prompt_tokens += answer.usage.prompt_tokens;
                    spend.completion_tokens += answer.usage.completion_tokens;
                    metric::llm_call(
                        provider,
                        "ok",
                        answer.usage.prompt_tokens,
                        answer.usage.completion_tokens,
                    );
                    return Ok(answer.content);
                }
                Err(error) => error,
            };
            self.breaker.record(&permit, !error.trips_breaker()).await;
            metric::llm_call(provider, error.code(), 0, 0);
            metric::llm_error(provider, error.code());
            tracing::warn!(provider, tries, error = %error, "llm call failed");
            if !error.is_transient() {
                return Err(Failure::Fallback {
                    code: Reason::LlmRejected,
                    detail: error.to_string(),
                });
            }
            let Some(delay) = backoff.next() else {
                return Err(exhausted(&error, tries, self.policy.retry_base));
            };
            let wait = error.retry_after().unwrap_or(delay);
            if wait > self.policy.inline_wait {
                return Err(Failure::Reschedule {
                    delay: wait,
                    code: if matches!(error, LlmError::RateLimited { .. }) {
                        Reason::LlmRateLimited
                    } else {
                        Reason::LlmUnavailable
                    },
                    detail: format!("the provider asked to wait {wait:?}: {error}"),
                });
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// The request limiter and the token budget; waits up to the inline wait.
    async fn take_budget(&self, request: &ChatRequest) -> Result<(), Failure> {
        let deadline = Instant::now() + self.policy.inline_wait;
        self.requests
            .acquire(self.policy.inline_wait)
            .await
            .map_err(|wait| Failure::Defer {
                delay: wait,
                code: Reason::LlmRequestsPerMinute,
            })?;
        let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let cost = (chars / 4) as u64 + u64::from(self.policy.max_tokens);
        loop {
            match self.tokens.try_take(cost).await {
                Ok(()) => return Ok(()),
                Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                Err(wait) => {
                    return Err(Failure::Defer {
                        delay: wait,
                        code: Reason::LlmTokensPerMinute,
                    });
                }
            }
        }
    }

    /// A breaker permit, polling while it is open or probing, up to the inline wait.
    async fn breaker_permit(&self) -> Result<Permit, Failure> {
        let deadline = Instant::now() + self.policy.inline_wait;
        let mut waited = false;
        loop {
            let wait = match self.breaker.check().await {
                Ok(permit) => return Ok(permit),
                Err(wait) => wait,
            };
            if !waited {
                waited = true;
                self.stats.breaker_waits.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Fallback {
                    code: Reason::LlmBreakerOpen,
                    detail: format!(
                        "the LLM circuit breaker stayed open for more than {:?} (next probe in {wait:?})",
                        self.policy.inline_wait
                    ),
                });
            }
            tokio::time::sleep(wait.min(BREAKER_POLL).min(deadline - now)).await;
        }
    }
}

/// The failure once the retries are spent: rate limits reschedule (the provider
/// is up, only busy), everything else falls back to the agent.
fn exhausted(error: &LlmError, tries: u32, base: Duration) -> Failure {
    match error {
        LlmError::RateLimited { retry_after, .. } => Failure::Reschedule {
            delay: retry_after.unwrap_or(base).max(Duration::from_secs(1)),
            code: Reason::LlmRateLimited,
            detail: format!("still rate limited after {tries} calls: {error}"),
        },
        _ => Failure::Fallback {
            code: Reason::LlmUnavailable,
            detail: format!("the LLM provider failed {tries} times in a row; last error: {error}"),
        },
    }
}
