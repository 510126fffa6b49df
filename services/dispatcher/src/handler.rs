//! The dispatch handler: every answer posted back where the request came from,
//! exactly once, in order, within the platforms' limits.
//!
//! For one envelope: read the reply kind (none = final) and let the reply
//! channel registered under the target's kind plan it (no channel:
//! `unknown_reply_channel`; a target it cannot read: `invalid_reply_target`);
//! skip it if the ledger says it was posted (a redelivery), or if it is an
//! acknowledgement or progress arriving after the final answer; let a final
//! answer wait briefly for an acknowledgement being posted; take the (task,
//! kind) lock; reconcile an earlier uncertain attempt; pass the limiters;
//! mark the attempt, post, and record the external id before returning (the
//! runtime acks after). Provider errors become outcomes in [`outcome_of`].
//! Without the ledger (Redis unreachable) nothing is posted: the reply comes
//! back after [`LEDGER_DELAY`], since posting unrecorded could post twice.

use crate::channels::{PlannedReply, Registry, Route};
use crate::config::{Limits, ProviderSettings};
use crate::ledger::{Ledger, ReplySlot};
use contexten_broker::{Handler, Outcome, Store};
use contexten_envelope::Reason;
use contexten_envelope::{ReplyKind, Stage, TaskEnvelope, now_ms};
use contexten_providers::ProviderError;
use contexten_telemetry::metric;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a final answer waits for an acknowledgement or progress message
/// that is being posted, so it never lands before them.
const PRELIMINARY_WAIT: Duration = Duration::from_secs(5);
/// Poll interval of that wait.
const PRELIMINARY_POLL: Duration = Duration::from_millis(50);
/// When the (task, kind) lock is held by another delivery, look again after.
const BUSY_DELAY: Duration = Duration::from_secs(2);
/// When the reply ledger (Redis) cannot be read or written, look again after:
/// posting without it could post twice, so a reply waits for Redis instead.
const LEDGER_DELAY: Duration = Duration::from_secs(5);

/// The dispatch stage's handler: the reply channels, the reply ledger and
/// the limits (cheap to clone).
#[derive(Clone)]
pub struct DispatchHandler {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Registry,
    ledger: Ledger,
    store: Store,
    limits: Limits,
    lock_ttl: Duration,
}

impl DispatchHandler {
    /// A handler posting with the configured platforms; replies to the others
    /// are dead-lettered as `provider_not_configured`. Fails only when the
    /// callback client cannot be built.
    pub fn new(settings: &ProviderSettings, store: Store) -> Result<Self, ProviderError> {
        Ok(Self::with_channels(
            settings,
            Registry::from_settings(settings)?,
            store,
        ))
    }

    /// A handler posting through `channels` (tests and extensions register
    /// their own); `settings` gives the limiter wait and the HTTP timeout.
    pub fn with_channels(settings: &ProviderSettings, channels: Registry, store: Store) -> Self {
        // Longer than one delivery can take: the limiter wait and three calls
        // (token exchange or search, post, record), each bounded by the timeout.
        let lock_ttl =
            settings.limits.max_wait + settings.http.timeout * 3 + Duration::from_secs(10);
        DispatchHandler {
            inner: Arc::new(Inner {
                channels,
                ledger: Ledger::new(store.clone()),
                store,
                limits: settings.limits,
                lock_ttl,
            }),
        }
    }

