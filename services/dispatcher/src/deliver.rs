//! What to send where: a [`Plan`] per reply (reaction, comment, message or
//! callback), the limiter it must pass, how to post it, and how to find it on
//! the platform after an uncertain attempt.
//!
//! Slack specifics:
//! - A slash command has no message to react to: ingest's HTTP answer (an
//!   ephemeral "On it") is its acknowledgement, so its ack plan is nothing,
//!   and no reaction is ever tried without a message ts.
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

use crate::config::{Limits, SlackCommandReply};
use crate::format::slack::{AnswerFile, SlackReply};
use crate::format::{self, markdown, slack};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::Store;
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope, TaskId};
use contexten_providers::ProviderError;
use contexten_providers::callback::CallbackClient;
use contexten_providers::github::GithubClient;
use contexten_providers::linear::LinearClient;
use contexten_providers::slack::{FileUpload, PostMessage, SlackClient};
use contexten_resilience::RateLimiter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The reaction that acknowledges a request on GitHub (`eyes`) and Slack.
pub const ACK_REACTION: &str = "eyes";
/// Slack metadata event type of our replies.
pub const SLACK_EVENT_TYPE: &str = "contexten_reply";
/// A GitHub marker search starts this long before the recorded attempt (clock
/// skew between us and GitHub).
const SEARCH_SLACK_SECS: u64 = 120;
/// A slash command's `response_url` works for 30 minutes; stop using it a
/// minute early (the task's creation is ingest's receipt, not Slack's).
const RESPONSE_URL_VALID_MS: u64 = 29 * 60 * 1000;
/// Uses of one `response_url` Slack allows.
const RESPONSE_URL_USES: u32 = 5;
/// How long the per-command use count and a long answer's summary record live.
const SLACK_STEP_TTL_SECS: u64 = 7 * 24 * 3600;
/// Slack errors meaning the bot cannot post in the channel.
const NOT_IN_CHANNEL: &[&str] = &["not_in_channel", "channel_not_found"];
/// `response_url` errors meaning it cannot be used (expired, used up, or not
/// on Slack's host): the channel is tried instead.
const RESPONSE_URL_GONE: &[&str] = &[
    "expired_url",
    "used_url",
    "response_url_used_up",
    "untrusted_slack_url",
];

/// Reserves one use of a command's `response_url` for a reply slot: a slot
/// that already holds one keeps it (a retry), otherwise while fewer than
/// ARGV[2] are taken. Returns 1 when the slot may use it.
const RESERVE_USE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], '1')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

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
    /// A signed callback; the receiver deduplicates on the delivery id.
    Callback {
        url: String,
        id: String,
        body: Vec<u8>,
    },
}

/// A Slack reply: what goes to `chat.postMessage`, and what else it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackPlan {
    /// The reply, or for an answer too long for a message its summary.
    pub message: PostMessage,
    /// The metadata key the message is found by (the slot id).
    pub key: String,
    /// The full answer, shared as a file in the thread after the summary.
    pub file: Option<AnswerFile>,
    /// The reply in one message, cut to fit: for a `response_url`, and when
    /// the workspace refuses the file.
    pub whole: SlackReply,
    /// A slash command's reply: how to use its `response_url`.
    pub command: Option<CommandReply>,
}

/// A slash command's `response_url` and the slot that would use it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReply {
    pub response_url: String,
    pub task: TaskId,
    pub kind: ReplyKind,
    /// Past this (Unix ms) the URL is not used.
    pub expires_at_ms: u64,
}

impl CommandReply {
    fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
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
            ReplyTarget::None => return None,
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
            // A slash command: ingest's ephemeral HTTP answer acknowledged it,
            // and there is no message to react to.
            ReplyTarget::Slack { thread_ts, .. }
                if kind == ReplyKind::Ack && thread_ts.is_empty() =>
            {
                return None;
            }
            ReplyTarget::Slack { channel, thread_ts } if kind == ReplyKind::Ack => {
                Plan::SlackReaction {
                    channel: channel.clone(),
                    ts: thread_ts.clone(),
                }
            }
            ReplyTarget::Slack { channel, thread_ts } => {
                slack_plan(envelope, kind, slot, now_ms, channel, thread_ts)
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
            Plan::SlackReaction { .. } | Plan::SlackMessage { .. } => "slack",
            Plan::Callback { .. } => "callback",
        }
    }
}

