//! Starting a task's run: reuse the recorded one, resume the conversation's
//! run, or create one under a claim that keeps redeliveries from repeating it.

use super::Inner;
use super::outcome::{defer, error_outcome, redis_retry, started};
use crate::answers;
use crate::codegen::{CodegenError, CreateAgentRun, ResumeAgentRun};
use crate::gate::{Budget, Deferral};
use crate::records::{Claim, RecordedRun};
use crate::slots::Slot;
use contexten_broker::Outcome;
use contexten_envelope::{Stage, TaskEnvelope, now_ms};
use contexten_resilience::Permit;
use contexten_telemetry::metric;

/// Runs listed when looking for one an interrupted create may have started.
/// Newest first, and creations are limited to ~10 a minute, so one page covers
/// the last ten minutes at least.
const LIST_PAGE: u32 = 100;

impl Inner {
    /// A task without a run: reuse the recorded one, resume the conversation's
    /// run, or create one.
    pub(super) async fn start(&self, envelope: TaskEnvelope) -> Outcome {
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
        match self.slots.acquire(&envelope).await {
            Ok(Slot::Held) => {}
            Ok(Slot::Full { in_progress }) => return self.wait_for_slot(envelope, in_progress),
            Err(error) => return redis_retry(&error),
        }
        let slot_owner = envelope.clone();
        let outcome = self.start_run(envelope).await;
        // No run came of it (refused, or retried later from scratch): the slot
        // goes back; a deferral keeps it, the task takes it again when it returns.
        if matches!(outcome, Outcome::DeadLetter(_) | Outcome::RetryAfter(..)) {
            self.slots.release(&slot_owner).await;
        }
        outcome
    }

    /// Every slot of the requester is taken: wait (rescheduled, no attempt
    /// counted) until one frees, or tell the person once the wait is too long.
    fn wait_for_slot(&self, envelope: TaskEnvelope, in_progress: u32) -> Outcome {
        let since = envelope
            .timings
            .iter()
            .filter(|t| t.stage == Stage::Agent)
            .map(|t| t.started_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        if now_ms().saturating_sub(since) >= self.requester_wait.as_millis() as u64 {
            metric::agent_run("requester_limit");
            tracing::info!(
                in_progress,
                "the requester's runs are still in progress; answering"
            );
            return Outcome::forward(
                Stage::Dispatch,
                answers::runs_in_progress(&envelope, in_progress),
            );
        }
        let deferral = Deferral {
            wait: self.poll_initial,
            reason: "requester_limit",
        };
        defer(envelope, deferral)
    }

    /// Resumes the conversation's run, or creates one.
    async fn start_run(&self, envelope: TaskEnvelope) -> Outcome {
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
                Err(outcome) => {
                    // Still unsure: the next attempt looks again at once.
                    if self.records.mark_unsure(task).await.is_err() {
                        metric::redis_degraded("agent_run_record");
                    }
                    return *outcome;
                }
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
}
