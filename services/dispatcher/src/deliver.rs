//! What to send where: a [`Plan`] per reply (reaction, comment, message or
//! callback), the limiter it must pass, how to post it, and how to find it on
//! the platform after an uncertain attempt.
//!
//! Slack specifics:
//! - A slash command has no message to react to: ingest answers its HTTP
//!   request with an empty 200, and its acknowledgement is an ephemeral "On
//!   it" through its `response_url` ([`CommandAck`]), whatever
//!   `SLACK_COMMAND_REPLY` says. It takes one of the URL's uses, never the
//!   last; when the URL cannot be used (expired, no use left, not on Slack's
//!   host) the acknowledgement is skipped (counted `skipped`). No reaction is
//!   ever tried without a message ts. An ephemeral message cannot be looked
//!   up, so an acknowledgement that may have been shown is not sent again.
//! - A slash command's answers go where `SLACK_COMMAND_REPLY` says: `channel`
//!   (chat.postMessage, falling back to the `response_url` when the bot is not
//!   in the channel) or `response_url` (falling back to the channel when the
//!   URL expired or is used up). The `response_url` is used within its 30
//!   minutes and at most 5 times per command, one always kept for the answer.
//! - An answer too long for a message is a summary message plus the full
//!   answer as a file in the thread (the summary's own thread for a slash
//!   command). The summary's ts is recorded in Redis before the upload, so a
//!   retry uploads without posting the summary again; after an uncertain
//!   attempt the thread is searched for the summary (metadata) and the file
//!   (its per-task name).

mod slack;

pub use slack::{CommandAck, SlackPlan};

use crate::config::{Limits, SlackCommandReply};
use crate::format::{self, markdown};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_providers::callback::CallbackClient;
use contexten_providers::github::GithubClient;
use contexten_providers::linear::LinearClient;
use contexten_providers::slack::SlackClient;
use contexten_resilience::RateLimiter;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The reaction that acknowledges a request on GitHub (`eyes`) and Slack.
pub const ACK_REACTION: &str = "eyes";
/// Slack metadata event type of our replies.
pub const SLACK_EVENT_TYPE: &str = "contexten_reply";
/// A GitHub marker search starts this long before the recorded attempt (clock
/// skew between us and GitHub).
const SEARCH_SLACK_SECS: u64 = 120;
/// One reply, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Acknowledge a GitHub request comment with a reaction (idempotent).
    GithubReaction { repo: String, comment_id: u64 },
    /// A comment in the issue or pull request thread, carrying its marker.
    GithubComment {
        repo: String,
        number: u64,
        body: String,
        marker: String,
    },
    /// A Linear comment with a client-chosen id, under the request comment.
    LinearComment {
        issue_id: String,
        parent_id: Option<String>,
        body: String,
        id: String,
    },
    /// Acknowledge a Slack thread with a reaction on its parent (idempotent).
    SlackReaction { channel: String, ts: String },
    /// A Slack message in the thread (or the channel), found again by its
    /// metadata key; see [`SlackPlan`].
    SlackMessage(Box<SlackPlan>),
    /// Acknowledge a slash command: an ephemeral message through its
    /// `response_url`.
    SlackCommandAck(CommandAck),
    /// A signed callback; the receiver deduplicates on the delivery id.
    Callback {
        url: String,
        id: String,
        body: Vec<u8>,
    },
}

