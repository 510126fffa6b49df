//! Reply channels: one module per platform an answer can be posted to, each a
//! [`ReplyChannel`] (docs/design.md §3 envelope versioning, §5 exactly-once
//! dispatch). The handler never names a platform: it asks the [`Registry`]
//! for the channel registered under the reply target's kind
//! (`ReplyTarget::kind()`), and that channel plans, limits, posts and
//! reconciles the reply.
//!
//! A channel declares:
//! - its name (the reply target kind, and the `provider` of metrics and ledger
//!   records) and its limits (the longest body it posts);
//! - whether it is configured (credentials): a reply to a registered but
//!   unconfigured channel is dead-lettered as `provider_not_configured`;
//! - `plan`: what a reply becomes there (a reaction, a comment, a message, a
//!   signed callback), or nothing to send; a target whose fields do not read
//!   as the channel's is `invalid_reply_target`;
//! - `format`: the body, within its limit;
//! - the fleet-wide rate limiters a reply must pass, how to post it, and how
//!   to find an earlier post after an uncertain attempt (`reconcile`).
//!
//! A target kind no channel is registered under is dead-lettered as
//! `unknown_reply_channel`. Adding a platform is one module here and one line
//! in [`Registry::from_settings`].

mod callback;
mod github;
mod gitlab;
mod linear;
mod slack;

pub use github::ACK_REACTION;
pub use linear::linear_comment_id;
pub use slack::{CommandAck, SLACK_EVENT_TYPE, SlackPlan};

use crate::config::ProviderSettings;
pub use crate::ledger::Posted;
use crate::ledger::ReplySlot;
use contexten_broker::Store;
use contexten_envelope::{EnvelopeError, ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_resilience::RateLimiter;
use std::future::Future;
use std::pin::Pin;

/// A marker search on the platform starts this long before the recorded
/// attempt (clock skew between us and the platform).
pub(crate) const SEARCH_SLACK_SECS: u64 = 120;

/// A boxed, sendable future: what the object-safe side of a channel returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a channel promises about the replies it posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// The longest body (characters) the platform accepts; longer answers are
    /// cut (or split) by the channel's `format`. `None`: no published limit.
    pub max_body_chars: Option<usize>,
}

/// A reply target whose fields do not read as its channel's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTarget(pub String);

impl From<EnvelopeError> for InvalidTarget {
    fn from(error: EnvelopeError) -> Self {
        InvalidTarget(error.to_string())
    }
}

/// One platform answers are posted to. Implement this; the registry keeps it
/// behind the object-safe [`Channel`] (blanket-implemented).
pub trait ReplyChannel: Send + Sync + 'static {
    /// What one reply becomes on this channel, ready to send.
    type Plan: Send + Sync + 'static;
    /// The formatted body of a reply.
    type Body;

    /// The reply target kind this channel answers (`ReplyTarget::kind()`);
    /// also the `provider` label of metrics and ledger records.
    fn name(&self) -> &'static str;

    /// The platform's limits.
    fn limits(&self) -> ChannelLimits;

    /// Whether the channel has credentials to post with.
    fn configured(&self) -> bool;

    /// The body of `kind` for this envelope, within [`Self::limits`].
    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, now_ms: u64) -> Self::Body;

    /// The reply of `kind` for this envelope (whose target is this channel's
    /// kind), or `None` when there is nothing to send.
    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<Self::Plan>, InvalidTarget>;

    /// The fleet-wide limiters `plan` must pass before it is posted.
    fn limiters(
        &self,
        store: &Store,
        plan: &Self::Plan,
    ) -> impl Future<Output = Result<Vec<RateLimiter>, ProviderError>> + Send;

    /// Looks for the reply an earlier, uncertain attempt may have posted.
    fn reconcile(
        &self,
        store: &Store,
        plan: &Self::Plan,
        since_secs: u64,
    ) -> impl Future<Output = Result<Option<Posted>, ProviderError>> + Send;

    /// Sends the reply.
    fn post(
        &self,
        store: &Store,
        plan: &Self::Plan,
    ) -> impl Future<Output = Result<Posted, ProviderError>> + Send;

    /// Whether `posted` records a reply deliberately not sent.
    fn skipped(&self, _posted: &Posted) -> bool {
        false
    }
}

/// The object-safe face of a [`ReplyChannel`], as the registry holds it.
pub trait Channel: Send + Sync {
    fn name(&self) -> &'static str;
    fn limits(&self) -> ChannelLimits;
    fn configured(&self) -> bool;
    /// The reply bound to this channel, or `None` when there is nothing to send.
    fn prepare<'c>(
        &'c self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<Box<dyn PlannedReply + 'c>>, InvalidTarget>;
}

/// One reply, planned by its channel: everything the handler does with it.
pub trait PlannedReply: Send + Sync {
    /// The channel's name (metrics, logs, records).
    fn provider(&self) -> &'static str;
    fn configured(&self) -> bool;
    fn limiters<'a>(
        &'a self,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<Vec<RateLimiter>, ProviderError>>;
    fn reconcile<'a>(
        &'a self,
        store: &'a Store,
        since_secs: u64,
    ) -> BoxFuture<'a, Result<Option<Posted>, ProviderError>>;
    fn post<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<Posted, ProviderError>>;
    fn skipped(&self, posted: &Posted) -> bool;
}

