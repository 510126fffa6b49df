//! Signed callbacks (docs/platforms.md §7): the reply is a JSON POST signed in
//! the Standard Webhooks style to the requester's URL, which passes the
//! outbound guard. The receiver deduplicates on the delivery id, so sending
//! again is safe and there is nothing to reconcile.

use super::{ChannelLimits, InvalidTarget, ReplyChannel, foreign_target};
use crate::config::ProviderSettings;
use crate::format;
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_providers::callback::CallbackClient;
use contexten_resilience::RateLimiter;

const NAME: &str = "callback";

/// A signed callback; `id` is the delivery id the receiver deduplicates on.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackPlan {
    pub url: String,
    pub id: String,
    pub body: Vec<u8>,
}

/// The callback channel: its signing client (`None` = not configured).
pub struct CallbackChannel {
    client: Option<CallbackClient>,
}

impl CallbackChannel {
    /// Fails only when the client cannot be built.
    pub fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        Ok(CallbackChannel {
            client: settings
                .callback
                .clone()
                .map(|signer| CallbackClient::new(signer, settings.http, settings.outbound.clone()))
                .transpose()?,
        })
    }
}

impl ReplyChannel for CallbackChannel {
    type Plan = CallbackPlan;
    type Body = Vec<u8>;

    fn name(&self) -> &'static str {
        NAME
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: None,
        }
    }

    fn configured(&self) -> bool {
        self.client.is_some()
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> Vec<u8> {
        format::callback_body(envelope, kind, now_ms)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<CallbackPlan>, InvalidTarget> {
        match &envelope.source.reply_to {
            ReplyTarget::Callback { url } => Ok(Some(CallbackPlan {
                url: url.clone(),
                id: format!("msg_{}", slot.id().replace(':', "_")),
                body: self.format(envelope, kind, now_ms),
            })),
            other => Err(foreign_target(NAME, other)),
        }
    }

    async fn limiters(
        &self,
        _store: &Store,
        _plan: &CallbackPlan,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        Ok(Vec::new())
    }

    async fn reconcile(
        &self,
        _store: &Store,
        _plan: &CallbackPlan,
        _since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        // Deduplicated by the receiver on `webhook-id`: sending again is safe.
        Ok(None)
    }

    async fn post(&self, _store: &Store, plan: &CallbackPlan) -> Result<Posted, ProviderError> {
        let callback = self.client.as_ref().ok_or(ProviderError::Misconfigured {
            provider: NAME,
            detail: "no credentials".into(),
        })?;
        let status = callback
            .deliver(&plan.url, &plan.id, plan.body.clone())
            .await?;
        Ok(Posted {
            provider: NAME,
            external_id: format!("{} ({status})", plan.id),
            url: None,
        })
    }
}