/// The Slack message plan of a reply in `thread_ts` (empty: a slash command,
/// answered in the channel).
fn slack_plan(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    slot: &ReplySlot,
    now_ms: u64,
    channel: &str,
    thread_ts: &str,
) -> Plan {
    let answer = slack::render_answer(envelope, kind, now_ms);
    let key = slot.id();
    let (reply, file) = match answer.long.clone() {
        Some((summary, file)) => (summary, Some(file)),
        None => (answer.message.clone(), None),
    };
    let thread_ts = Some(thread_ts.to_owned()).filter(|ts| !ts.is_empty());
    let command = envelope
        .source
        .extra
        .get("slack_response_url")
        .and_then(Value::as_str)
        .filter(|_| thread_ts.is_none())
        .map(|url| CommandReply {
            response_url: url.to_owned(),
            task: envelope.task_id,
            kind,
            expires_at_ms: envelope.created_at_ms + RESPONSE_URL_VALID_MS,
        });
    Plan::SlackMessage(Box::new(SlackPlan {
        message: PostMessage {
            channel: channel.to_owned(),
            thread_ts,
            text: reply.text,
            blocks: Some(json!(reply.blocks)),
            metadata: Some(json!({
                "event_type": SLACK_EVENT_TYPE,
                "event_payload": {
                    "key": key,
                    "task_id": envelope.task_id,
                    "kind": kind.as_str(),
                },
            })),
        },
        key,
        file,
        whole: answer.message,
        command,
    }))
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
            Plan::Callback { .. } => Vec::new(),
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
                reconcile_slack(slack, store, plan, since_secs).await
            }
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
                self.post_slack(slack, store, plan).await
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

fn slack_limiter(store: &Store, limits: &Limits, channel: &str) -> RateLimiter {
    RateLimiter::new(
        store.clone(),
        &format!("slack:{channel}"),
        limits.slack_per_channel_per_second,
        Duration::from_secs(1),
    )
}

impl Clients {
    /// A Slack message: a slash command's by its configured route (with the
    /// other as fallback), any other in its thread.
    async fn post_slack(
        &self,
        slack: &SlackClient,
        store: &Store,
        plan: &SlackPlan,
    ) -> Result<Posted, ProviderError> {
        let Some(command) = &plan.command else {
            return post_in_channel(slack, store, plan).await;
        };
        let now = contexten_envelope::now_ms();
        if self.slack_command_reply == SlackCommandReply::ResponseUrl && command.usable(now) {
            match respond(slack, store, plan, command).await {
                Err(ProviderError::Rejected { code, .. })
                    if RESPONSE_URL_GONE.contains(&code.as_str()) =>
                {
                    tracing::info!(%code, "the response_url cannot be used; answering in the channel");
                }
                other => return other,
            }
        }
        match post_in_channel(slack, store, plan).await {
            Err(ProviderError::Rejected { code, .. })
                if NOT_IN_CHANNEL.contains(&code.as_str())
                    && self.slack_command_reply == SlackCommandReply::Channel
                    && command.usable(now) =>
            {
                tracing::info!(%code, "the bot cannot post in the channel; answering through the response_url");
                respond(slack, store, plan, command).await
            }
            other => other,
        }
    }
}

/// Posts the message, and for a long answer then shares the file in the
/// thread. The summary's ts is kept in Redis between the two steps, so a retry
/// after a failed upload does not post the summary again.
async fn post_in_channel(
    slack: &SlackClient,
    store: &Store,
    plan: &SlackPlan,
) -> Result<Posted, ProviderError> {
    let channel = &plan.message.channel;
    let Some(file) = &plan.file else {
        let posted = slack.post_message(&plan.message).await?;
        return Ok(Posted {
            provider: "slack",
            external_id: format!("{}/{}", posted.channel, posted.ts),
            url: None,
        });
    };
    let summary_ts = match summary_posted(store, &plan.key).await {
        Some(ts) => ts,
        None => {
            let posted = slack.post_message(&plan.message).await?;
            note_summary(store, &plan.key, &posted.ts).await;
            posted.ts
        }
    };
    let thread_ts = plan
        .message
        .thread_ts
        .clone()
        .unwrap_or_else(|| summary_ts.clone());
    let upload = FileUpload {
        channel: channel.clone(),
        thread_ts: Some(thread_ts.clone()),
        filename: file.filename.clone(),
        title: file.title.clone(),
        content: file.content.clone().into_bytes(),
    };
    match slack.upload_file(&upload).await {
        Ok(file_id) => Ok(Posted {
            provider: "slack",
            external_id: format!("{channel}/{summary_ts} file {file_id}"),
            url: None,
        }),
        // The workspace refuses the file (uploads disabled, too large, no
        // scope, an upload URL off Slack's hosts): the answer cut to one
        // message beats none.
        Err(ProviderError::Rejected { code, .. }) => {
            tracing::warn!(%code, "the answer's file was refused; posting it cut to one message");
            let whole = PostMessage {
                channel: channel.clone(),
                thread_ts: Some(thread_ts),
                text: plan.whole.text.clone(),
                blocks: Some(json!(plan.whole.blocks)),
                metadata: None,
            };
            let posted = slack.post_message(&whole).await?;
            Ok(Posted {
                provider: "slack",
                external_id: format!("{channel}/{summary_ts} cut {}", posted.ts),
                url: None,
            })
        }
        Err(other) => Err(other),
    }
}

