//! Sliding-window and token-bucket limiters in Redis, with local fallbacks.

use contexten_store::Store;
use contexten_telemetry::metric;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// KEYS[1] = the window's sorted set; ARGV = limit, window ms, member.
/// Returns 0 when a permit was taken, else the milliseconds until one frees up.
const SLIDING_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now + 1)
"#;

/// At most `limit` permits in any window of `window`, across every replica.
#[derive(Clone)]
pub struct RateLimiter {
    store: Store,
    key: String,
    limit: u32,
    window: Duration,
    local: Arc<Mutex<VecDeque<Instant>>>,
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter named `name` (a Redis key under the store's prefix).
    /// Any store handle will do (the worker runtime's answers its own error type).
    pub fn new<E>(store: Store<E>, name: &str, limit: u32, window: Duration) -> Self {
        let store: Store = store.retyped();
        let key = store.names().redis_key(&["ratelimit", name]);
        RateLimiter {
            store,
            key,
            limit: limit.max(1),
            window,
            local: Arc::default(),
            script: Arc::new(redis::Script::new(SLIDING_WINDOW)),
        }
    }

    /// Takes a permit now, or says how long until one frees up.
    pub async fn try_acquire(&self) -> Result<(), Duration> {
        let member = uuid::Uuid::now_v7().to_string();
        let shared = async {
            let mut connection = self.store.connection().await.ok()?;
            let mut invocation = self.script.key(&self.key);
            invocation
                .arg(self.limit)
                .arg(self.window.as_millis() as u64)
                .arg(&member);
            tokio::time::timeout(
                Duration::from_secs(2),
                invocation.invoke_async::<u64>(&mut connection),
            )
            .await
            .ok()?
            .ok()
        };
        match shared.await {
            Some(0) => Ok(()),
            Some(wait_ms) => Err(Duration::from_millis(wait_ms)),
            None => {
                metric::redis_degraded("rate_limiter");
                self.try_acquire_local()
            }
        }
    }

    /// Waits for a permit as long as the wait stays under `max_wait`; otherwise
    /// returns the wait so the caller can reschedule instead of holding work.
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_acquire().await {
                Ok(()) => return Ok(()),
                Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                Err(wait) => return Err(wait),
            }
        }
    }

    /// The same window kept in this process only (Redis unreachable).
    fn try_acquire_local(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut taken = self.local.lock().unwrap_or_else(|e| e.into_inner());
        while taken
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            taken.pop_front();
        }
        if taken.len() < self.limit as usize {
            taken.push_back(now);
            return Ok(());
        }
        let oldest = taken.front().copied().unwrap_or(now);
        Err((oldest + self.window)
            .saturating_duration_since(now)
            .max(Duration::from_millis(1)))
    }
}

/// KEYS[1] = the bucket's hash; ARGV = capacity, refill per ms (float), cost.
/// Returns 0 when the cost was taken, else the milliseconds until it fits.
const TOKEN_BUCKET: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = math.min(tonumber(ARGV[3]), capacity)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return wait
"#;

/// A weighted limit (for example LLM tokens per minute): `capacity` units refilled
/// evenly over `period`, shared by every replica.
#[derive(Clone)]
pub struct TokenBucket {
    store: Store,
    key: String,
    capacity: u64,
    period: Duration,
    local: Arc<Mutex<(f64, Instant)>>,
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket")
            .field("key", &self.key)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl TokenBucket {
    /// A bucket named `name` holding `capacity` units refilled over `period`.
    /// Any store handle will do (the worker runtime's answers its own error type).
    pub fn new<E>(store: Store<E>, name: &str, capacity: u64, period: Duration) -> Self {
        let store: Store = store.retyped();
        let key = store.names().redis_key(&["bucket", name]);
        let capacity = capacity.max(1);
        TokenBucket {
            store,
            key,
            capacity,
            period,
            local: Arc::new(Mutex::new((capacity as f64, Instant::now()))),
            script: Arc::new(redis::Script::new(TOKEN_BUCKET)),
        }
    }

    fn rate_per_ms(&self) -> f64 {
        self.capacity as f64 / self.period.as_millis().max(1) as f64
    }

    /// Takes `cost` units now, or says how long until they fit.
    pub async fn try_take(&self, cost: u64) -> Result<(), Duration> {
        let shared = async {
            let mut connection = self.store.connection().await.ok()?;
            let mut invocation = self.script.key(&self.key);
            invocation
                .arg(self.capacity)
                .arg(self.rate_per_ms())
                .arg(cost);
            tokio::time::timeout(
                Duration::from_secs(2),
                invocation.invoke_async::<u64>(&mut connection),
            )
            .await
            .ok()?
            .ok()
        };
        match shared.await {
            Some(0) => Ok(()),
            Some(wait_ms) => Err(Duration::from_millis(wait_ms)),
            None => {
                metric::redis_degraded("token_bucket");
                self.try_take_local(cost)
            }
        }
    }

    fn try_take_local(&self, cost: u64) -> Result<(), Duration> {
        let rate = self.rate_per_ms();
        let cost = cost.min(self.capacity) as f64;
        let mut state = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_millis() as f64 * rate;
        state.0 = (state.0 + refill).min(self.capacity as f64);
        state.1 = now;
        if state.0 >= cost {
            state.0 -= cost;
            Ok(())
        } else {
            Err(Duration::from_millis(
                ((cost - state.0) / rate).ceil() as u64
            ))
        }
    }
}
