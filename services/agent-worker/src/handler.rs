//! The agent stage's handler. A task arrives without `agent_run`: the handler
//! starts (or, for a follow-up, resumes) a Codegen run, records it against the
//! task, tells the person where to follow it and schedules a status check
//! through the delay queues. A status check (`agent_run` set) asks Codegen once
//! and either answers the person or schedules the next check. No delivery is
//! held while a run goes on.

use crate::answers;
use crate::codegen::{CodegenClient, CodegenError, CreateAgentRun, ResumeAgentRun, RunState};
use crate::gate::{self, Budget, Deferral, Gate, GateLimits};
use crate::records::{Claim, RecordedRun, RunRecords};
use crate::settings::AgentSettings;
use contexten_broker::{BrokerError, Handler, Next, Outcome, Store};
use contexten_envelope::{AgentRunRef, Stage, StageTiming, TaskEnvelope, now_ms};
use contexten_resilience::Permit;
use contexten_telemetry::metric;
use std::sync::Arc;
use std::time::Duration;

/// How long past the request timeout a create claim protects an in-flight
/// create from a concurrent redelivery.
const CLAIM_GRACE_MARGIN: Duration = Duration::from_secs(5);
/// Runs listed when looking for one an interrupted create may have started.
/// Newest first, and creations are limited to ~10 a minute, so one page covers
/// the last ten minutes at least.
const LIST_PAGE: u32 = 100;
/// The wait after a 429 without `Retry-After` (Codegen documents none).
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// The agent stage handler (cheap to clone).
#[derive(Clone, Debug)]
pub struct AgentHandler {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    client: CodegenClient,
    records: RunRecords,
    gate: Gate,
    claim_grace: Duration,
    poll_initial: Duration,
    poll_max: Duration,
    max_run: Duration,
}

impl AgentHandler {
    /// A handler for `settings`, keeping its records and limits in `store`'s Redis.
    /// Without Codegen credentials every task gets a "not configured" failure.
    pub fn new(settings: &AgentSettings, store: Store) -> Result<Self, CodegenError> {
        let Some(codegen) = &settings.codegen else {
            return Ok(AgentHandler { inner: None });
        };
        let limits = GateLimits {
            create_limit: settings.create_limit,
            create_window: settings.create_window,
            request_limit: settings.request_limit,
            request_window: settings.request_window,
            breaker: settings.breaker,
            max_hold: settings.max_hold,
        };
        Ok(AgentHandler {
            inner: Some(Arc::new(Inner {
                client: CodegenClient::new(codegen)?,
                records: RunRecords::new(store.clone()),
                gate: Gate::new(store, codegen.org_id, &limits),
                claim_grace: codegen.timeout + CLAIM_GRACE_MARGIN,
                poll_initial: settings.poll_initial,
                poll_max: settings.poll_max,
                max_run: settings.max_run,
            })),
        })
    }

    /// Whether Codegen credentials are configured.
    pub fn is_configured(&self) -> bool {
        self.inner.is_some()
    }

    /// Handles one envelope.
    pub async fn handle_envelope(&self, mut envelope: TaskEnvelope) -> Outcome {
        let Some(inner) = &self.inner else {
            return Outcome::dead(
                "agent_not_configured",
                "the Codegen agent is not configured on this deployment \
                 (CODEGEN_ORG_ID and CODEGEN_API_TOKEN are unset)",
            );
        };
        collapse_timings(&mut envelope);
        match envelope.agent_run.clone() {
            Some(run) => inner.check(envelope, run).await,
            None => inner.start(envelope).await,
        }
    }
}

impl Handler for AgentHandler {
    fn handle(&self, envelope: TaskEnvelope) -> impl Future<Output = Outcome> + Send {
        self.handle_envelope(envelope)
    }
}

/// Every status check adds a timing entry; keep one for the stage, from its
/// first start, so a long run does not grow the envelope.
fn collapse_timings(envelope: &mut TaskEnvelope) {
    let agent: Vec<&StageTiming> = envelope
        .timings
        .iter()
        .filter(|t| t.stage == Stage::Agent)
        .collect();
    if agent.len() < 2 {
        return;
    }
    let started_at_ms = agent
        .iter()
        .map(|t| t.started_at_ms)
        .min()
        .unwrap_or_else(now_ms);
    envelope.timings.retain(|t| t.stage != Stage::Agent);
    envelope.timings.push(StageTiming {
        stage: Stage::Agent,
        started_at_ms,
        finished_at_ms: None,
    });
}

