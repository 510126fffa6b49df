//! Persistent, confirmed, `mandatory` publishing. A publish returns only once the
//! broker has taken responsibility for the message; an unroutable message is an
//! error, never silence.

use crate::{BrokerError, Store};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_PAYLOAD_REF, HEADER_RETRY_TIER, Names, Stage, TaskEnvelope, now_ms,
    tier_label,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::basic::AMQPProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
        })
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
        self.publish_with(
            stage,
            envelope,
            Route::Now,
            &HashMap::new(),
            DeliveryMode::Transient,
        )
        .await
    }

    /// Publishes `envelope` to `stage` with extra string headers (trace context).
    pub(crate) async fn publish_envelope(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        route: Route,
        headers: &HashMap<String, String>,
    ) -> Result<(), BrokerError> {
        self.publish_with(stage, envelope, route, headers, DeliveryMode::Persistent)
            .await
    }

    async fn publish_with(
        &self,
        stage: Stage,
        envelope: &TaskEnvelope,
        route: Route,
        headers: &HashMap<String, String>,
        mode: DeliveryMode,
    ) -> Result<(), BrokerError> {
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
        let mut properties = envelope_properties(stage, envelope, mode);
        let exchange = match route {
            Route::Now => self.names.work_exchange(),
            Route::After { tier, delay } => {
                table.insert(HEADER_RETRY_TIER.into(), long(&tier_label(tier)));
                properties =
                    properties.with_expiration(delay.as_millis().max(1).to_string().into());
                self.names.retry_exchange()
            }
        };
        self.publish_raw(PublishedMessage {
            exchange,
            routing_key: stage.as_str().to_owned(),
            body,
            properties: properties.with_headers(table),
        })
        .await
    }

    /// Publishes a prepared message and waits for the broker's confirmation.
    pub async fn publish_raw(&self, message: PublishedMessage) -> Result<(), BrokerError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let confirm = self.channels[turn]
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                Err(BrokerError::Unroutable {
                    exchange: message.exchange,
                    routing_key: message.routing_key,
                })
            }
            Confirmation::Nack(None) => Err(BrokerError::Nacked),
            // The channel is in confirm mode, so this means the broker broke the protocol.
            Confirmation::NotRequested => Err(BrokerError::Nacked),
        }
    }
}

/// AMQP delivery modes.
#[derive(Debug, Clone, Copy)]
enum DeliveryMode {
    Transient = 1,
    Persistent = 2,
}

/// The delivery mode, the AMQP priority and the ids mirrored from the envelope.
fn envelope_properties(
    stage: Stage,
    envelope: &TaskEnvelope,
    mode: DeliveryMode,
) -> AMQPProperties {
    BasicProperties::default()
        .with_delivery_mode(mode as u8)
        .with_content_type("application/json".into())
        .with_priority(envelope.priority.amqp())
        .with_message_id(envelope.message_id(stage).into())
        .with_correlation_id(envelope.correlation_id.as_str().into())
        .with_timestamp(now_ms() / 1000)
}

pub(crate) fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}
