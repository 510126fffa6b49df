//! A status check: ask Codegen once, then answer the person or schedule the
//! next check with a growing delay.

use super::Inner;
use super::outcome::{defer, error_outcome, jitter};
use crate::answers;
use crate::codegen::{CodegenError, RunState};
use crate::gate::Budget;
use contexten_broker::Outcome;
use contexten_envelope::Reason;
use contexten_envelope::{AgentRunRef, Stage, TaskEnvelope, now_ms};
use contexten_telemetry::metric;
use std::time::Duration;

impl Inner {
    /// A status check: ask once, then answer or schedule the next check. When
    /// the run is over for us (answered, timed out, refused) its requester's
    /// slot is given back; a retry or the next check keeps it.
    pub(super) async fn check(&self, envelope: TaskEnvelope, run: AgentRunRef) -> Outcome {
        let slot_owner = envelope.clone();
        let outcome = self.check_once(envelope, run).await;
        let ongoing = match &outcome {
            Outcome::Forward(next) => next.iter().any(|n| n.stage == Stage::Agent),
            Outcome::RetryAfter(..) => true,
            Outcome::DeadLetter(_) | Outcome::Done => false,
        };
        if !ongoing {
            self.slots.release(&slot_owner).await;
        }
        outcome
    }

    async fn check_once(&self, mut envelope: TaskEnvelope, run: AgentRunRef) -> Outcome {
        let overdue = now_ms().saturating_sub(run.created_at_ms) >= self.max_run.as_millis() as u64;
        let permit = match self.gate.admit(Budget::Request).await {
            Ok(permit) => permit,
            Err(_) if overdue => return self.time_out(&envelope, &run),
            Err(deferral) => return defer(envelope, deferral),
        };
        envelope.cost.agent_calls += 1;
        let result = self.client.get_run(run.run_id).await;
        self.finish_call("get", &permit, &result).await;
        let current = match result {
            Ok(current) => current,
            Err(CodegenError::NotFound(message)) => {
                let link = run
                    .web_url
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default();
                return Outcome::dead(
                    Reason::AgentRunNotFound,
                    format!(
                        "Codegen no longer knows agent run {}{link}: {message}",
                        run.run_id
                    ),
                );
            }
            Err(error) => {
                return error_outcome(&error, "check the agent run", run.web_url.as_deref());
            }
        };
        let state = current.state();
        match &state {
            RunState::Succeeded => {
                metric::agent_run("succeeded");
                tracing::info!(run_id = run.run_id, polls = run.polls, "agent run finished");
                Outcome::forward(Stage::Dispatch, answers::finished(&envelope, &current))
            }
            RunState::Failed | RunState::Cancelled | RunState::LimitReached => {
                metric::agent_run(match state {
                    RunState::Cancelled => "cancelled",
                    RunState::LimitReached => "limit_reached",
                    _ => "failed",
                });
                tracing::info!(run_id = run.run_id, status = ?current.status, "agent run ended without success");
                Outcome::forward(
                    Stage::Dispatch,
                    answers::run_failed(&envelope, &current, &state),
                )
            }
            _ if overdue => self.time_out(&envelope, &run),
            other => {
                if let RunState::Unknown(status) = other {
                    tracing::warn!(
                        run_id = run.run_id,
                        status,
                        "unknown run status; treating it as running"
                    );
                }
                let delay = self.poll_delay(run.polls);
                if let Some(next) = envelope.agent_run.as_mut() {
                    next.polls = run.polls.saturating_add(1);
                    next.web_url = current.web_url.or(next.web_url.take());
                }
                Outcome::later(Stage::Agent, delay, envelope)
            }
        }
    }

    fn time_out(&self, envelope: &TaskEnvelope, run: &AgentRunRef) -> Outcome {
        metric::agent_run("timed_out");
        tracing::warn!(
            run_id = run.run_id,
            max_run_secs = self.max_run.as_secs(),
            "agent run took too long"
        );
        Outcome::forward(
            Stage::Dispatch,
            answers::timed_out(envelope, run, self.max_run),
        )
    }

    /// The wait before status check `polls + 1`: doubling from the initial delay
    /// up to the maximum, with ±10 % jitter so checks do not bunch up.
    pub(super) fn poll_delay(&self, polls: u32) -> Duration {
        let base = self
            .poll_initial
            .saturating_mul(1u32 << polls.min(20))
            .min(self.poll_max);
        jitter(base, 0.1).min(self.poll_max)
    }
}
