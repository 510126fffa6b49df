//! Persistent, confirmed, `mandatory` publishing. A publish returns only once the
//! broker has taken responsibility for the message; an unroutable message is an
//! error, never silence.
//!
//! A publish and its confirm take at most the confirm timeout
//! (`PUBLISH_CONFIRM_TIMEOUT_MS`): a broker with a memory or disk alarm stops
//! reading from publishing connections (`connection.blocked`), and lapin then
//! writes nothing on the connection until `connection.unblocked`, so an
//! unbounded publish would wait as long as the alarm lasts. While the
//! connection is known blocked a publish fails at once. A timed-out publish
//! leaves the channel usable: lapin registers the confirm and queues the
//! frames in the same poll, so the frames go out and their confirm arrives
//! (unawaited) when the alarm clears, and confirm numbering stays in step. The
//! message may therefore still reach its queue; callers treat a timeout like a
//! lost confirm (README "Guarantees of the runtime").

use crate::{BrokerError, Store};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_PAYLOAD_REF, HEADER_RETRY_TIER, Names, Stage, TaskEnvelope, now_ms,
    tier_label,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::basic::AMQPProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionStatus, PublisherConfirm,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct PublishedMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Publishes on one or more confirm-mode channels, taken in turn (cheap to
/// clone; safe to share).
#[derive(Clone)]
pub struct Publisher {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
    names: Names,
    store: Option<Store>,
    inline_limit: usize,
    /// The connection's status: whether the broker blocks it.
    connection: ConnectionStatus,
    confirm_timeout: Duration,
}

/// Where an envelope goes: straight to a stage, or through a delay tier.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    Now,
    After { tier: Duration, delay: Duration },
}

impl Publisher {
    /// Opens a confirm-mode channel on `connection`. Envelopes larger than
    /// `inline_limit` go to `store` and travel by reference.
    pub async fn new(
        connection: &Connection,
        names: Names,
        store: Option<Store>,
        inline_limit: usize,
    ) -> Result<Self, BrokerError> {
        Self::with_channels(connection, names, store, inline_limit, 1).await
    }

    /// Like [`Publisher::new`] with `count` channels used in turn: RabbitMQ runs
    /// each channel in one Erlang process, so one busy channel queues every
    /// publish of a busy front door behind the others (ingest measured a lower
    /// confirm-latency tail with several).
    pub async fn with_channels(
        connection: &Connection,
        names: Names,
        store: Option<Store>,
        inline_limit: usize,
        count: usize,
    ) -> Result<Self, BrokerError> {
        let mut channels = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        Ok(Publisher {
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
            names,
            store,
            inline_limit,
            connection: connection.status().clone(),
            confirm_timeout: Duration::from_millis(
                contexten_config::DEFAULT_PUBLISH_CONFIRM_TIMEOUT_MS,
            ),
        })
    }

