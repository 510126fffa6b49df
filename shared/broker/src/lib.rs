//! The RabbitMQ worker runtime every stage runs on (docs/design.md §3–5).
//!
//! - [`topology`]: declares the work exchange, one priority queue per stage
//!   (or, with `QUEUE_TYPE=quorum`, one quorum queue per priority lane), the
//!   retry delay tiers and the dead-letter queues, idempotently.
//! - [`dead_letter_reason`]: a dead letter's reason code, the runtime's or the
//!   broker's own (`x-death`, a quorum queue's delivery limit → `poison`).
//! - [`Publisher`]: persistent, confirmed, `mandatory` publishing of envelopes.
//! - [`run_worker`]: consumes a stage queue with manual acks and a prefetch, hands
//!   each envelope to a [`Handler`] (a plain async function returning an
//!   [`Outcome`]) and turns the outcome into publish, retry, dead letter or ack.
//!   It reconnects with backoff and shuts down gracefully.
//! - [`Store`] (crate `contexten-store`, re-exported): the Redis side:
//!   per-stage completion records (a redelivered message is not processed
//!   twice), the task status record, and large payloads passed by reference.
//!
//! A message is acked only after its successors are confirmed by the broker and
//! its completion is recorded. A task given up on gets a failure answer with its
//! reason code and that code's sentence ([`failure_text`]), never the detail.

#[cfg(feature = "bench")]
pub mod benchkit;
mod connect;
mod dead;
mod failure;
mod lanes;
mod outcome;
mod poison;
mod publisher;
mod retry;
mod runtime;
pub mod service;
pub mod topology;

pub use connect::{connect, connect_with_tls};
pub use contexten_store::{RedisRole, StoreError};
pub use dead::{BROKER_DELIVERY_LIMIT, dead_letter_reason};
pub use failure::failure_text;
pub use outcome::{DeadReason, Handler, Next, Outcome, RetryReason};
pub use publisher::{Delivery, PendingConfirm, PublishedMessage, Publisher};
pub use retry::RetryPolicy;
pub use runtime::{WorkerOptions, run_worker};
pub use service::{WorkerConfig, run_service, shutdown_on_signal};
pub use tokio_util::sync::CancellationToken;

/// The Redis store (crate `contexten-store`) answering [`BrokerError`], so a
/// handler's Redis and broker failures are one type. The caches and limiters
/// take it as it is (they keep a [`contexten_store::Store`] of their own).
pub type Store = contexten_store::Store<BrokerError>;

use contexten_envelope::EnvelopeError;

/// What can go wrong talking to the broker or Redis.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker at `endpoint` (host:port) could not be reached or refused
    /// the TLS handshake or the login.
    #[error("cannot connect to the broker at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: lapin::Error,
    },
    /// `CONTEXTEN_CA_FILE` or the client certificate is unusable.
    #[error(transparent)]
    Tls(#[from] contexten_tls::TlsError),
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// No confirm within `PUBLISH_CONFIRM_TIMEOUT_MS`; the message may still
    /// reach its queue (like a lost confirm).
    #[error("the broker did not confirm the publish within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// The broker blocks this connection's publishes (a memory or disk alarm).
    #[error("the broker blocks publishers (a resource alarm)")]
    Blocked,
    /// The handler panicked: the delivery is requeued and counted as one
    /// without an outcome (a poison message after `MAX_DELIVERIES`).
    #[error("the handler panicked")]
    HandlerPanicked,
    #[error("no queue is bound for routing key {routing_key:?} on {exchange:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("redis: {0}")]
    Redis(String),
    /// Redis is up but refused the write (`OOM`, `MISCONF`, `READONLY`,
    /// `NOREPLICAS`): a full or broken records store, reported and retried,
    /// never taken for "Redis unreachable".
    #[error("redis refused the write: {0}")]
    RedisRefused(String),
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(std::time::Duration),
    #[error("large payload {0} is gone from redis")]
    PayloadMissing(String),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<StoreError> for BrokerError {
    /// Variant for variant, so a [`Store`] error matches as it did when the
    /// store was part of this crate.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Redis(detail) => BrokerError::Redis(detail),
            StoreError::RedisRefused(detail) => BrokerError::RedisRefused(detail),
            StoreError::RedisTimeout(after) => BrokerError::RedisTimeout(after),
            StoreError::PayloadMissing(key) => BrokerError::PayloadMissing(key),
            StoreError::Tls(error) => BrokerError::Tls(error),
        }
    }
}

/// Turns a Redis error into a [`BrokerError`]: a write Redis refused becomes
/// [`BrokerError::RedisRefused`], which callers must not mistake for "Redis
/// unreachable" (README "Redis: records and caches").
pub fn redis_error(error: redis::RedisError) -> BrokerError {
    contexten_store::redis_error(error).into()
}

impl BrokerError {
    /// Whether Redis was up and refused the write ([`BrokerError::RedisRefused`]).
    pub fn is_refused(&self) -> bool {
        matches!(self, BrokerError::RedisRefused(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_becomes_the_broker_variant_of_the_same_name() {
        let after = std::time::Duration::from_secs(2);
        let refused = BrokerError::from(StoreError::RedisRefused("OOM".into()));
        assert!(refused.is_refused(), "{refused}");
        assert!(matches!(
            BrokerError::from(StoreError::Redis("down".into())),
            BrokerError::Redis(detail) if detail == "down"
        ));
        assert!(matches!(
            BrokerError::from(StoreError::RedisTimeout(after)),
            BrokerError::RedisTimeout(t) if t == after
        ));
        assert!(matches!(
            BrokerError::from(StoreError::PayloadMissing("k".into())),
            BrokerError::PayloadMissing(key) if key == "k"
        ));
    }
}
