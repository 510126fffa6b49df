//! The agent stage's handler. A task arrives without `agent_run`: the handler
//! starts (or, for a follow-up, resumes) a Codegen run, records it against the
//! task, tells the person where to follow it and schedules a status check
//! through the delay queues. A status check (`agent_run` set) asks Codegen once
//! and either answers the person or schedules the next check. No delivery is
//! held while a run goes on.

mod outcome;
mod poll;
mod start;

use crate::codegen::{CodegenClient, CodegenError};
use crate::gate::{self, Gate, GateLimits};
use crate::records::RunRecords;
use crate::settings::AgentSettings;
use crate::slots::RequesterSlots;
use contexten_broker::{Handler, Outcome, Store};
use contexten_envelope::Reason;
use contexten_envelope::{Stage, StageTiming, TaskEnvelope, now_ms};
use contexten_resilience::Permit;
use contexten_telemetry::metric;
use std::sync::Arc;
use std::time::Duration;

/// How long past the request timeout a create claim protects an in-flight
/// create from a concurrent redelivery.
const CLAIM_GRACE_MARGIN: Duration = Duration::from_secs(5);
/// A requester's slot outlives the longest run by this much (the last status
/// check's gap, delay-tier rounding, a redelivery) before its lease frees it.
const SLOT_LEASE_SLACK: Duration = Duration::from_secs(5 * 60);

/// The agent stage handler (cheap to clone).
#[derive(Clone, Debug)]
pub struct AgentHandler {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    client: CodegenClient,
    records: RunRecords,
    gate: Gate,
    slots: RequesterSlots,
    requester_wait: Duration,
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
                slots: RequesterSlots::new(
                    store.clone(),
                    settings.max_runs_per_requester,
                    settings.max_run + settings.poll_max + SLOT_LEASE_SLACK,
                ),
                requester_wait: settings.requester_wait,
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
                Reason::AgentNotConfigured,
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
    /// Reports a Codegen request to the breaker, the metrics and the log.
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

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{ReplyTarget, Request, Source, SourceKind};

    #[test]
    fn status_checks_keep_one_timing_from_the_first_start() {
        let mut env = TaskEnvelope::new(
            Source {
                kind: SourceKind::API,
                delivery_id: None,
                requested_by: None,
                reply_to: ReplyTarget::None,
                extra: Default::default(),
            },
            Request::default(),
        );
        let timing = |stage, started_at_ms, finished_at_ms| StageTiming {
            stage,
            started_at_ms,
            finished_at_ms,
        };
        env.timings = vec![
            timing(Stage::Context, 1, Some(2)),
            timing(Stage::Agent, 3, Some(4)),
            timing(Stage::Agent, 10, Some(11)),
            timing(Stage::Agent, 20, None),
        ];
        collapse_timings(&mut env);
        assert_eq!(
            env.timings,
            vec![
                timing(Stage::Context, 1, Some(2)),
                timing(Stage::Agent, 3, None)
            ]
        );
    }
}
