//! What a handler decides, and the handler contract itself.

use contexten_envelope::{Reason, Stage, TaskEnvelope};
use std::future::Future;
use std::time::Duration;

/// A message a handler wants published.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    pub stage: Stage,
    pub envelope: Box<TaskEnvelope>,
    /// Deliver after this delay (through the retry tiers) instead of now.
    pub delay: Option<Duration>,
}

/// Why a handler wants to try again later (a transient failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryReason {
    /// The reason code (`provider_unavailable`, `rate_limited`, …).
    pub code: Reason,
    pub detail: String,
}

/// Why a handler gives up on a task (a permanent failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadReason {
    /// The reason code (`invalid_request`, `retries_exhausted`, …); the failure
    /// answer carries it with its sentence ([`Reason::sentence`]).
    pub code: Reason,
    /// What went wrong, for operators: the dead-letter header and the log line.
    /// Never shown to the requester (it may quote stderr, paths or hosts).
    pub detail: String,
}

impl RetryReason {
    /// A retry reason.
    pub fn new(code: Reason, detail: impl Into<String>) -> Self {
        RetryReason {
            code,
            detail: detail.into(),
        }
    }
}

impl DeadReason {
    /// A dead-letter reason.
    pub fn new(code: Reason, detail: impl Into<String>) -> Self {
        DeadReason {
            code,
            detail: detail.into(),
        }
    }
}

/// The result of handling one envelope; the runtime turns it into broker actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish these messages (confirmed), record completion, ack.
    Forward(Vec<Next>),
    /// A transient failure: redeliver to this stage after at least this delay,
    /// counting an attempt; dead-letter once the attempts are spent.
    RetryAfter(Duration, RetryReason),
    /// A permanent failure: dead-letter with the reason; the requester still gets
    /// a failure answer through the dispatch stage.
    DeadLetter(DeadReason),
    /// Nothing more to publish.
    Done,
}

impl Outcome {
    /// Forward one envelope to `stage` now.
    pub fn forward(stage: Stage, envelope: TaskEnvelope) -> Self {
        Outcome::Forward(vec![Next {
            stage,
            envelope: Box::new(envelope),
            delay: None,
        }])
    }

    /// Check again in `stage` after `delay` without counting an attempt (for
    /// polling a long-running job without holding a message).
    pub fn later(stage: Stage, delay: Duration, envelope: TaskEnvelope) -> Self {
        Outcome::Forward(vec![Next {
            stage,
            envelope: Box::new(envelope),
            delay: Some(delay),
        }])
    }

    /// A transient failure.
    pub fn retry(delay: Duration, code: Reason, detail: impl Into<String>) -> Self {
        Outcome::RetryAfter(delay, RetryReason::new(code, detail))
    }

    /// A permanent failure.
    pub fn dead(code: Reason, detail: impl Into<String>) -> Self {
        Outcome::DeadLetter(DeadReason::new(code, detail))
    }

    /// The metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Forward(_) => "forward",
            Outcome::RetryAfter(..) => "retry",
            Outcome::DeadLetter(_) => "dead_letter",
            Outcome::Done => "done",
        }
    }
}

/// A stage handler: a plain async function of an envelope, testable without a
/// broker. Closures `Fn(TaskEnvelope) -> impl Future<Output = Outcome>` qualify.
pub trait Handler: Send + Sync + 'static {
    /// Handles one envelope.
    fn handle(&self, envelope: TaskEnvelope) -> impl Future<Output = Outcome> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskEnvelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    fn handle(&self, envelope: TaskEnvelope) -> impl Future<Output = Outcome> + Send {
        self(envelope)
    }
}