    /// The same publisher with publishes and their confirms bounded by
    /// `timeout` (`PUBLISH_CONFIRM_TIMEOUT_MS`; the default is its default).
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Whether the broker has blocked this connection (a memory or disk
    /// alarm): publishes fail with [`BrokerError::Blocked`] until it unblocks.
    pub fn is_blocked(&self) -> bool {
        self.connection.blocked()
    }

    /// Whether every channel is still open (a channel closed by the broker
    /// needs a new publisher).
    pub fn is_connected(&self) -> bool {
        self.channels.iter().all(|c| c.status().connected())
    }

    /// The names this publisher routes by.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Publishes `envelope` to `stage`'s queue now.
    pub async fn publish(&self, stage: Stage, envelope: &TaskEnvelope) -> Result<(), BrokerError> {
        self.publish_envelope(stage, envelope, Route::Now, &HashMap::new())
            .await
    }

    /// Publishes `envelope` to `stage`'s queue now, *not* persisted: for a
    /// message whose loss in a broker restart costs nothing, such as ingest's
    /// "on it" acknowledgement (the final answer follows either way). It skips
    /// the broker's disk write and sync, about a third of RabbitMQ's work per
    /// webhook in the ingest load bench. Still confirmed and `mandatory`.
    pub async fn publish_transient(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
    ) -> Result<(), BrokerError> {
        let message = self.message(stage, envelope, Delivery::Transient).await?;
        self.publish_raw(message).await
    }

    /// Publishes `envelope` to `stage` with extra string headers (trace context).
    pub(crate) async fn publish_envelope(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        route: Route,
        headers: &HashMap<String, String>,
    ) -> Result<(), BrokerError> {
        let message = self
            .prepare(stage, envelope, route, headers, Delivery::Persistent)
            .await?;
        self.publish_raw(message).await
    }

    /// The message [`Publisher::publish`] (with [`Delivery::Transient`],
    /// [`Publisher::publish_transient`]) sends for `envelope`, for
    /// [`Publisher::publish_together`].
    pub async fn message(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        delivery: Delivery,
    ) -> Result<PublishedMessage, BrokerError> {
        self.prepare(stage, envelope, Route::Now, &HashMap::new(), delivery)
            .await
    }

    async fn prepare(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        route: Route,
        headers: &HashMap<String, String>,
        delivery: Delivery,
    ) -> Result<PublishedMessage, BrokerError> {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert(key.as_str().into(), long(value));
        }
        table.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(envelope.attempt));
        let mut body = envelope.to_json();
        if let Some(store) = self
            .store
            .as_ref()
            .filter(|_| body.len() > self.inline_limit)
        {
            let key = store.put_payload(&body).await?;
            table.insert(HEADER_PAYLOAD_REF.into(), long(&key));
            body = Vec::new();
        }
        let mut properties = envelope_properties(stage, envelope, delivery);
        let exchange = match route {
            Route::Now => self.names.work_exchange(),
            Route::After { tier, delay } => {
                table.insert(HEADER_RETRY_TIER.into(), long(&tier_label(tier)));
                properties =
                    properties.with_expiration(delay.as_millis().max(1).to_string().into());
                self.names.retry_exchange()
            }
        };
        Ok(PublishedMessage {
            exchange,
            // By priority lane (docs/design.md §3, `topology::routing_key`).
            routing_key: crate::topology::routing_key(stage, envelope.priority),
            body,
            properties: properties.with_headers(table),
        })
    }

    /// Publishes a prepared message and waits for the broker's confirmation.
    pub async fn publish_raw(&self, message: PublishedMessage) -> Result<(), BrokerError> {
        let mut pending = self.publish_together(vec![message]).await?;
        match pending.pop() {
            Some(confirm) => confirm.confirmed().await,
            None => Err(BrokerError::Nacked),
        }
    }

    /// Publishes `messages` back to back on one channel, so they leave in one
    /// write and the broker takes them in one read; returns once they are
    /// written, with each one's confirmation still to come, in order. Two
    /// messages of one request published apart cost the client, the broker and
    /// the wake-ups between them twice (ingest's task and acknowledgement).
    /// Writing and confirming together take at most the confirm timeout.
    pub async fn publish_together(
        &self,
        messages: Vec<PublishedMessage>,
    ) -> Result<Vec<PendingConfirm>, BrokerError> {
        if self.is_blocked() {
            contexten_telemetry::metric::publish_failed("blocked");
            return Err(BrokerError::Blocked);
        }
        let deadline = Instant::now() + self.confirm_timeout;
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let channel = &self.channels[turn];
        // The bodies are borrowed by the publishes, the properties moved into them.
        let mut spans = Vec::with_capacity(messages.len());
        let (routes, contents): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .map(|m| {
                let (span, properties) = producer_span(&m.exchange, &m.routing_key, m.properties);
                spans.push(span);
                ((m.exchange, m.routing_key), (m.body, properties))
            })
            .unzip();
        let (bodies, properties): (Vec<_>, Vec<_>) = contents.into_iter().unzip();
        // Each publish queues its frames when first polled, so joining them
        // queues all before the connection's writer wakes.
        let written =
            futures_util::future::try_join_all(routes.iter().zip(&bodies).zip(properties).map(
                |(((exchange, routing_key), body), properties)| {
                    channel.basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        body,
                        properties,
                    )
                },
            ));
        let written = tokio::time::timeout_at(deadline, written)
            .await
            .map_err(|_| timed_out(self.confirm_timeout))??;
        Ok(written
            .into_iter()
            .zip(routes)
            .zip(spans)
            .map(
                |((confirm, (exchange, routing_key)), span)| PendingConfirm {
                    confirm,
                    exchange,
                    routing_key,
                    deadline,
                    timeout: self.confirm_timeout,
                    span,
                },
            )
            .collect())
    }
}

/// A written message whose confirmation is still to come.
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    exchange: String,
    routing_key: String,
    /// When the publish started plus the confirm timeout.
    deadline: Instant,
    timeout: Duration,
    /// The producer span, ended with the confirmation.
    span: tracing::Span,
}

