//! Per-provider event classification: pure functions from a verified payload to
//! "task", "ignored (reason)" or a protocol answer, unit-testable without HTTP.

pub mod github;
pub mod linear;
pub mod slack;

use crate::intake::Draft;
use serde_json::Value;

/// What a verified event is.
#[derive(Debug, Clone)]
pub enum Classified {
    /// A new request for the bot.
    Task(Box<Draft>),
    /// A Slack thread reply: a task only if the bot already answers in that
    /// thread (the conversation is known).
    TaskIfConversationKnown(Box<Draft>),
    /// Not for us; answered 2xx and counted with this reason.
    Ignored(&'static str),
    /// GitHub `ping`.
    Ping,
    /// Slack `url_verification`.
    Challenge(String),
}

/// The string at `path` in `value`.
pub(crate) fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}