impl Inner {
    /// A task without a run: reuse the recorded one, resume the conversation's
    /// run, or create one.
    async fn start(&self, envelope: TaskEnvelope) -> Outcome {
        match self.records.lookup(envelope.task_id).await {
            Ok(Some(run)) => {
                tracing::info!(
                    run_id = run.run_id,
                    "run already recorded for this task; not creating another"
                );
                return started(envelope, run, false, self.poll_delay(0));
            }
            Ok(None) => {}
            Err(error) => return redis_retry(&error),
        }
        let previous = envelope
            .conversation
            .as_ref()
            .and_then(|c| c.previous_task_id);
        if let Some(previous) = previous {
            match self.records.lookup(previous).await {
                Ok(Some(run)) => return self.resume(envelope, run).await,
                Ok(None) => {
                    tracing::info!(%previous, "no run recorded for the earlier task; starting a new one");
                }
                Err(error) => return redis_retry(&error),
            }
        }
        self.create(envelope).await
    }

    async fn create(&self, mut envelope: TaskEnvelope) -> Outcome {
        let permit = match self.gate.admit(Budget::Create).await {
            Ok(permit) => permit,
            Err(deferral) => return defer(envelope, deferral),
        };
        let task = envelope.task_id;
        match self.records.claim(task, self.claim_grace).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Stale) => match self.find_created(&mut envelope, &permit).await {
                Ok(Some(run)) => {
                    metric::agent_run("adopted");
                    return self.record_and_start(envelope, run, false).await;
                }
                Ok(None) => {}
                Err(outcome) => return *outcome,
            },
            Ok(Claim::Recorded) => return Box::pin(self.start(envelope)).await,
            Ok(Claim::Busy(wait)) => {
                let deferral = Deferral {
                    wait,
                    reason: "create_in_flight",
                };
                return defer(envelope, deferral);
            }
            Err(error) => return redis_retry(&error),
        }
        let input = CreateAgentRun {
            prompt: answers::prompt(&envelope),
            metadata: answers::metadata(&envelope),
        };
        envelope.cost.agent_calls += 1;
        let result = self.client.create_run(&input).await;
        self.finish_call("create", &permit, &result).await;
        match result {
            Ok(run) => {
                tracing::info!(run_id = run.id, web_url = ?run.web_url, "agent run created");
                metric::agent_run("created");
                let recorded = RecordedRun {
                    run_id: run.id,
                    created_at_ms: now_ms(),
                    web_url: run.web_url,
                };
                self.record_and_start(envelope, recorded, false).await
            }
            Err(error) => {
                let cleared = if error.certainly_not_applied() {
                    self.records.release(task).await
                } else {
                    self.records.mark_unsure(task).await
                };
                if cleared.is_err() {
                    metric::redis_degraded("agent_run_record");
                }
                error_outcome(&error, "start an agent run", None)
            }
        }
    }

    /// After a create that ended without a clear answer (crash, timeout, 5xx):
    /// the run it may have started, found by our task id in its metadata.
    async fn find_created(
        &self,
        envelope: &mut TaskEnvelope,
        permit: &Permit,
    ) -> Result<Option<RecordedRun>, Box<Outcome>> {
        if let Err(deferral) = self.gate.take(Budget::Request, false).await {
            return Err(Box::new(defer(envelope.clone(), deferral)));
        }
        envelope.cost.agent_calls += 1;
        let result = self.client.list_runs(0, LIST_PAGE).await;
        self.finish_call("list", permit, &result).await;
        let page = result.map_err(|e| Box::new(error_outcome(&e, "look up an agent run", None)))?;
        let task = envelope.task_id.to_string();
        let found = page
            .items
            .into_iter()
            .find(|run| run.metadata_str("task_id") == Some(task.as_str()));
        if let Some(run) = &found {
            tracing::info!(
                run_id = run.id,
                "found the run an interrupted create started"
            );
        }
        Ok(found.map(|run| RecordedRun {
            run_id: run.id,
            created_at_ms: now_ms(),
            web_url: run.web_url,
        }))
    }

    /// A follow-up in a conversation whose earlier task has a run: resume it.
    async fn resume(&self, mut envelope: TaskEnvelope, previous: RecordedRun) -> Outcome {
        let permit = match self.gate.admit(Budget::Request).await {
            Ok(permit) => permit,
            Err(deferral) => return defer(envelope, deferral),
        };
        let input = ResumeAgentRun {
            agent_run_id: previous.run_id,
            prompt: answers::prompt(&envelope),
        };
        envelope.cost.agent_calls += 1;
        let result = self.client.resume_run(&input).await;
        self.finish_call("resume", &permit, &result).await;
        match result {
            Ok(run) => {
                tracing::info!(run_id = run.id, "agent run resumed with the follow-up");
                metric::agent_run("resumed");
                let recorded = RecordedRun {
                    run_id: run.id,
                    created_at_ms: now_ms(),
                    web_url: run.web_url.or(previous.web_url),
                };
                self.record_and_start(envelope, recorded, true).await
            }
            Err(CodegenError::NotFound(message)) => {
                tracing::info!(run_id = previous.run_id, %message, "the earlier run is gone; starting a new one");
                self.create(envelope).await
            }
            Err(error) => {
                error_outcome(&error, "resume the agent run", previous.web_url.as_deref())
            }
        }
    }

    async fn record_and_start(
        &self,
        envelope: TaskEnvelope,
        run: RecordedRun,
        resumed: bool,
    ) -> Outcome {
        // The record is what keeps a redelivery from starting a second run; the
        // runtime acks only after this outcome is applied. Without Redis the run
        // is still followed (the status check carries its id), loudly.
        if let Err(error) = self.records.record(envelope.task_id, &run).await {
            tracing::warn!(%error, run_id = run.run_id, "could not record the run against the task");
            metric::redis_degraded("agent_run_record");
        }
        started(envelope, run, resumed, self.poll_delay(0))
    }

    /// A status check: ask once, then answer or schedule the next check.
    async fn check(&self, mut envelope: TaskEnvelope, run: AgentRunRef) -> Outcome {
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
                    "agent_run_not_found",
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
    fn poll_delay(&self, polls: u32) -> Duration {
        let base = self
            .poll_initial
            .saturating_mul(1u32 << polls.min(20))
            .min(self.poll_max);
        jitter(base, 0.1).min(self.poll_max)
    }

    async fn finish_call<T>(
        &self,
        endpoint: &'static str,
        permit: &Permit,
        result: &Result<T, CodegenError>,
    ) {
        self.gate.settle(permit, result).await;
        metric::codegen_request(endpoint, gate::outcome_label(result));
        if let Err(error) = result {
            tracing::warn!(endpoint, %error, "codegen request failed");
        }
    }
}