/// A channel's plan with the channel that made it.
struct Bound<'c, C: ReplyChannel> {
    channel: &'c C,
    plan: C::Plan,
}

impl<C: ReplyChannel> PlannedReply for Bound<'_, C> {
    fn provider(&self) -> &'static str {
        self.channel.name()
    }

    fn configured(&self) -> bool {
        self.channel.configured()
    }

    fn limiters<'a>(
        &'a self,
        store: &'a Store,
    ) -> BoxFuture<'a, Result<Vec<RateLimiter>, ProviderError>> {
        Box::pin(self.channel.limiters(store, &self.plan))
    }

    fn reconcile<'a>(
        &'a self,
        store: &'a Store,
        since_secs: u64,
    ) -> BoxFuture<'a, Result<Option<Posted>, ProviderError>> {
        Box::pin(self.channel.reconcile(store, &self.plan, since_secs))
    }

    fn post<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<Posted, ProviderError>> {
        Box::pin(self.channel.post(store, &self.plan))
    }

    fn skipped(&self, posted: &Posted) -> bool {
        self.channel.skipped(posted)
    }
}

impl<C: ReplyChannel> Channel for C {
    fn name(&self) -> &'static str {
        ReplyChannel::name(self)
    }

    fn limits(&self) -> ChannelLimits {
        ReplyChannel::limits(self)
    }

    fn configured(&self) -> bool {
        ReplyChannel::configured(self)
    }

    fn prepare<'c>(
        &'c self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<Box<dyn PlannedReply + 'c>>, InvalidTarget> {
        Ok(self.plan(envelope, kind, slot, now_ms)?.map(|plan| {
            Box::new(Bound {
                channel: self,
                plan,
            }) as Box<dyn PlannedReply + 'c>
        }))
    }
}

/// Where a reply goes, as the registry reads its target.
pub enum Route<'c> {
    /// Nobody to answer (no target, or nothing to send for this kind).
    Nobody,
    /// No channel is registered under the target's kind.
    Unknown(String),
    /// The target's fields do not read as its channel's.
    Invalid {
        channel: &'static str,
        error: InvalidTarget,
    },
    /// The reply, planned by its channel.
    Reply(Box<dyn PlannedReply + 'c>),
}

/// The reply channels by name.
#[derive(Default)]
pub struct Registry {
    channels: Vec<Box<dyn Channel>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.channels.iter().map(|c| c.name()))
            .finish()
    }
}

impl Registry {
    /// Every channel this build has, configured from `settings` (one without
    /// credentials is registered but not configured). Fails only when the
    /// callback client cannot be built.
    pub fn from_settings(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let mut registry = Registry::default();
        registry.register(github::GithubChannel::new(settings));
        registry.register(linear::LinearChannel::new(settings));
        registry.register(slack::SlackChannel::new(settings));
        registry.register(callback::CallbackChannel::new(settings)?);
        registry.register(gitlab::GitlabChannel::new(settings));
        Ok(registry)
    }

    /// Adds `channel`, replacing one registered under the same name.
    pub fn register(&mut self, channel: impl Channel + 'static) -> &mut Self {
        self.channels.retain(|c| c.name() != channel.name());
        self.channels.push(Box::new(channel));
        self
    }

    /// The channel registered under `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Channel> {
        self.channels
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.as_ref())
    }

    /// The names of the registered channels.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.channels.iter().map(|c| c.name())
    }

    /// Where the reply of `kind` for this envelope goes.
    pub fn route(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        slot: &ReplySlot,
        now_ms: u64,
    ) -> Route<'_> {
        let target = &envelope.source.reply_to;
        if *target == ReplyTarget::None {
            return Route::Nobody;
        }
        let Some(channel) = self.get(target.kind()) else {
            return Route::Unknown(target.kind().to_owned());
        };
        match channel.prepare(envelope, kind, slot, now_ms) {
            Ok(Some(reply)) => Route::Reply(reply),
            Ok(None) => Route::Nobody,
            Err(error) => Route::Invalid {
                channel: channel.name(),
                error,
            },
        }
    }
}

/// A plan handed to a channel whose target is not its kind (the registry
/// routes by kind, so only a bug gets here).
pub(crate) fn foreign_target(channel: &str, target: &ReplyTarget) -> InvalidTarget {
    InvalidTarget(format!(
        "the {channel} channel cannot answer a `{}` reply target",
        target.kind()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_channel_is_registered_once_under_its_target_kind() {
        let env = contexten_config::Env::default();
        let settings = ProviderSettings::from_env(&env).unwrap();
        let registry = Registry::from_settings(&settings).unwrap();
        let mut names: Vec<_> = registry.names().collect();
        names.sort_unstable();
        assert_eq!(names, ["callback", "github", "gitlab", "linear", "slack"]);
        // Nothing configured by default: every channel is there, none can post.
        assert!(names.iter().all(|n| !registry.get(n).unwrap().configured()));
        assert_eq!(
            registry.get("github").unwrap().limits().max_body_chars,
            Some(crate::format::GITHUB_LIMIT)
        );
    }
}
