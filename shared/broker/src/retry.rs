//! How long a failed delivery waits, and in which delay tier.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Exponential backoff with jitter over the configured delay tiers.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    tiers: Vec<Duration>,
    max_attempts: u32,
}

impl RetryPolicy {
    /// A policy over ascending `tiers`, allowing `max_attempts` handler runs per stage.
    pub fn new(tiers: Vec<Duration>, max_attempts: u32) -> Self {
        assert!(!tiers.is_empty(), "at least one retry tier");
        RetryPolicy {
            tiers,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Handler runs allowed per stage.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay tiers.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The delay before retry number `retry` (1-based), at least `requested`.
    pub fn delay(&self, retry: u32, requested: Duration) -> Duration {
        let first = self.tiers[0];
        let last = self.tiers[self.tiers.len() - 1];
        let backoff = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(last)
            .with_factor(3.0)
            .with_jitter()
            .with_max_times(retry as usize)
            .build()
            .nth(retry.saturating_sub(1) as usize)
            .unwrap_or(last);
        backoff.max(requested).min(last)
    }

    /// The tier a delay waits in: the smallest tier that is at least `delay`.
    /// The message's own expiration keeps the exact delay inside the tier.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        self.tiers
            .iter()
            .copied()
            .find(|tier| *tier >= delay)
            .unwrap_or(self.tiers[self.tiers.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300),
            ],
            5,
        )
    }

    #[test]
    fn delays_grow_and_stay_inside_the_tiers() {
        let policy = policy();
        for retry in 1..=6 {
            let delay = policy.delay(retry, Duration::ZERO);
            assert!(delay >= Duration::from_secs(5), "{retry}: {delay:?}");
            assert!(delay <= Duration::from_secs(300), "{retry}: {delay:?}");
        }
        // Without jitter the 4th retry would be 5·3³ = 135 s; jitter only adds.
        assert!(policy.delay(4, Duration::ZERO) >= Duration::from_secs(135));
    }

    #[test]
    fn a_requested_delay_is_honoured_up_to_the_last_tier() {
        let policy = policy();
        assert!(policy.delay(1, Duration::from_secs(60)) >= Duration::from_secs(60));
        assert_eq!(
            policy.delay(1, Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn tiers_round_up() {
        let policy = policy();
        assert_eq!(
            policy.tier_for(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        assert_eq!(
            policy.tier_for(Duration::from_secs(6)),
            Duration::from_secs(30)
        );
        assert_eq!(
            policy.tier_for(Duration::from_secs(999)),
            Duration::from_secs(300)
        );
    }
}
