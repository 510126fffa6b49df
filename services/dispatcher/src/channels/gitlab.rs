//! GitLab (docs/platforms.md, GitLab): an acknowledgement is an 👀 award
//! emoji on the trigger note (on the issue or merge request itself when the
//! trigger was a label); progress and answers are notes, replies in the
//! trigger's discussion when it had one. The body is the GitHub-flavoured
//! markdown of the GitHub channel (GitLab renders GFM, and hides the HTML
//! comment that carries the marker), cut at GitLab's 1,000,000-character note
//! limit; after an uncertain post the newest notes are searched for the
//! marker. The target is `contexten_providers::gitlab::GitlabTarget`, written
//! by ingest's GitLab source.

use super::{ACK_REACTION, ChannelLimits, InvalidTarget, ReplyChannel, foreign_target};
use crate::config::ProviderSettings;
use crate::format::{self, markdown};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_providers::gitlab::{GitlabClient, GitlabTarget, KIND, NOTE_LIMIT};
use contexten_resilience::RateLimiter;
use std::time::Duration;

/// A GitLab reply.
#[derive(Debug, Clone, PartialEq)]
pub enum GitlabPlan {
    /// Acknowledge with an award emoji (an existing one counts as done).
    Award(GitlabTarget),
    /// A note (in the discussion when the target has one), with its marker.
    Note {
        target: GitlabTarget,
        body: String,
        marker: String,
    },
}

/// The GitLab channel: its client (`None` = not configured) and the fleet's
/// request budget (`GITLAB_REQUESTS_PER_MINUTE`).
pub struct GitlabChannel {
    client: Option<GitlabClient>,
    per_minute: u32,
}

impl GitlabChannel {
    pub fn new(settings: &ProviderSettings) -> Self {
        GitlabChannel {
            client: settings
                .gitlab
                .clone()
                .map(|token| GitlabClient::new(&settings.gitlab_url, token, settings.http)),
            per_minute: settings.limits.gitlab_per_minute,
        }
    }
}

impl ReplyChannel for GitlabChannel {
    type Plan = GitlabPlan;
    type Body = String;

    fn name(&self) -> &'static str {
        KIND
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: Some(NOTE_LIMIT),
        }
    }

    fn configured(&self) -> bool {
        self.client.is_some()
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> String {
        markdown::render_with_limit(envelope, kind, markdown::Flavor::Github, now_ms, NOTE_LIMIT)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        _slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<GitlabPlan>, InvalidTarget> {
        let reply_to = &envelope.source.reply_to;
        let target = GitlabTarget::from_reply_target(reply_to)
            .ok_or_else(|| foreign_target(KIND, reply_to))??;
        Ok(Some(match kind {
            ReplyKind::Ack => GitlabPlan::Award(target),
            _ => GitlabPlan::Note {
                target,
                body: self.format(envelope, kind, now_ms),
                marker: format::marker(envelope, kind),
            },
        }))
    }

    async fn limiters(
        &self,
        store: &Store,
        _plan: &GitlabPlan,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        Ok(vec![RateLimiter::new(
            store.clone(),
            "gitlab:minute",
            self.per_minute,
            Duration::from_secs(60),
        )])
    }

    async fn reconcile(
        &self,
        _store: &Store,
        plan: &GitlabPlan,
        _since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        // An award is idempotent: awarding again is safe.
        let (GitlabPlan::Note { target, marker, .. }, Some(gitlab)) = (plan, &self.client) else {
            return Ok(None);
        };
        Ok(gitlab.find_note(target, marker).await?.map(|note| Posted {
            provider: KIND,
            external_id: format!("note/{}", note.id),
            url: None,
        }))
    }

    async fn post(&self, _store: &Store, plan: &GitlabPlan) -> Result<Posted, ProviderError> {
        let gitlab = self.client.as_ref().ok_or(ProviderError::Misconfigured {
            provider: KIND,
            detail: "no credentials".into(),
        })?;
        let external_id = match plan {
            GitlabPlan::Award(target) => match gitlab.award_emoji(target, ACK_REACTION).await? {
                Some(id) => format!("award_emoji/{id}"),
                None => "award_emoji/existing".to_owned(),
            },
            GitlabPlan::Note { target, body, .. } => {
                format!("note/{}", gitlab.create_note(target, body).await?.id)
            }
        };
        Ok(Posted {
            provider: KIND,
            external_id,
            url: None,
        })
    }
}
