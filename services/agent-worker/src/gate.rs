//! The way to Codegen: the shared circuit breaker first, then the fleet-wide
//! rate limit of the request's kind. A closed gate never holds the message for
//! long: it says how long to wait, and the handler reschedules the task.

use crate::codegen::CodegenError;
use contexten_broker::Store;
use contexten_resilience::{BreakerConfig, CircuitBreaker, Permit, RateLimiter};
use contexten_telemetry::metric;
use std::time::Duration;

/// The name of the shared breaker (Redis key and gauge label).
pub const BREAKER_NAME: &str = "codegen";

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Run creations (Codegen: 10 a minute).
    Create,
    /// Everything else (Codegen: 60 per 30 s).
    Request,
}

/// Why a request must wait, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferral {
    pub wait: Duration,
    /// Metric label: `breaker_open`, `create_limit`, `request_limit`.
    pub reason: &'static str,
}

/// The limits in front of one Codegen organisation, shared by every replica.
#[derive(Debug, Clone)]
pub struct Gate {
    breaker: CircuitBreaker,
    open_for: Duration,
    creates: RateLimiter,
    requests: RateLimiter,
    create_window: Duration,
    request_window: Duration,
    max_hold: Duration,
}

/// The limits of a [`Gate`].
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub create_limit: u32,
    pub create_window: Duration,
    pub request_limit: u32,
    pub request_window: Duration,
    pub breaker: BreakerConfig,
    pub max_hold: Duration,
}

/// The permit's window is stretched by this share (at least [`MIN_MARGIN`]) so a
/// request that takes its permit at the end of a window and arrives late still
/// lands inside the server's count.
const MARGIN_SHARE: u32 = 20;
const MIN_MARGIN: Duration = Duration::from_millis(200);

fn with_margin(window: Duration) -> Duration {
    window + (window / MARGIN_SHARE).max(MIN_MARGIN)
}

impl Gate {
    /// The gate for Codegen organisation `org_id`.
    pub fn new(store: Store, org_id: u64, limits: &GateLimits) -> Self {
        let create_window = with_margin(limits.create_window);
        let request_window = with_margin(limits.request_window);
        Gate {
            breaker: CircuitBreaker::new(store.clone(), BREAKER_NAME, limits.breaker),
            open_for: limits.breaker.open_for,
            creates: RateLimiter::new(
                store.clone(),
                &format!("codegen:{org_id}:create"),
                limits.create_limit,
                create_window,
            ),
            requests: RateLimiter::new(
                store,
                &format!("codegen:{org_id}:request"),
                limits.request_limit,
                request_window,
            ),
            create_window,
            request_window,
            max_hold: limits.max_hold,
        }
    }

    /// Passes the breaker and takes a permit of `budget`, waiting in place only
    /// up to the hold limit.
    pub async fn admit(&self, budget: Budget) -> Result<Permit, Deferral> {
        let permit = match self.breaker.check().await {
            Ok(permit) => permit,
            // Re-check no later than the open period: while another replica's
            // probe runs the breaker reports the whole probe timeout.
            Err(wait) => {
                return Err(Deferral {
                    wait: wait.min(self.open_for),
                    reason: "breaker_open",
                });
            }
        };
        self.take(budget, is_probe(&permit)).await?;
        Ok(permit)
    }

    /// Takes a permit of `budget` without passing the breaker again (a second
    /// request under a permit already held).
    pub async fn take(&self, budget: Budget, probe: bool) -> Result<(), Deferral> {
        let (limiter, window, reason) = match budget {
            Budget::Create => (&self.creates, self.create_window, "create_limit"),
            Budget::Request => (&self.requests, self.request_window, "request_limit"),
        };
        // The single probe waits its turn in place: handing it back would leave
        // every replica waiting for the probe timeout.
        let hold = if probe { window } else { self.max_hold };
        limiter
            .acquire(hold)
            .await
            .map_err(|wait| Deferral { wait, reason })
    }

    /// Reports how a request went to the breaker.
    pub async fn settle<T>(&self, permit: &Permit, result: &Result<T, CodegenError>) {
        let healthy = match result {
            Ok(_) => true,
            Err(error) => !error.trips_breaker(),
        };
        self.breaker.record(permit, healthy).await;
    }
}

fn is_probe(permit: &Permit) -> bool {
    matches!(permit, Permit::Probe(_) | Permit::Local { probe: true })
}

/// The metric label of a request's result.
pub fn outcome_label<T>(result: &Result<T, CodegenError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CodegenError::RateLimited { .. }) => "rate_limited",
        Err(CodegenError::Server { .. }) => "server_error",
        Err(CodegenError::Timeout(_)) => "timeout",
        Err(CodegenError::Transport(_)) => "transport",
        Err(CodegenError::Decode(_)) => "bad_response",
        Err(_) => "refused",
    }
}

/// Records a deferral.
pub fn count_deferral(deferral: &Deferral) {
    metric::agent_deferred(deferral.reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_get_a_safety_margin() {
        assert_eq!(
            with_margin(Duration::from_secs(60)),
            Duration::from_secs(63)
        );
        assert_eq!(
            with_margin(Duration::from_secs(2)),
            Duration::from_millis(2200)
        );
    }
}
