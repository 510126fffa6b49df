//! Slack (docs/platforms.md §4.2): an acknowledgement is an 👀 reaction on
//! the thread's parent; progress and answers are thread messages, found again
//! by their metadata key.
//!
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

use super::github::ACK_REACTION;
use super::{ChannelLimits, InvalidTarget, ReplyChannel, SEARCH_SLACK_SECS, foreign_target};
use crate::config::{ProviderSettings, SlackCommandReply};
use crate::format::SLACK_MESSAGE_LIMIT;
use crate::format::slack::{self as format, AnswerFile, SlackAnswer, SlackReply};
use crate::ledger::{Posted, ReplySlot};
use contexten_broker::{BrokerError, Store};
use contexten_envelope::{ReplyKind, ReplyTarget, TaskEnvelope, TaskId};
use contexten_providers::ProviderError;
use contexten_providers::slack::{FileUpload, PostMessage, ResponseType, SlackClient};
use contexten_resilience::RateLimiter;
use serde_json::{Value, json};
use std::time::Duration;

/// Slack metadata event type of our replies.
pub const SLACK_EVENT_TYPE: &str = "contexten_reply";
const NAME: &str = "slack";

/// A Slack reply.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackDelivery {
    /// Acknowledge a thread with a reaction on its parent (idempotent).
    Reaction { channel: String, ts: String },
    /// A message in the thread (or the channel), found again by its metadata
    /// key; see [`SlackPlan`].
    Message(Box<SlackPlan>),
    /// Acknowledge a slash command: an ephemeral message through its
    /// `response_url`.
    CommandAck(CommandAck),
}

/// The Slack channel: its client (`None` = not configured), where a slash
/// command's answers go (`SLACK_COMMAND_REPLY`) and the per-channel message
/// rate (`SLACK_CHANNEL_MESSAGES_PER_SECOND`).
pub struct SlackChannel {
    client: Option<SlackClient>,
    command_reply: SlackCommandReply,
    per_channel_per_second: u32,
}

impl SlackChannel {
    pub fn new(settings: &ProviderSettings) -> Self {
        SlackChannel {
            client: settings.slack.clone().map(|token| {
                SlackClient::with_token_source(&settings.slack_url, token, settings.http)
            }),
            command_reply: settings.slack_command_reply,
            per_channel_per_second: settings.limits.slack_per_channel_per_second,
        }
    }

    fn client(&self) -> Result<&SlackClient, ProviderError> {
        self.client.as_ref().ok_or(ProviderError::Misconfigured {
            provider: NAME,
            detail: "no credentials".into(),
        })
    }

    fn limiter(&self, store: &Store, channel: &str) -> RateLimiter {
        RateLimiter::new(
            store.clone(),
            &format!("slack:{channel}"),
            self.per_channel_per_second,
            Duration::from_secs(1),
        )
    }
}

impl ReplyChannel for SlackChannel {
    type Plan = SlackDelivery;
    type Body = SlackAnswer;