    /// Handles one dispatch envelope.
    pub async fn dispatch(&self, envelope: TaskEnvelope) -> Outcome {
        let inner = &self.inner;
        let kind = envelope.reply.unwrap_or(ReplyKind::Final);
        let now = now_ms();
        let slot = ReplySlot {
            task: envelope.task_id,
            kind,
            discriminator: (kind == ReplyKind::Progress).then(|| progress_digest(&envelope)),
        };
        let plan = match inner.channels.route(&envelope, kind, &slot, now) {
            Route::Reply(plan) => plan,
            Route::Nobody => {
                note("none", kind, "no_target");
                return Outcome::Done;
            }
            Route::Unknown(channel) => {
                // The label is fixed: a kind is not bounded, a metric label must be.
                tracing::warn!(
                    channel,
                    kind = kind.as_str(),
                    "no reply channel of this kind; dead-lettering"
                );
                note("unknown", kind, "unknown_channel");
                return Outcome::dead(
                    Reason::UnknownReplyChannel,
                    format!(
                        "no reply channel `{channel}` is registered, so this {} reply cannot be posted",
                        kind.as_str()
                    ),
                );
            }
            Route::Invalid { channel, error } => {
                tracing::warn!(channel, kind = kind.as_str(), %error, "unreadable reply target; dead-lettering");
                note(channel, kind, "invalid_target");
                return Outcome::dead(Reason::InvalidReplyTarget, error.to_string());
            }
        };
        let plan = plan.as_ref();
        let provider = plan.provider();
        match inner.ledger.posted(&slot).await {
            Ok(Some(record)) => {
                tracing::info!(provider, kind = kind.as_str(), %record, "reply already posted; nothing to do");
                note(provider, kind, "duplicate");
                return Outcome::Done;
            }
            Ok(None) => {}
            Err(error) => return ledger_unavailable(provider, kind, &error, envelope),
        }
        let final_posted = inner
            .ledger
            .final_posted(envelope.task_id)
            .await
            .unwrap_or(false);
        match kind {
            ReplyKind::Ack | ReplyKind::Progress if final_posted => {
                // Arriving after the answer, it would only confuse the thread.
                note(provider, kind, "stale");
                return Outcome::Done;
            }
            ReplyKind::Final | ReplyKind::Failure if final_posted => {
                note(provider, kind, "duplicate");
                return Outcome::Done;
            }
            ReplyKind::Final | ReplyKind::Failure => self.wait_for_preliminaries(&envelope).await,
            _ => {}
        }
        if !plan.configured() {
            note(provider, kind, "not_configured");
            return Outcome::dead(
                Reason::ProviderNotConfigured,
                format!(
                    "no {provider} credentials are configured, so this {} reply cannot be posted",
                    kind.as_str()
                ),
            );
        }
        let claim = match inner.ledger.claim(&slot, inner.lock_ttl).await {
            Ok(Some(claim)) => claim,
            Ok(None) => {
                note(provider, kind, "rescheduled");
                return Outcome::later(Stage::Dispatch, BUSY_DELAY, envelope);
            }
            Err(error) => return ledger_unavailable(provider, kind, &error, envelope),
        };
        // Checked again under the lock: another delivery may have recorded the
        // reply between the first check and the claim.
        let outcome = match inner.ledger.posted(&slot).await {
            Ok(Some(_)) => {
                note(provider, kind, "duplicate");
                Outcome::Done
            }
            Ok(None) => self.post_once(&envelope, &slot, plan).await,
            Err(error) => ledger_unavailable(provider, kind, &error, envelope.clone()),
        };
        inner.ledger.release(claim).await;
        outcome
    }

    /// Reconciles, passes the limiters, posts and records one reply.
    async fn post_once(
        &self,
        envelope: &TaskEnvelope,
        slot: &ReplySlot,
        plan: &dyn PlannedReply,
    ) -> Outcome {
        let inner = &self.inner;
        let (provider, kind) = (plan.provider(), slot.kind);
        match inner.ledger.attempt_started(slot).await {
            Ok(Some(since)) => match plan.reconcile(&inner.store, since).await {
                Ok(Some(posted)) => {
                    tracing::info!(provider, external_id = %posted.external_id, "an earlier attempt had posted the reply; recorded it");
                    if inner.ledger.record(slot, &posted, now_ms()).await.is_err() {
                        metric::redis_degraded("reply_ledger");
                    }
                    note(provider, kind, "reconciled");
                    return Outcome::Done;
                }
                Ok(None) => {}
                Err(error) => return outcome_of(provider, kind, error),
            },
            Ok(None) => {}
            Err(error) => return ledger_unavailable(provider, kind, &error, envelope.clone()),
        }
        match self.limit(plan).await {
            Ok(Ok(())) => {}
            Ok(Err(wait)) => {
                note(provider, kind, "rescheduled");
                return Outcome::later(Stage::Dispatch, wait, envelope.clone());
            }
            Err(error) => return outcome_of(provider, kind, error),
        }
        // Without the mark a crash after the POST could post again: no mark, no post.
        if let Err(error) = inner.ledger.mark_attempt(slot, now_ms() / 1000).await {
            return ledger_unavailable(provider, kind, &error, envelope.clone());
        }
        match plan.post(&inner.store).await {
            Ok(posted) => {
                if inner.ledger.record(slot, &posted, now_ms()).await.is_err() {
                    // Posted but unrecorded: the attempt mark stays, so a
                    // redelivery finds the reply on the platform instead.
                    metric::redis_degraded("reply_ledger");
                }
                if plan.skipped(&posted) {
                    tracing::info!(provider, kind = kind.as_str(), external_id = %posted.external_id, "reply skipped");
                    note(provider, kind, "skipped");
                } else {
                    tracing::info!(provider, kind = kind.as_str(), external_id = %posted.external_id, "reply posted");
                    note(provider, kind, "posted");
                    if matches!(kind, ReplyKind::Final | ReplyKind::Failure) {
                        end_to_end(envelope);
                    }
                }
                Outcome::Done
            }
            Err(error) => {
                if !error.maybe_applied() && inner.ledger.clear_attempt(slot).await.is_err() {
                    metric::redis_degraded("reply_ledger");
                }
                outcome_of(provider, kind, error)
            }
        }
    }

