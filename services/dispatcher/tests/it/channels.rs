//! The reply-channel registry: a target kind nobody registered, a registered
//! channel's unreadable target, and a channel added from outside the crate
//! (the extension point itself), posting exactly once through the ledger.

use crate::helpers::*;
use contexten_broker::{Outcome, Store};
use contexten_envelope::{ChannelTarget, ReplyKind, ReplyTarget, TaskEnvelope};
use contexten_providers::ProviderError;
use contexten_resilience::RateLimiter;
use dispatcher::channels::{ChannelLimits, InvalidTarget, Posted, Registry, ReplyChannel};
use dispatcher::{DispatchHandler, ReplySlot};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A channel that posts into memory: a `memo` target names a board.
struct MemoChannel {
    configured: bool,
    posts: Arc<Mutex<Vec<(String, String)>>>,
}

impl ReplyChannel for MemoChannel {
    type Plan = (String, String);
    type Body = String;

    fn name(&self) -> &'static str {
        "memo"
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_body_chars: Some(100),
        }
    }

    fn configured(&self) -> bool {
        self.configured
    }

    fn format(&self, envelope: &TaskEnvelope, kind: ReplyKind, _now_ms: u64) -> String {
        format!("{} {}", kind.as_str(), envelope.task_id)
    }

    fn plan(
        &self,
        envelope: &TaskEnvelope,
        kind: ReplyKind,
        _slot: &ReplySlot,
        now_ms: u64,
    ) -> Result<Option<Self::Plan>, InvalidTarget> {
        let ReplyTarget::Channel(target) = &envelope.source.reply_to else {
            return Err(InvalidTarget("not a memo target".into()));
        };
        // The memo channel's own fields: names of boards, as strings.
        let fields: HashMap<String, String> = target.decode()?;
        let board = fields
            .get("board")
            .cloned()
            .ok_or_else(|| InvalidTarget("a memo target names its board".into()))?;
        Ok(Some((board, self.format(envelope, kind, now_ms))))
    }

    async fn limiters(
        &self,
        _store: &Store,
        _plan: &Self::Plan,
    ) -> Result<Vec<RateLimiter>, ProviderError> {
        Ok(Vec::new())
    }

    async fn reconcile(
        &self,
        _store: &Store,
        _plan: &Self::Plan,
        _since_secs: u64,
    ) -> Result<Option<Posted>, ProviderError> {
        Ok(None)
    }

    async fn post(&self, _store: &Store, plan: &Self::Plan) -> Result<Posted, ProviderError> {
        let mut posts = self.posts.lock().unwrap();
        posts.push(plan.clone());
        Ok(Posted {
            provider: "memo",
            external_id: format!("memo/{}", posts.len()),
            url: None,
        })
    }
}

fn channel_target(kind: &str, fields: serde_json::Value) -> ReplyTarget {
    ReplyTarget::Channel(ChannelTarget::new(kind, &fields).unwrap())
}

/// A handler whose registry is the built-in channels plus `memo`.
async fn with_memo(t: &TestDispatch, configured: bool) -> (DispatchHandler, MemoPosts) {
    let settings = settings(&t.github, &t.linear, &t.slack);
    let posts = MemoPosts::default();
    let mut registry = Registry::from_settings(&settings).unwrap();
    registry.register(MemoChannel {
        configured,
        posts: posts.clone(),
    });
    let handler = DispatchHandler::with_channels(&settings, registry, t.store.clone());
    (handler, posts)
}

type MemoPosts = Arc<Mutex<Vec<(String, String)>>>;

async fn nothing_sent(t: &TestDispatch) {
    for server in [&t.github, &t.linear, &t.slack, &t.receiver] {
        assert!(server.received_requests().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_target_kind_without_a_channel_is_dead_lettered_as_unknown_reply_channel() {
    let t = TestDispatch::start().await;
    let target = channel_target("mastodon", json!({"instance": "example.social"}));
    let env = envelope(target, ReplyKind::Final);
    match t.handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => {
            assert_eq!(reason.code, "unknown_reply_channel");
            assert!(reason.detail.contains("mastodon"), "{}", reason.detail);
        }
        other => panic!("{other:?}"),
    }
    let metrics = contexten_telemetry::render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("contexten_dispatch_replies_total")
                && l.contains(r#"provider="unknown""#)
                && l.contains(r#"outcome="unknown_channel""#)),
        "{metrics}"
    );
    nothing_sent(&t).await;
}

#[tokio::test]
async fn a_registered_channel_posts_once_and_a_redelivery_is_a_duplicate() {
    let t = TestDispatch::start().await;
    let (handler, posts) = with_memo(&t, true).await;
    let env = envelope(
        channel_target("memo", json!({"board": "b1"})),
        ReplyKind::Final,
    );
    assert_eq!(handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(handler.dispatch(env.clone()).await, Outcome::Done);
    assert_eq!(
        *posts.lock().unwrap(),
        [("b1".to_owned(), format!("final {}", env.task_id))]
    );
    nothing_sent(&t).await;
}

#[tokio::test]
async fn a_target_whose_fields_do_not_decode_is_dead_lettered_as_invalid_reply_target() {
    let t = TestDispatch::start().await;
    let (handler, posts) = with_memo(&t, true).await;
    let env = envelope(
        channel_target("memo", json!({"board": 7})),
        ReplyKind::Final,
    );
    match handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => {
            assert_eq!(reason.code, "invalid_reply_target");
            assert!(reason.detail.contains("memo"), "{}", reason.detail);
        }
        other => panic!("{other:?}"),
    }
    assert!(posts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_registered_channel_without_credentials_is_provider_not_configured() {
    let t = TestDispatch::start().await;
    let (handler, posts) = with_memo(&t, false).await;
    let env = envelope(
        channel_target("memo", json!({"board": "b1"})),
        ReplyKind::Final,
    );
    match handler.dispatch(env).await {
        Outcome::DeadLetter(reason) => assert_eq!(reason.code, "provider_not_configured"),
        other => panic!("{other:?}"),
    }
    assert!(posts.lock().unwrap().is_empty());
}