/// The run exists: tell the person where to follow it, and check on it later.
fn started(
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
fn defer(envelope: TaskEnvelope, deferral: Deferral) -> Outcome {
    gate::count_deferral(&deferral);
    tracing::info!(
        reason = deferral.reason,
        wait_ms = deferral.wait.as_millis() as u64,
        "codegen gate closed; rescheduling"
    );
    // Spread the waiters so they do not come back all at once.
    Outcome::later(Stage::Agent, jitter(deferral.wait, 0.2), envelope)
}

fn redis_retry(error: &BrokerError) -> Outcome {
    Outcome::retry(Duration::ZERO, "redis_unavailable", error.to_string())
}

/// `base` plus up to `share` of it at random (never less than `base`, since the
/// waits come from limits that must be honoured).
fn jitter(base: Duration, share: f64) -> Duration {
    base + base.mul_f64(share * rand::random::<f64>())
}

/// The one place a Codegen error becomes an outcome: transient errors retry
/// (counting an attempt), permanent ones dead-letter with a reason the person
/// reads in the failure answer.
fn error_outcome(error: &CodegenError, doing: &str, link: Option<&str>) -> Outcome {
    let link = link.map(|u| format!(" The run: {u}")).unwrap_or_default();
    match error {
        CodegenError::RateLimited {
            retry_after,
            message,
        } => Outcome::retry(
            retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            "codegen_rate_limited",
            message.clone(),
        ),
        CodegenError::Server { .. } | CodegenError::Transport(_) => {
            Outcome::retry(Duration::ZERO, "codegen_unavailable", error.to_string())
        }
        CodegenError::Timeout(_) => {
            Outcome::retry(Duration::ZERO, "codegen_timeout", error.to_string())
        }
        CodegenError::Decode(_) => {
            Outcome::retry(Duration::ZERO, "codegen_bad_response", error.to_string())
        }
        CodegenError::PaymentRequired(message) => Outcome::dead(
            "codegen_limit_reached",
            format!(
                "Codegen could not {doing}: the organisation's agent run allowance is used up ({message}).{link}"
            ),
        ),
        CodegenError::Unauthorized(message) => Outcome::dead(
            "codegen_unauthorized",
            format!("Codegen could not {doing}: it rejected our API token ({message}).{link}"),
        ),
        CodegenError::Forbidden(message) => Outcome::dead(
            "codegen_forbidden",
            format!(
                "Codegen could not {doing}: access to the organisation was refused ({message}).{link}"
            ),
        ),
        CodegenError::NotFound(message) => Outcome::dead(
            "codegen_not_found",
            format!("Codegen could not {doing}: {message}{link}"),
        ),
        CodegenError::Invalid(message) => Outcome::dead(
            "codegen_invalid_request",
            format!("Codegen could not {doing}: it rejected the request ({message}).{link}"),
        ),
        CodegenError::Rejected { status, message } => Outcome::dead(
            "codegen_rejected",
            format!("Codegen could not {doing}: it answered {status} ({message}).{link}"),
        ),
        CodegenError::Client(message) => Outcome::dead("agent_not_configured", message.clone()),
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
