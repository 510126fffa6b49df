//! The dispatch stage: every answer posted back where the request came from,
//! exactly once (docs/design.md §2, §5; docs/platforms.md §2.2, §3.2, §4.2).
//!
//! - [`DispatchHandler`] (in `handler`): the exactly-once flow around the
//!   platform clients of `contexten-providers`.
//! - `ledger`: the Redis record of posted replies, locks and attempt marks.
//! - [`channels`]: the reply channels, one per platform (GitHub, Linear,
//!   Slack, GitLab, signed callbacks), each a [`channels::ReplyChannel`]: what a reply
//!   becomes there, its limiters, how to post it and find it again; the
//!   handler picks one by the reply target's kind from a
//!   [`channels::Registry`].
//! - [`format`]: GitHub/Linear markdown, Slack blocks, the callback body.
//! - [`config::DispatcherConfig`]: the settings.
//!
//! Per platform: an acknowledgement is an 👀 reaction on the request comment
//! (GitHub, when the request was a comment) or on the thread's parent (Slack),
//! or an 👀 award emoji on the trigger note or the issue or merge request
//! (GitLab), otherwise an "On it" comment; a Slack slash command gets an ephemeral "On
//! it" through its `response_url` (skipped when the URL cannot be used, never
//! a reaction). Progress and the final
//! answer are new comments, notes or thread messages (new rather than edits, so the
//! requester is notified); a Slack answer too long for a message is a summary
//! plus the full answer as a file in the thread.

pub mod channels;
pub mod config;
pub mod format;
mod handler;
mod ledger;

pub use channels::{ACK_REACTION, SLACK_EVENT_TYPE, linear_comment_id};
pub use config::DispatcherConfig;
pub use handler::{DispatchHandler, outcome_of};
pub use ledger::ReplySlot;
