//! Linear (docs/platforms.md §3.2): every reply is a comment with a
//! client-chosen id derived from the reply slot, threaded under the request
//! comment, so an uncertain create is checked with `comment(id)`.

use super::{ChannelLimits, InvalidTarget, ReplyChannel, foreign_target};
use crate::config::ProviderSettings;
use crate::format::{LINEAR_LIMIT, markdown};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_providers::linear::LinearClient;
use contexten_resilience::RateLimiter;
use sha2::{Digest, Sha256};
use std::time::Duration;

const NAME: &str = "linear";

/// A Linear comment with a client-chosen id, under the request comment.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPlan {
    pub issue_id: String,
    pub parent_id: Option<String>,
    pub body: String,
    pub id: String,
}

/// A UUID (v4 layout, as Linear requires) derived from the slot, so every
/// attempt at one reply creates the same Linear comment id.
pub fn linear_comment_id(slot: &ReplySlot) -> String {
    let digest = Sha256::digest(format!("contexten-reply:{}", slot.id()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The Linear channel: its client (`None` = not configured) and the fleet's
/// request budget (`LINEAR_REQUESTS_PER_HOUR`).
pub struct LinearChannel {
    client: Option<LinearClient>,
    per_hour: u32,
}

impl LinearChannel {
    pub fn new(settings: &ProviderSettings) -> Self {
        LinearChannel {
            client: settings
                .linear
                .clone()
                .map(|auth| LinearClient::new(&settings.linear_url, auth, settings.http)),
            per_hour: settings.limits.linear_per_hour,
        }
    }
}

fn posted(comment: contexten_providers::linear::Comment) -> Posted {
    Posted {
        provider: NAME,
        external_id: comment.id,
        url: comment.url,
    }
}

impl ReplyChannel for LinearChannel {
    type Plan = LinearPlan;
    type Body = String;

    fn name(&self) -> &'static str {
        NAME
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: Some(LINEAR_LIMIT),
        }
    }

    fn configured(&self) -> bool {
        self.client.is_some()
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> String {
        markdown::render(envelope, kind, markdown::Flavor::Linear, now_ms)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<LinearPlan>, InvalidTarget> {
        match &envelope.source.reply_to {
            ReplyTarget::Linear {
                issue_id,
                comment_id,
            } => Ok(Some(LinearPlan {
                issue_id: issue_id.clone(),
                parent_id: comment_id.clone(),
                body: self.format(envelope, kind, now_ms),
                id: linear_comment_id(slot),
            })),
            other => Err(foreign_target(NAME, other)),
        }
    }

    async fn limiters(
        &self,
        store: &Store,
        _plan: &LinearPlan,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        Ok(vec![RateLimiter::new(
            store.clone(),
            "linear:hour",
            self.per_hour,
            Duration::from_secs(3600),
        )])
    }

    async fn reconcile(
        &self,
        _store: &Store,
        plan: &LinearPlan,
        _since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        let Some(linear) = &self.client else {
            return Ok(None);
        };
        Ok(linear.comment(&plan.id).await?.map(posted))
    }

    async fn post(&self, _store: &Store, plan: &LinearPlan) -> Result<Posted, ProviderError> {
        let linear = self.client.as_ref().ok_or(ProviderError::Misconfigured {
            provider: NAME,
            detail: "no credentials".into(),
        })?;
        match linear
            .create_comment(
                &plan.issue_id,
                &plan.body,
                plan.parent_id.as_deref(),
                Some(&plan.id),
            )
            .await
        {
            Ok(comment) => Ok(posted(comment)),
            // A refused create may be our own earlier comment holding the id:
            // if it exists, that was this reply.
            Err(error @ ProviderError::Rejected { .. }) => match linear.comment(&plan.id).await {
                Ok(Some(comment)) => Ok(posted(comment)),
                _ => Err(error),
            },
            Err(other) => Err(other),
        }
    }
}
