//! Fleet-wide limits and circuit breakers (docs/design.md §6), shared by every replica
//! through Redis and falling back to a local copy when Redis is unreachable.
//!
//! - [`RateLimiter`]: a strict sliding-window log — never more than `limit`
//!   permits in any window of `window`, across replicas (Codegen's "10 creations a
//!   minute", GitHub's "80 content-creating requests a minute").
//! - [`TokenBucket`]: weighted limits where bursts are fine (LLM tokens per minute).
//! - [`CircuitBreaker`]: closed → open after consecutive failures → half-open with a
//!   single probe → closed on success, open again on failure.
//!
//! Both use Redis's own clock inside Lua scripts, so replicas agree on time.

mod breaker;
mod limiter;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
pub use limiter::{RateLimiter, TokenBucket};
