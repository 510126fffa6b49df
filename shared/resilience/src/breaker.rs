//! A circuit breaker whose state lives in Redis, so every replica opens, probes
//! and closes together; a local copy takes over while Redis is unreachable.

use contexten_store::Store;
use contexten_telemetry::{health, metric};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// KEYS[1] = the breaker's hash; ARGV = open ms, probe timeout ms, probe token.
/// Returns {verdict, wait_ms}: verdict is `closed` (go), `probe` (go, you are
/// the single probe) or `rejected` (wait).
const CHECK: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {'closed', 0} end
if state == 'open' then
  local reopen = (tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0) + tonumber(ARGV[1])
  if now < reopen then return {'rejected', reopen - now} end
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until')) or 0
if state == 'half_open' and now < probe_until then return {'rejected', probe_until - now} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe', ARGV[3], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', 0}
"#;

/// KEYS[1] = the breaker's hash; ARGV = `ok`|`fail`, probe token or '', threshold.
/// Returns the state after recording.
const RECORD: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ok = ARGV[1] == 'ok'
if ARGV[2] ~= '' then
  if redis.call('HGET', KEYS[1], 'probe') ~= ARGV[2] then return state end
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  if ok then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  return 'open'
end
if state ~= 'closed' then return state end
if ok then
  redis.call('HSET', KEYS[1], 'failures', 0)
  return 'closed'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', 0)
  return 'open'
end
return 'closed'
"#;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    pub open_for: Duration,
    /// How long a probe may take before another caller may probe.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// The breaker's state (also `contexten_breaker_state{state}`: one series per state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    fn parse(s: &str) -> Self {
        match s {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// The label value (and the state's name in Redis and `/status`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// Leave to call the protected service; report the result with [`CircuitBreaker::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed.
    Normal,
    /// The breaker is half-open and this caller is its single probe.
    Probe(String),
    /// Redis was unreachable; the local breaker decided.
    Local { probe: bool },
}

#[derive(Debug)]
struct LocalBreaker {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    probe_until: Option<Instant>,
}

/// A breaker named `name`, shared by every replica through Redis.
#[derive(Clone)]
pub struct CircuitBreaker {
    store: Store,
    name: String,
    key: String,
    config: BreakerConfig,
    local: Arc<Mutex<LocalBreaker>>,
    check: Arc<redis::Script>,
    record: Arc<redis::Script>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .finish()
    }
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl CircuitBreaker {
    /// A breaker for the service `name` (`codegen`, `llm`, …).
    /// Any store handle will do (the worker runtime's answers its own error type).
    pub fn new<E>(store: Store<E>, name: &str, config: BreakerConfig) -> Self {
        let store: Store = store.retyped();
        let key = store.names().redis_key(&["breaker", name]);
        // Known from the start (metric series and `/status`), as closed until
        // the first call says otherwise.
        if !health::breaker_known(name) {
            metric::breaker_state(name, BreakerState::Closed.as_str());
            health::report_breaker(name, BreakerState::Closed.as_str());
        }
        CircuitBreaker {
            store,
            name: name.to_owned(),
            key,
            config,
            local: Arc::new(Mutex::new(LocalBreaker {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probe_until: None,
            })),
            check: Arc::new(redis::Script::new(CHECK)),
            record: Arc::new(redis::Script::new(RECORD)),
        }
    }

    /// May the caller go ahead? `Err(wait)` while open (or while another probe runs).
    pub async fn check(&self) -> Result<Permit, Duration> {
        let token = uuid::Uuid::now_v7().to_string();
        let shared = async {
            let mut connection = self.store.connection().await.ok()?;
            let mut invocation = self.check.key(&self.key);
            invocation
                .arg(self.config.open_for.as_millis() as u64)
                .arg(self.config.probe_timeout.as_millis() as u64)
                .arg(&token);
            tokio::time::timeout(
                REDIS_TIMEOUT,
                invocation.invoke_async::<(String, u64)>(&mut connection),
            )
            .await
            .ok()?
            .ok()
        };
        match shared.await {
            Some((verdict, _)) if verdict == "closed" => Ok(Permit::Normal),
            Some((verdict, _)) if verdict == "probe" => {
                self.publish(BreakerState::HalfOpen);
                Ok(Permit::Probe(token))
            }
            Some((_, wait_ms)) => Err(Duration::from_millis(wait_ms.max(1))),
            None => {
                metric::redis_degraded("circuit_breaker");
                self.check_local()
            }
        }
    }

    /// Reports how the call went; returns the state after it.
    pub async fn record(&self, permit: &Permit, success: bool) -> BreakerState {
        if let Permit::Local { probe } = permit {
            return self.record_local(*probe, success);
        }
        let token = match permit {
            Permit::Probe(token) => token.as_str(),
            _ => "",
        };
        let shared = async {
            let mut connection = self.store.connection().await.ok()?;
            let mut invocation = self.record.key(&self.key);
            invocation
                .arg(if success { "ok" } else { "fail" })
                .arg(token)
                .arg(self.config.failure_threshold);
            tokio::time::timeout(
                REDIS_TIMEOUT,
                invocation.invoke_async::<String>(&mut connection),
            )
            .await
            .ok()?
            .ok()
        };
        match shared.await {
            Some(state) => {
                let state = BreakerState::parse(&state);
                self.publish(state);
                state
            }
            None => {
                metric::redis_degraded("circuit_breaker");
                self.record_local(matches!(permit, Permit::Probe(_)), success)
            }
        }
    }

    fn publish(&self, state: BreakerState) {
        metric::breaker_state(&self.name, state.as_str());
        health::report_breaker(&self.name, state.as_str());
        if state != BreakerState::Closed {
            tracing::info!(breaker = %self.name, ?state, "breaker state");
        }
    }

    fn check_local(&self) -> Result<Permit, Duration> {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        match local.state {
            BreakerState::Closed => Ok(Permit::Local { probe: false }),
            BreakerState::Open if now < local.opened_at + self.config.open_for => {
                Err(local.opened_at + self.config.open_for - now)
            }
            BreakerState::HalfOpen if local.probe_until.is_some_and(|until| now < until) => {
                Err(local.probe_until.map(|u| u - now).unwrap_or_default())
            }
            _ => {
                local.state = BreakerState::HalfOpen;
                local.probe_until = Some(now + self.config.probe_timeout);
                Ok(Permit::Local { probe: true })
            }
        }
    }

    fn record_local(&self, probe: bool, success: bool) -> BreakerState {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if probe {
            local.probe_until = None;
            local.failures = 0;
            local.state = if success {
                BreakerState::Closed
            } else {
                BreakerState::Open
            };
            local.opened_at = Instant::now();
        } else if local.state == BreakerState::Closed {
            if success {
                local.failures = 0;
            } else {
                local.failures += 1;
                if local.failures >= self.config.failure_threshold {
                    local.state = BreakerState::Open;
                    local.opened_at = Instant::now();
                    local.failures = 0;
                }
            }
        }
        let state = local.state;
        drop(local);
        self.publish(state);
        state
    }
}