impl Plan {
    /// The plan of `kind` for this envelope, or `None` when nobody is to be
    /// answered.
    pub fn new(
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Option<Self> {
        Some(match &envelope.source.reply_to {
            // Until the reply-channel registry: an extension target has no plan.
            ReplyTarget::None | ReplyTarget::Channel(_) => return None,
            ReplyTarget::Github {
                repo,
                comment_id: Some(comment_id),
                ..
            } if kind == ReplyKind::Ack => Plan::GithubReaction {
                repo: repo.clone(),
                comment_id: *comment_id,
            },
            ReplyTarget::Github { repo, number, .. } => Plan::GithubComment {
                repo: repo.clone(),
                number: *number,
                body: markdown::render(envelope, kind, markdown::Flavor::Github, now_ms),
                marker: format::marker(envelope, kind),
            },
            ReplyTarget::Linear {
                issue_id,
                comment_id,
            } => Plan::LinearComment {
                issue_id: issue_id.clone(),
                parent_id: comment_id.clone(),
                body: markdown::render(envelope, kind, markdown::Flavor::Linear, now_ms),
                id: linear_comment_id(slot),
            },
            // A slash command: no message to react to; acknowledged through
            // its response_url, or not at all without one.
            ReplyTarget::Slack { thread_ts, .. }
                if kind == ReplyKind::Ack && thread_ts.is_empty() =>
            {
                return slack::ack_plan(envelope, slot);
            }
            ReplyTarget::Slack { channel, thread_ts } if kind == ReplyKind::Ack => {
                Plan::SlackReaction {
                    channel: channel.clone(),
                    ts: thread_ts.clone(),
                }
            }
            ReplyTarget::Slack { channel, thread_ts } => {
                slack::plan(envelope, kind, slot, now_ms, channel, thread_ts)
            }
            ReplyTarget::Callback { url } => Plan::Callback {
                url: url.clone(),
                id: format!("msg_{}", slot.id().replace(':', "_")),
                body: format::callback_body(envelope, kind, now_ms),
            },
        })
    }

    /// The platform's label (logs, metrics, records).
    pub fn provider(&self) -> &'static str {
        match self {
            Plan::GithubReaction { .. } | Plan::GithubComment { .. } => "github",
            Plan::LinearComment { .. } => "linear",
            Plan::SlackReaction { .. }
            | Plan::SlackMessage { .. }
            | Plan::SlackCommandAck { .. } => "slack",
            Plan::Callback { .. } => "callback",
        }
    }
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

/// The clients of the configured platforms.
#[derive(Debug, Default)]
pub struct Clients {
    pub github: Option<GithubClient>,
    pub linear: Option<LinearClient>,
    pub slack: Option<SlackClient>,
    pub callback: Option<CallbackClient>,
    /// Where a slash command's answers go (`SLACK_COMMAND_REPLY`).
    pub slack_command_reply: SlackCommandReply,
}

impl Clients {
    /// Whether the platform of `plan` has credentials.
    pub fn configured(&self, plan: &Plan) -> bool {
        match plan.provider() {
            "github" => self.github.is_some(),
            "linear" => self.linear.is_some(),
            "slack" => self.slack.is_some(),
            _ => self.callback.is_some(),
        }
    }

    /// Passes the fleet-wide limiters of `plan`'s platform, waiting at most
    /// `limits.max_wait`; otherwise returns how long until a permit frees up.
    pub async fn limit(
        &self,
        store: &Store,
        limits: &Limits,
        plan: &Plan,
    ) -> Result<Result<(), Duration>, ProviderError> {
        let limiters = match plan {
            Plan::GithubReaction { repo, .. } | Plan::GithubComment { repo, .. } => {
                let scope = match &self.github {
                    Some(github) => github.credential_scope(repo).await?,
                    None => return Ok(Ok(())),
                };
                vec![
                    RateLimiter::new(
                        store.clone(),
                        &format!("github:{scope}:minute"),
                        limits.github_per_minute,
                        Duration::from_secs(60),
                    ),
                    RateLimiter::new(
                        store.clone(),
                        &format!("github:{scope}:hour"),
                        limits.github_per_hour,
                        Duration::from_secs(3600),
                    ),
                ]
            }
            Plan::LinearComment { .. } => vec![RateLimiter::new(
                store.clone(),
                "linear:hour",
                limits.linear_per_hour,
                Duration::from_secs(3600),
            )],
            Plan::SlackReaction { channel, .. } => {
                vec![slack_limiter(store, limits, channel)]
            }
            Plan::SlackMessage(slack) => vec![slack_limiter(store, limits, &slack.message.channel)],
            // A response_url is not chat.postMessage: the channel's message
            // limit does not apply to it (the URL's own uses are counted).
            Plan::SlackCommandAck(_) | Plan::Callback { .. } => Vec::new(),
        };
        for limiter in limiters {
            if let Err(wait) = limiter.acquire(limits.max_wait).await {
                return Ok(Err(wait));
            }
        }
        Ok(Ok(()))
    }