    fn name(&self) -> &'static str {
        NAME
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: Some(SLACK_MESSAGE_LIMIT),
        }
    }

    fn configured(&self) -> bool {
        self.client.is_some()
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> SlackAnswer {
        format::render_answer(envelope, kind, now_ms)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<SlackDelivery>, InvalidTarget> {
        let ReplyTarget::Slack { channel, thread_ts } = &envelope.source.reply_to else {
            return Err(foreign_target(NAME, &envelope.source.reply_to));
        };
        Ok(match kind {
            // A slash command: no message to react to; acknowledged through
            // its response_url, or not at all without one.
            ReplyKind::Ack if thread_ts.is_empty() => ack_plan(envelope, slot),
            ReplyKind::Ack => Some(SlackDelivery::Reaction {
                channel: channel.clone(),
                ts: thread_ts.clone(),
            }),
            _ => {
                let answer = self.format(envelope, kind, now_ms);
                Some(message_plan(
                    envelope, kind, slot, answer, channel, thread_ts,
                ))
            }
        })
    }

    async fn limiters(
        &self,
        store: &Store,
        plan: &SlackDelivery,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        Ok(match plan {
            SlackDelivery::Reaction { channel, .. } => vec![self.limiter(store, channel)],
            SlackDelivery::Message(slack) => vec![self.limiter(store, &slack.message.channel)],
            // A response_url is not chat.postMessage: the channel's message
            // limit does not apply to it (the URL's own uses are counted).
            SlackDelivery::CommandAck(_) => Vec::new(),
        })
    }

    async fn reconcile(
        &self,
        store: &Store,
        plan: &SlackDelivery,
        since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        match (plan, &self.client) {
            (SlackDelivery::Message(plan), Some(slack)) => {
                reconcile(slack, store, plan, since_secs).await
            }
            // An ephemeral message cannot be found again, and sending it twice
            // could spend the response_url use Slack counts for the answer:
            // an acknowledgement that may have been shown counts as sent.
            (SlackDelivery::CommandAck(ack), _) => Ok(Some(Posted {
                provider: NAME,
                external_id: format!("response_url/{} (uncertain)", ack.key),
                url: None,
            })),
            // Reactions are idempotent: sending again is safe.
            _ => Ok(None),
        }
    }

    async fn post(&self, store: &Store, plan: &SlackDelivery) -> Result<Posted, ProviderError> {
        let slack = self.client()?;
        match plan {
            SlackDelivery::Reaction { channel, ts } => {
                slack.add_reaction(channel, ts, ACK_REACTION).await?;
                Ok(Posted {
                    provider: NAME,
                    external_id: format!("reaction/{channel}/{ts}"),
                    url: None,
                })
            }
            SlackDelivery::Message(plan) => post(slack, store, plan, self.command_reply).await,
            SlackDelivery::CommandAck(ack) => acknowledge(slack, store, ack).await,
        }
    }

    /// A slash command's `response_url` that cannot be used for the reply.
    fn skipped(&self, posted: &Posted) -> bool {
        posted.external_id.starts_with(SKIPPED)
    }
}

/// A slash command's `response_url` works for 30 minutes; stop using it a
/// minute early (the task's creation is ingest's receipt, not Slack's).
const RESPONSE_URL_VALID_MS: u64 = 29 * 60 * 1000;
/// Uses of one `response_url` Slack allows.
const RESPONSE_URL_USES: u32 = 5;
/// The external id of a reply deliberately not sent (no `response_url` use
/// left for it, or the URL cannot be used); a reason may follow.
const SKIPPED: &str = "response_url/skipped";
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
    /// The `response_url` of a slash command's task (no thread ts), if any.
    fn of(envelope: &TaskEnvelope, kind: ReplyKind, thread_ts: Option<&str>) -> Option<Self> {
        envelope
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
            })
    }

    fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// How many of the URL's uses this reply may bring the count to: an
    /// acknowledgement or progress leaves the last one to the answer.
    fn allowed_uses(&self) -> u32 {
        match self.kind {
            ReplyKind::Final | ReplyKind::Failure => RESPONSE_URL_USES,
            ReplyKind::Ack | ReplyKind::Progress => RESPONSE_URL_USES - 1,
        }
    }
}

/// A slash command's acknowledgement: an ephemeral "On it" through its
/// `response_url` (there is no message to react to).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandAck {
    pub command: CommandReply,
    /// The slot id, which holds the `response_url` use.
    pub key: String,
    pub text: String,
}

/// The acknowledgement plan of a slash command's task (a Slack target without
/// a thread ts): an ephemeral message through its `response_url`, or nothing
/// without one. Never a reaction: there is no message ts to react to.
fn ack_plan(envelope: &TaskEnvelope, slot: &ReplySlot) -> Option<SlackDelivery> {
    let command = CommandReply::of(envelope, ReplyKind::Ack, None)?;
    Some(SlackDelivery::CommandAck(CommandAck {
        command,
        key: slot.id(),
        text: format!(
            "On it: I'm working on this request (task `{}`).",
            envelope.task_id
        ),
    }))
}

