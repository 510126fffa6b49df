//! Webhook sources: one [`WebhookSource`] per platform, all served by one
//! generic handler ([`crate::webhooks::receive`]) at `POST /webhooks/{name}`.
//!
//! A source says how its platform proves a delivery (signature or token),
//! which header names the delivery (the dedup key) and what a verified
//! payload is: a task ([`Draft`]: reply target, conversation, repository), an
//! event ignored with a reason, or a protocol answer (GitHub's ping, Slack's
//! URL check). Everything after that is the generic path's and so applies to
//! every source alike: the signed-body replay check, the per-requester limit,
//! the repository policy, dedup, the status record, publishing and metrics
//! (docs/design.md §5). Adding a platform is one module here and one line in
//! [`registry`]. Classification stays pure (no I/O), so it is unit-tested
//! without HTTP; the one lookup a classification needs (whether a Slack
//! thread is ours) is asked for with [`Classified::TaskIfConversationKnown`].

pub mod github;
pub mod gitlab;
pub mod linear;
pub mod slack;

use crate::config::{IngestConfig, Limits, ProviderSecrets};
use crate::error::IngestError;
use crate::intake::Draft;
use crate::webhooks;
use axum::http::HeaderMap;
use axum::response::Response;
use contexten_config::{Secret, SecretSource};
use serde_json::Value;
use std::sync::Arc;

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
    /// A protocol answer (GitHub `ping`, Slack `url_verification`): `200`
    /// with `body`, counted under the outcome label `outcome`.
    Answer { body: Value, outcome: &'static str },
}

/// One webhook request as a source sees it: its headers, the raw body the
/// signature covers, and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Milliseconds since the epoch.
    pub received_ms: u64,
}

impl<'a> Inbound<'a> {
    /// A header's value, when present and readable.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One platform that sends webhooks. Methods are synchronous: whatever needs
/// Redis or the broker is done by the generic handler, driven by the
/// [`Classified`] value.
pub trait WebhookSource: Send + Sync + 'static {
    /// The route's path segment (`/webhooks/{name}`), the envelope's
    /// `source.kind` and the `provider` metric label.
    fn name(&self) -> &'static str;

    /// The variable holding the secret (named in the disabled answer and the
    /// start-up warning).
    fn secret_var(&self) -> &'static str;

    /// The secret, `None` when unset: the route then answers `404
    /// provider_disabled`, never accepting unsigned deliveries.
    fn secret<'c>(&self, secrets: &'c ProviderSecrets) -> Option<&'c SecretSource>;

    /// Refuses a body of a media type the platform does not send (`415`).
    fn check_media(&self, headers: &HeaderMap) -> Result<(), IngestError> {
        webhooks::require_json(headers)
    }

    /// Checks that the platform sent this request, before anything parses
    /// the body: `Err` is answered `401` (or `400` for a malformed header).
    /// `secrets` holds every value accepted while a secret is rotated.
    fn verify(
        &self,
        secrets: &[Secret],
        inbound: &Inbound<'_>,
        limits: &Limits,
    ) -> Result<(), IngestError>;

    /// The platform's delivery identity (the dedup key), from its header;
    /// `None` leaves the one classification derived (Slack's message, Linear's
    /// webhook and timestamp) in place.
    fn delivery_id(&self, _inbound: &Inbound<'_>) -> Option<String> {
        None
    }

    /// What a verified request is. An `Err` is a malformed request (`400`)
    /// or a signed field out of its window (`401`).
    fn classify(
        &self,
        inbound: &Inbound<'_>,
        cfg: &IngestConfig,
    ) -> Result<Classified, IngestError>;

    /// Whether a task's signed body is remembered, so the same body sent again
    /// under another delivery identity is ignored ([`crate::replay`]).
    fn dedups_body(&self) -> bool {
        false
    }

    /// The answer to an ignored event.
    fn ignored(&self, _inbound: &Inbound<'_>, reason: &'static str) -> Response {
        webhooks::ignored(self.name(), reason)
    }

    /// The answer to a submitted task (`202`, or `200` duplicate/refused), in
    /// the form the platform documents.
    fn answer(&self, _inbound: &Inbound<'_>, response: Response) -> Response {
        response
    }

    /// `(delivery id, event)` of a delivery the platform will not retry by
    /// itself, recorded when it is refused with `503` ([`crate::failed`]).
    fn unretried_delivery<'h>(&self, _headers: &'h HeaderMap) -> Option<(&'h str, &'h str)> {
        None
    }
}

/// Every webhook source ingest serves, one route each.
pub fn registry() -> Vec<Arc<dyn WebhookSource>> {
    vec![
        Arc::new(github::Github),
        Arc::new(linear::Linear),
        Arc::new(slack::Slack),
        Arc::new(gitlab::Gitlab),
    ]
}

/// The string at `path` in `value`.
pub(crate) fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}