    /// Passes the fleet-wide limiters of the reply's channel, waiting at most
    /// `limits.max_wait`; otherwise returns how long until a permit frees up.
    async fn limit(&self, plan: &dyn PlannedReply) -> Result<Result<(), Duration>, ProviderError> {
        let inner = &self.inner;
        for limiter in plan.limiters(&inner.store).await? {
            if let Err(wait) = limiter.acquire(inner.limits.max_wait).await {
                return Ok(Err(wait));
            }
        }
        Ok(Ok(()))
    }

    /// Waits (bounded) while an acknowledgement or progress message of the task
    /// is being posted, so the final answer lands after it.
    async fn wait_for_preliminaries(&self, envelope: &TaskEnvelope) {
        let ledger = &self.inner.ledger;
        let task = envelope.task_id;
        let waited = tokio::time::timeout(PRELIMINARY_WAIT, async {
            loop {
                let ack = ledger
                    .in_flight(task, ReplyKind::Ack)
                    .await
                    .unwrap_or(false);
                let progress = ledger
                    .in_flight(task, ReplyKind::Progress)
                    .await
                    .unwrap_or(false);
                if !ack && !progress {
                    return;
                }
                tokio::time::sleep(PRELIMINARY_POLL).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("an acknowledgement is still being posted; posting the answer anyway");
        }
    }
}

impl Handler for DispatchHandler {
    fn handle(&self, envelope: TaskEnvelope) -> impl Future<Output = Outcome> + Send {
        self.dispatch(envelope)
    }
}

/// The one place provider errors become outcomes: limits wait for the
/// advertised delay, refusals (the platform's or the outbound guard's) are
/// dead-lettered with their code, outages retry.
pub fn outcome_of(provider: &'static str, kind: ReplyKind, error: ProviderError) -> Outcome {
    match error {
        ProviderError::RateLimited {
            retry_after,
            detail,
            ..
        } => {
            note(provider, kind, "rate_limited");
            Outcome::retry(
                retry_after,
                Reason::RateLimited,
                format!("{provider}: {detail}"),
            )
        }
        ProviderError::Rejected { code, detail, .. } => {
            tracing::warn!(provider, kind = kind.as_str(), reason = %code, %detail, "reply refused; dead-lettering");
            note(provider, kind, "rejected");
            Outcome::dead(
                Reason::from_code(&code),
                format!("{provider} refused the {} reply: {detail}", kind.as_str()),
            )
        }
        ProviderError::Unavailable { detail, .. } => {
            note(provider, kind, "unavailable");
            Outcome::retry(
                Duration::ZERO,
                Reason::ProviderUnavailable,
                format!("{provider}: {detail}"),
            )
        }
        ProviderError::OutboundRefused { refusal, .. } => {
            // The refusal names the host and the rule, never the URL's path or
            // query (where a receiver may have put a token).
            tracing::warn!(provider, kind = kind.as_str(), host = refusal.host.as_deref().unwrap_or(""), %refusal, "reply destination refused by the outbound guard; dead-lettering");
            note(provider, kind, "outbound_refused");
            Outcome::dead(
                Reason::from_code(refusal.reason()),
                format!("the {} reply was not sent: {refusal}", kind.as_str()),
            )
        }
        ProviderError::Misconfigured { detail, .. } => {
            note(provider, kind, "rejected");
            Outcome::dead(
                Reason::ProviderMisconfigured,
                format!("{provider}: {detail}"),
            )
        }
    }
}

/// The reply ledger could not be used: the reply waits for Redis rather than
/// risk a second post (docs/design.md §5), loudly.
fn ledger_unavailable(
    provider: &'static str,
    kind: ReplyKind,
    error: &contexten_broker::BrokerError,
    envelope: TaskEnvelope,
) -> Outcome {
    tracing::warn!(provider, kind = kind.as_str(), %error, "reply ledger unavailable; the reply waits for Redis");
    metric::redis_degraded("reply_ledger");
    note(provider, kind, "ledger_unavailable");
    Outcome::later(Stage::Dispatch, LEDGER_DELAY, envelope)
}

/// Records the task's end-to-end latency: request received at ingest
/// (`created_at_ms`) to its final or failure answer posted.
fn end_to_end(envelope: &TaskEnvelope) {
    let elapsed = Duration::from_millis(now_ms().saturating_sub(envelope.created_at_ms));
    metric::end_to_end(
        envelope.source.kind.as_str(),
        envelope.strategy.as_str(),
        elapsed,
    );
}

/// Counts a handled reply.
fn note(provider: &'static str, kind: ReplyKind, outcome: &'static str) {
    tracing::debug!(provider, kind = kind.as_str(), outcome, "reply handled");
    metric::reply_dispatched(provider, kind.as_str(), outcome);
}

/// A short digest of a progress message's content: the same progress posts
/// once, a new one (another link, another summary) posts again.
fn progress_digest(envelope: &TaskEnvelope) -> String {
    let mut hasher = Sha256::new();
    if let Some(result) = &envelope.result {
        hasher.update(result.summary.as_bytes());
        hasher.update([0]);
        hasher.update(result.web_url.as_deref().unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(result.text.as_deref().unwrap_or("").as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