/// The Slack message plan of a reply in `thread_ts` (empty: a slash command,
/// answered in the channel).
fn message_plan(
    envelope: &TaskEnvelope,
    kind: ReplyKind,
    slot: &ReplySlot,
    answer: SlackAnswer,
    channel: &str,
    thread_ts: &str,
) -> SlackDelivery {
    let key = slot.id();
    let (reply, file) = match answer.long.clone() {
        Some((summary, file)) => (summary, Some(file)),
        None => (answer.message.clone(), None),
    };
    let thread_ts = Some(thread_ts.to_owned()).filter(|ts| !ts.is_empty());
    let command = CommandReply::of(envelope, kind, thread_ts.as_deref());
    SlackDelivery::Message(Box::new(SlackPlan {
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

/// Sends a Slack reply: a slash command's by its configured route (with the
/// other as fallback), any other in its thread.
async fn post(
    slack: &SlackClient,
    store: &Store,
    plan: &SlackPlan,
    route: SlackCommandReply,
) -> Result<Posted, ProviderError> {
    let Some(command) = &plan.command else {
        return post_in_channel(slack, store, plan).await;
    };
    let now = contexten_envelope::now_ms();
    if route == SlackCommandReply::ResponseUrl && command.usable(now) {
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
                && route == SlackCommandReply::Channel
                && command.usable(now) =>
        {
            tracing::info!(%code, "the bot cannot post in the channel; answering through the response_url");
            respond(slack, store, plan, command).await
        }
        other => other,
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
            provider: NAME,
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
            provider: NAME,
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
                provider: NAME,
                external_id: format!("{channel}/{summary_ts} cut {}", posted.ts),
                url: None,
            })
        }
        Err(other) => Err(other),
    }
}

/// Sends a slash command's acknowledgement: an ephemeral message through its
/// `response_url`, taking one of its uses but never the last (kept for the
/// answer). A URL that cannot be used (expired, no use left for it, refused
/// by Slack as expired or used, or not on Slack's host) means no
/// acknowledgement: it is skipped, and nothing else is tried in its place.
async fn acknowledge(
    slack: &SlackClient,
    store: &Store,
    ack: &CommandAck,
) -> Result<Posted, ProviderError> {
    let command = &ack.command;
    if !command.usable(contexten_envelope::now_ms()) {
        return Ok(skipped("expired"));
    }
    if !reserve(store, command, &ack.key).await? {
        return Ok(skipped("no use left"));
    }
    match slack
        .respond(
            &command.response_url,
            ResponseType::Ephemeral,
            &ack.text,
            None,
        )
        .await
    {
        Ok(()) => Ok(Posted {
            provider: NAME,
            external_id: format!("response_url/{}", ack.key),
            url: None,
        }),
        Err(ProviderError::Rejected { code, .. }) if RESPONSE_URL_GONE.contains(&code.as_str()) => {
            Ok(skipped(&code))
        }
        Err(other) => Err(other),
    }
}

/// The record of a reply deliberately not sent.
fn skipped(why: &str) -> Posted {
    tracing::info!(
        reason = why,
        "the slash command's response_url cannot be used for this reply; skipped"
    );
    Posted {
        provider: NAME,
        external_id: format!("{SKIPPED} ({why})"),
        url: None,
    }
}

/// Reserves one of the command's `response_url` uses for the slot `key`,
/// within what its kind may take ([`CommandReply::allowed_uses`]).
async fn reserve(store: &Store, command: &CommandReply, key: &str) -> Result<bool, ProviderError> {
    reserve_use(store, command, key, command.allowed_uses())
        .await
        .map_err(|error| ProviderError::Unavailable {
            provider: NAME,
            detail: format!("cannot count the response_url's uses: {error}"),
            maybe_applied: false,
        })
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
    if !reserve(store, command, &plan.key).await? {
        if command.kind == ReplyKind::Progress {
            return Ok(skipped("no use left for progress"));
        }
        return Err(ProviderError::Rejected {
            provider: NAME,
            code: "response_url_used_up".into(),
            detail: "the command's response_url has no use left".into(),
        });
    }
    slack
        .respond(
            &command.response_url,
            ResponseType::InChannel,
            &plan.whole.text,
            Some(&json!(plan.whole.blocks)),
        )
        .await?;
    Ok(Posted {
        provider: NAME,
        external_id: format!("response_url/{}", plan.key),
        url: None,
    })
}

/// After an uncertain attempt: the message found by its metadata counts as
/// posted, unless it is a long answer's summary whose file is not in the
/// thread yet; then the summary is noted so the next post only uploads.
async fn reconcile(
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
        provider: NAME,
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
) -> Result<bool, BrokerError> {
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