    /// Looks for a reply an earlier, uncertain attempt may have posted.
    pub async fn reconcile(
        &self,
        store: &Store,
        plan: &Plan,
        since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        match (plan, &self.github, &self.linear, &self.slack) {
            (
                Plan::GithubComment {
                    repo,
                    number,
                    marker,
                    ..
                },
                Some(github),
                _,
                _,
            ) => Ok(github
                .find_comment(
                    repo,
                    *number,
                    marker,
                    since_secs.saturating_sub(SEARCH_SLACK_SECS),
                )
                .await?
                .map(|c| Posted {
                    provider: "github",
                    external_id: c.id.to_string(),
                    url: Some(c.html_url).filter(|u| !u.is_empty()),
                })),
            (Plan::LinearComment { id, .. }, _, Some(linear), _) => {
                Ok(linear.comment(id).await?.map(|c| Posted {
                    provider: "linear",
                    external_id: c.id,
                    url: c.url,
                }))
            }
            (Plan::SlackMessage(plan), _, _, Some(slack)) => {
                slack::reconcile(slack, store, plan, since_secs).await
            }
            // An ephemeral message cannot be found again, and sending it twice
            // could spend the response_url use Slack counts for the answer:
            // an acknowledgement that may have been shown counts as sent.
            (Plan::SlackCommandAck(ack), _, _, _) => Ok(Some(Posted {
                provider: "slack",
                external_id: format!("response_url/{} (uncertain)", ack.key),
                url: None,
            })),
            // Reactions are idempotent and callbacks are deduplicated by their
            // receiver on `webhook-id`: sending again is safe.
            _ => Ok(None),
        }
    }

    /// Sends the reply.
    pub async fn post(&self, store: &Store, plan: &Plan) -> Result<Posted, ProviderError> {
        let not_configured = || ProviderError::Misconfigured {
            provider: plan.provider(),
            detail: "no credentials".into(),
        };
        match plan {
            Plan::GithubReaction { repo, comment_id } => {
                let github = self.github.as_ref().ok_or_else(not_configured)?;
                let id = github.add_reaction(repo, *comment_id, ACK_REACTION).await?;
                Ok(Posted {
                    provider: "github",
                    external_id: format!("reaction/{id}"),
                    url: None,
                })
            }
            Plan::GithubComment {
                repo, number, body, ..
            } => {
                let github = self.github.as_ref().ok_or_else(not_configured)?;
                let comment = github.create_comment(repo, *number, body).await?;
                Ok(Posted {
                    provider: "github",
                    external_id: comment.id.to_string(),
                    url: Some(comment.html_url).filter(|u| !u.is_empty()),
                })
            }
            Plan::LinearComment {
                issue_id,
                parent_id,
                body,
                id,
            } => {
                let linear = self.linear.as_ref().ok_or_else(not_configured)?;
                match linear
                    .create_comment(issue_id, body, parent_id.as_deref(), Some(id))
                    .await
                {
                    Ok(comment) => Ok(Posted {
                        provider: "linear",
                        external_id: comment.id,
                        url: comment.url,
                    }),
                    // A refused create may be our own earlier comment holding the
                    // id: if it exists, that was this reply.
                    Err(error @ ProviderError::Rejected { .. }) => match linear.comment(id).await {
                        Ok(Some(comment)) => Ok(Posted {
                            provider: "linear",
                            external_id: comment.id,
                            url: comment.url,
                        }),
                        _ => Err(error),
                    },
                    Err(other) => Err(other),
                }
            }
            Plan::SlackReaction { channel, ts } => {
                let slack = self.slack.as_ref().ok_or_else(not_configured)?;
                slack.add_reaction(channel, ts, ACK_REACTION).await?;
                Ok(Posted {
                    provider: "slack",
                    external_id: format!("reaction/{channel}/{ts}"),
                    url: None,
                })
            }
            Plan::SlackMessage(plan) => {
                let slack = self.slack.as_ref().ok_or_else(not_configured)?;
                slack::post(slack, store, plan, self.slack_command_reply).await
            }
            Plan::SlackCommandAck(ack) => {
                let slack = self.slack.as_ref().ok_or_else(not_configured)?;
                slack::acknowledge(slack, store, ack).await
            }
            Plan::Callback { url, id, body } => {
                let callback = self.callback.as_ref().ok_or_else(not_configured)?;
                let status = callback.deliver(url, id, body.clone()).await?;
                Ok(Posted {
                    provider: "callback",
                    external_id: format!("{id} ({status})"),
                    url: None,
                })
            }
        }
    }
}

/// Whether `posted` records a reply deliberately not sent (a slash command's
/// `response_url` that cannot be used for it).
pub fn skipped(posted: &Posted) -> bool {
    posted.external_id.starts_with(slack::SKIPPED)
}

fn slack_limiter(store: &Store, limits: &Limits, channel: &str) -> RateLimiter {
    RateLimiter::new(
        store.clone(),
        &format!("slack:{channel}"),
        limits.slack_per_channel_per_second,
        Duration::from_secs(1),
    )
}