/// Sends the reply through the command's `response_url`, in one message (no
/// file can follow a message without a ts), after reserving one of its uses.
/// A progress message leaves the last use to the answer and is skipped when
/// none is left for it.
async fn respond(
    slack: &SlackClient,
    store: &Store,
    plan: &SlackPlan,
    command: &CommandReply,
) -> Result<Posted, ProviderError> {
    let progress = command.kind == ReplyKind::Progress;
    let allowed = if progress {
        RESPONSE_URL_USES - 1
    } else {
        RESPONSE_URL_USES
    };
    let reserved = reserve_use(store, command, &plan.key, allowed)
        .await
        .map_err(|error| ProviderError::Unavailable {
            provider: "slack",
            detail: format!("cannot count the response_url's uses: {error}"),
            maybe_applied: false,
        })?;
    if !reserved {
        if progress {
            tracing::info!("no response_url use left for progress; skipped");
            return Ok(Posted {
                provider: "slack",
                external_id: "response_url/skipped".into(),
                url: None,
            });
        }
        return Err(ProviderError::Rejected {
            provider: "slack",
            code: "response_url_used_up".into(),
            detail: "the command's response_url has no use left".into(),
        });
    }
    slack
        .respond(
            &command.response_url,
            &plan.whole.text,
            Some(&json!(plan.whole.blocks)),
        )
        .await?;
    Ok(Posted {
        provider: "slack",
        external_id: format!("response_url/{}", plan.key),
        url: None,
    })
}

/// After an uncertain attempt: the message found by its metadata counts as
/// posted, unless it is a long answer's summary whose file is not in the
/// thread yet; then the summary is noted so the next post only uploads.
async fn reconcile_slack(
    slack: &SlackClient,
    store: &Store,
    plan: &SlackPlan,
    since_secs: u64,
) -> Result<Option<Posted>, ProviderError> {
    let message = &plan.message;
    let oldest = since_secs.saturating_sub(SEARCH_SLACK_SECS);
    let found = slack
        .find_by_metadata(
            &message.channel,
            message.thread_ts.as_deref(),
            oldest,
            SLACK_EVENT_TYPE,
            &plan.key,
        )
        .await;
    let ts = match found {
        Ok(Some(ts)) => ts,
        Ok(None) => return Ok(None),
        // Without `channels:history` the conversation cannot be read: post
        // again rather than never (a duplicate beats silence).
        Err(ProviderError::Rejected { code, .. }) => {
            tracing::warn!(%code, "cannot read the Slack conversation to reconcile; posting again");
            return Ok(None);
        }
        Err(other) => return Err(other),
    };
    let posted = Posted {
        provider: "slack",
        external_id: format!("{}/{ts}", message.channel),
        url: None,
    };
    let Some(file) = &plan.file else {
        return Ok(Some(posted));
    };
    let thread = message.thread_ts.clone().unwrap_or_else(|| ts.clone());
    match slack
        .thread_has_file(&message.channel, &thread, &file.filename)
        .await
    {
        Ok(true) => Ok(Some(posted)),
        Ok(false) | Err(ProviderError::Rejected { .. }) => {
            note_summary(store, &plan.key, &ts).await;
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

fn summary_key(store: &Store, key: &str) -> String {
    store.names().redis_key(&["dispatch", "slack_summary", key])
}

/// The ts of a long answer's summary already posted for this slot.
async fn summary_posted(store: &Store, key: &str) -> Option<String> {
    let redis_key = summary_key(store, key);
    match store
        .run::<(Option<String>,)>(|| {
            let mut p = redis::pipe();
            p.get(&redis_key);
            p
        })
        .await
    {
        Ok((ts,)) => ts,
        Err(error) => {
            // Unknown: posting the summary again is the lesser harm.
            tracing::warn!(%error, "cannot read the summary record");
            contexten_telemetry::metric::redis_degraded("reply_ledger");
            None
        }
    }
}

/// Records a long answer's summary ts, so the upload can be retried alone.
async fn note_summary(store: &Store, key: &str, ts: &str) {
    let redis_key = summary_key(store, key);
    let written = store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.set_ex(&redis_key, ts, SLACK_STEP_TTL_SECS).ignore();
            p
        })
        .await;
    if let Err(error) = written {
        tracing::warn!(%error, "cannot record the summary; a retry may post it again");
        contexten_telemetry::metric::redis_degraded("reply_ledger");
    }
}

/// Takes one of the command's `response_url` uses for this slot, if fewer
/// than `allowed` are taken (a slot that has one keeps it).
async fn reserve_use(
    store: &Store,
    command: &CommandReply,
    slot_key: &str,
    allowed: u32,
) -> Result<bool, contexten_broker::BrokerError> {
    let key = store
        .names()
        .redis_key(&["dispatch", "response_url", &command.task.to_string()]);
    let (taken,): (i64,) = store
        .run(|| {
            let mut p = redis::pipe();
            p.cmd("EVAL")
                .arg(RESERVE_USE)
                .arg(1)
                .arg(&key)
                .arg(slot_key)
                .arg(allowed)
                .arg(SLACK_STEP_TTL_SECS);
            p
        })
        .await?;
    Ok(taken == 1)
}
