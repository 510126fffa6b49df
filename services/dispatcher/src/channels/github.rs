//! GitHub (docs/platforms.md §2.2): an acknowledgement is an 👀 reaction on
//! the request comment (an "On it" comment when the request was not one);
//! progress and answers are new comments in the issue or pull request thread,
//! each carrying a hidden marker so an uncertain post is found again.

use super::{ChannelLimits, InvalidTarget, ReplyChannel, SEARCH_SLACK_SECS, foreign_target};
use crate::config::ProviderSettings;
use crate::format::{self, GITHUB_LIMIT, markdown};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_providers::github::GithubClient;
use contexten_resilience::RateLimiter;
use std::time::Duration;

/// The reaction that acknowledges a request on GitHub (`eyes`) and Slack.
pub const ACK_REACTION: &str = "eyes";
const NAME: &str = "github";

/// A GitHub reply.
#[derive(Debug, Clone, PartialEq)]
pub enum GithubPlan {
    /// Acknowledge a request comment with a reaction (idempotent).
    Reaction { repo: String, comment_id: u64 },
    /// A comment in the issue or pull request thread, carrying its marker.
    Comment {
        repo: String,
        number: u64,
        body: String,
        marker: String,
    },
}

impl GithubPlan {
    fn repo(&self) -> &str {
        match self {
            GithubPlan::Reaction { repo, .. } | GithubPlan::Comment { repo, .. } => repo,
        }
    }
}

/// The GitHub channel: its client (`None` = not configured) and the write
/// limits per credential (`GITHUB_WRITES_PER_MINUTE`, `_PER_HOUR`).
pub struct GithubChannel {
    client: Option<GithubClient>,
    per_minute: u32,
    per_hour: u32,
}

impl GithubChannel {
    pub fn new(settings: &ProviderSettings) -> Self {
        GithubChannel {
            client: settings
                .github
                .clone()
                .map(|auth| GithubClient::new(&settings.github_url, auth, settings.http)),
            per_minute: settings.limits.github_per_minute,
            per_hour: settings.limits.github_per_hour,
        }
    }

    fn client(&self) -> Result<&GithubClient, ProviderError> {
        self.client.as_ref().ok_or(ProviderError::Misconfigured {
            provider: NAME,
            detail: "no credentials".into(),
        })
    }
}

impl ReplyChannel for GithubChannel {
    type Plan = GithubPlan;
    type Body = String;

    fn name(&self) -> &'static str {
        NAME
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: Some(GITHUB_LIMIT),
        }
    }

    fn configured(&self) -> bool {
        self.client.is_some()
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> String {
        markdown::render(envelope, kind, markdown::Flavor::Github, now_ms)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        _slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<GithubPlan>, InvalidTarget> {
        Ok(Some(match &envelope.source.reply_to {
            ReplyTarget::Github {
                repo,
                comment_id: Some(comment_id),
                ..
            } if kind == ReplyKind::Ack => GithubPlan::Reaction {
                repo: repo.clone(),
                comment_id: *comment_id,
            },
            ReplyTarget::Github { repo, number, .. } => GithubPlan::Comment {
                repo: repo.clone(),
                number: *number,
                body: self.format(envelope, kind, now_ms),
                marker: format::marker(envelope, kind),
            },
            other => return Err(foreign_target(NAME, other)),
        }))
    }

    async fn limiters(
        &self,
        store: &Store,
        plan: &GithubPlan,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        let Some(github) = &self.client else {
            return Ok(Vec::new());
        };
        // Per credential: an App installation or the token.
        let scope = github.credential_scope(plan.repo()).await?;
        Ok(vec![
            RateLimiter::new(
                store.clone(),
                &format!("github:{scope}:minute"),
                self.per_minute,
                Duration::from_secs(60),
            ),
            RateLimiter::new(
                store.clone(),
                &format!("github:{scope}:hour"),
                self.per_hour,
                Duration::from_secs(3600),
            ),
        ])
    }

    async fn reconcile(
        &self,
        _store: &Store,
        plan: &GithubPlan,
        since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        // Reactions are idempotent: sending again is safe.
        let (
            GithubPlan::Comment {
                repo,
                number,
                marker,
                ..
            },
            Some(github),
        ) = (plan, &self.client)
        else {
            return Ok(None);
        };
        Ok(github
            .find_comment(
                repo,
                *number,
                marker,
                since_secs.saturating_sub(SEARCH_SLACK_SECS),
            )
            .await?
            .map(|c| Posted {
                provider: NAME,
                external_id: c.id.to_string(),
                url: Some(c.html_url).filter(|u| !u.is_empty()),
            }))
    }

    async fn post(&self, _store: &Store, plan: &GithubPlan) -> Result<Posted, ProviderError> {
        let github = self.client()?;
        match plan {
            GithubPlan::Reaction { repo, comment_id } => {
                let id = github.add_reaction(repo, *comment_id, ACK_REACTION).await?;
                Ok(Posted {
                    provider: NAME,
                    external_id: format!("reaction/{id}"),
                    url: None,
                })
            }
            GithubPlan::Comment {
                repo, number, body, ..
            } => {
                let comment = github.create_comment(repo, *number, body).await?;
                Ok(Posted {
                    provider: NAME,
                    external_id: comment.id.to_string(),
                    url: Some(comment.html_url).filter(|u| !u.is_empty()),
                })
            }
        }
    }
}