impl PendingConfirm {
    /// Waits for the broker to take responsibility for the message, until the
    /// publish's deadline; an unroutable message is an error.
    pub async fn confirmed(self) -> Result<(), BrokerError> {
        let span = self.span.clone();
        let result = self.confirm_or_fail().await;
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.to_string());
        }
        result
    }

    async fn confirm_or_fail(self) -> Result<(), BrokerError> {
        let confirmation = match tokio::time::timeout_at(self.deadline, self.confirm).await {
            Ok(confirmation) => confirmation?,
            Err(_) => return Err(timed_out(self.timeout)),
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                Err(BrokerError::Unroutable {
                    exchange: self.exchange,
                    routing_key: self.routing_key,
                })
            }
            Confirmation::Nack(None) => Err(BrokerError::Nacked),
            // The channel is in confirm mode, so this means the broker broke the protocol.
            Confirmation::NotRequested => Err(BrokerError::Nacked),
        }
    }
}

/// A producer span for one message (OpenTelemetry messaging conventions, see
/// docs/design.md §8), a child of the current span or, outside any span (a
/// message republished as it came), of the trace the message already carries;
/// the message's `traceparent` becomes the producer span's context, so the
/// consumer's span is its child.
fn producer_span(
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
) -> (tracing::Span, BasicProperties) {
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "publish",
        // Named by stage, whatever the lane (the key is an attribute).
        otel.name = %format_args!("publish {}", crate::topology::without_lane(routing_key)),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = %message_id,
    );
    let mut table = properties.headers().clone().unwrap_or_default();
    if tracing::Span::current().is_none() {
        let mut carried = HashMap::new();
        for key in TRACE_HEADERS {
            if let Some(AMQPValue::LongString(value)) = table.inner().get(key) {
                carried.insert(
                    key.to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                );
            }
        }
        contexten_telemetry::propagation::adopt_parent(&span, &carried);
    }
    for (key, value) in contexten_telemetry::propagation::inject(&span) {
        table.insert(key.into(), long(&value));
    }
    (span, properties.with_headers(table))
}

/// The W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

fn timed_out(timeout: Duration) -> BrokerError {
    contexten_telemetry::metric::publish_failed("confirm_timeout");
    BrokerError::ConfirmTimeout(timeout)
}

/// Whether the broker writes a message to disk before confirming it (the AMQP
/// delivery mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Kept in memory only: lost in a broker restart.
    Transient = 1,
    /// Written and synced to disk before the confirmation.
    Persistent = 2,
}

/// The delivery mode, the AMQP priority and the ids mirrored from the envelope.
fn envelope_properties(
    stage: Stage,
    envelope: &TaskEnvelope,
    delivery: Delivery,
) -> AMQPProperties {
    BasicProperties::default()
        .with_delivery_mode(delivery as u8)
        .with_content_type("application/json".into())
        .with_priority(envelope.priority.amqp())
        .with_message_id(envelope.message_id(stage).into())
        .with_correlation_id(envelope.correlation_id.as_str().into())
        .with_timestamp(now_ms() / 1000)
}

pub(crate) fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_telemetry::propagation::{inject, trace_id_of};

    fn traceparent(properties: &BasicProperties) -> String {
        match properties
            .headers()
            .as_ref()
            .and_then(|t| t.inner().get("traceparent"))
        {
            Some(AMQPValue::LongString(value)) => String::from_utf8_lossy(value.as_bytes()).into(),
            other => panic!("no traceparent: {other:?}"),
        }
    }

    /// Inside a span, the message carries the producer span's context: the
    /// same trace, a new span id (the consumer's parent is the publish).
    #[test]
    fn the_traceparent_written_is_the_producer_span_of_the_current_trace() {
        contexten_telemetry::init_for_tests();
        let parent = tracing::info_span!("request");
        let parent_header = inject(&parent);
        let parent_traceparent = &parent_header["traceparent"];
        let (producer, properties) = parent.in_scope(|| {
            producer_span(
                "contexten.work",
                "generate",
                BasicProperties::default().with_message_id("m-1".into()),
            )
        });
        let written = traceparent(&properties);
        assert_eq!(trace_id_of(&written), trace_id_of(parent_traceparent));
        assert_ne!(&written, parent_traceparent, "the producer's own span id");
        assert_eq!(inject(&producer)["traceparent"], written);
    }

    /// Outside any span (a delivery republished as it came) the producer span
    /// continues the trace the message already carries.
    #[test]
    fn outside_a_span_the_carried_trace_is_continued() {
        contexten_telemetry::init_for_tests();
        let mut table = FieldTable::default();
        table.insert(
            "traceparent".into(),
            long("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let (_producer, properties) = producer_span(
            "contexten.dead",
            "dispatch",
            BasicProperties::default().with_headers(table),
        );
        let written = traceparent(&properties);
        assert_eq!(
            trace_id_of(&written),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(!written.contains("00f067aa0ba902b7"), "{written}");
    }
}
