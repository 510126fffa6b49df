//! How results become outcomes: the answers that start a run's polling, the
//! reschedules that do not count an attempt, and the one mapping of Codegen
//! errors to retries and dead letters.

use crate::answers;
use crate::codegen::CodegenError;
use crate::gate::{self, Deferral};
use crate::records::RecordedRun;
use contexten_broker::{BrokerError, Next, Outcome};
use contexten_envelope::Reason;
use contexten_envelope::{Stage, TaskEnvelope};
use std::time::Duration;

/// The wait after a 429 without `Retry-After` (Codegen documents none).
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// The run exists: tell the person where to follow it, and check on it later.
pub(super) fn started(
    envelope: TaskEnvelope,
    run: RecordedRun,
    resumed: bool,
    first_check: Duration,
) -> Outcome {
    let progress = answers::progress(&envelope, &run, resumed);
    let check = answers::status_check(&envelope, &run);
    Outcome::Forward(vec![
        Next {
            stage: Stage::Dispatch,
            envelope: Box::new(progress),
            delay: None,
        },
        Next {
            stage: Stage::Agent,
            envelope: Box::new(check),
            delay: Some(first_check),
        },
    ])
}

/// Reschedules the task without counting an attempt: waiting for a limit or an
/// open breaker is not a failure, and the task must never be dropped.
pub(super) fn defer(envelope: TaskEnvelope, deferral: Deferral) -> Outcome {
    gate::count_deferral(&deferral);
    tracing::info!(
        reason = deferral.reason,
        wait_ms = deferral.wait.as_millis() as u64,
        "codegen gate closed; rescheduling"
    );
    // Spread the waiters so they do not come back all at once.
    Outcome::later(Stage::Agent, jitter(deferral.wait, 0.2), envelope)
}

pub(super) fn redis_retry(error: &BrokerError) -> Outcome {
    Outcome::retry(Duration::ZERO, Reason::RedisUnavailable, error.to_string())
}

/// `base` plus up to `share` of it at random (never less than `base`, since the
/// waits come from limits that must be honoured).
pub(super) fn jitter(base: Duration, share: f64) -> Duration {
    base + base.mul_f64(share * rand::random::<f64>())
}

/// The one place a Codegen error becomes an outcome: transient errors retry
/// (counting an attempt), permanent ones dead-letter with a reason the person
/// reads in the failure answer.
pub(super) fn error_outcome(error: &CodegenError, doing: &str, link: Option<&str>) -> Outcome {
    let link = link.map(|u| format!(" The run: {u}")).unwrap_or_default();
    match error {
        CodegenError::RateLimited {
            retry_after,
            message,
        } => Outcome::retry(
            retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            Reason::CodegenRateLimited,
            message.clone(),
        ),
        CodegenError::Server { .. } | CodegenError::Transport(_) => Outcome::retry(
            Duration::ZERO,
            Reason::CodegenUnavailable,
            error.to_string(),
        ),
        CodegenError::Timeout(_) => {
            Outcome::retry(Duration::ZERO, Reason::CodegenTimeout, error.to_string())
        }
        CodegenError::Decode(_) => Outcome::retry(
            Duration::ZERO,
            Reason::CodegenBadResponse,
            error.to_string(),
        ),
        CodegenError::PaymentRequired(message) => Outcome::dead(
            Reason::CodegenLimitReached,
            format!(
                "Codegen could not {doing}: the organisation's agent run allowance is used up ({message}).{link}"
            ),
        ),
        CodegenError::Unauthorized(message) => Outcome::dead(
            Reason::CodegenUnauthorized,
            format!("Codegen could not {doing}: it rejected our API token ({message}).{link}"),
        ),
        CodegenError::Forbidden(message) => Outcome::dead(
            Reason::CodegenForbidden,
            format!(
                "Codegen could not {doing}: access to the organisation was refused ({message}).{link}"
            ),
        ),
        CodegenError::NotFound(message) => Outcome::dead(
            Reason::CodegenNotFound,
            format!("Codegen could not {doing}: {message}{link}"),
        ),
        CodegenError::Invalid(message) => Outcome::dead(
            Reason::CodegenInvalidRequest,
            format!("Codegen could not {doing}: it rejected the request ({message}).{link}"),
        ),
        CodegenError::Rejected { status, message } => Outcome::dead(
            Reason::CodegenRejected,
            format!("Codegen could not {doing}: it answered {status} ({message}).{link}"),
        ),
        CodegenError::Client(message) => Outcome::dead(Reason::AgentNotConfigured, message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_dead_letter_and_transient_ones_retry() {
        let forbidden =
            CodegenError::Forbidden("You do not have access to this organization.".into());
        match error_outcome(&forbidden, "start an agent run", None) {
            Outcome::DeadLetter(reason) => {
                assert_eq!(reason.code, "codegen_forbidden");
                assert!(
                    reason.detail.contains("You do not have access"),
                    "{}",
                    reason.detail
                );
            }
            other => panic!("{other:?}"),
        }
        let limited = CodegenError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit exceeded".into(),
        };
        match error_outcome(&limited, "x", None) {
            Outcome::RetryAfter(wait, reason) => {
                assert_eq!(wait, Duration::from_secs(7));
                assert_eq!(reason.code, "codegen_rate_limited");
            }
            other => panic!("{other:?}"),
        }
        let server = CodegenError::Server {
            status: 502,
            message: "bad gateway".into(),
        };
        assert!(
            matches!(error_outcome(&server, "x", None), Outcome::RetryAfter(_, r) if r.code == "codegen_unavailable")
        );
    }

    #[test]
    fn jitter_only_adds_a_bounded_share() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 0.2);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }
}
