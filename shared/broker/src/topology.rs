//! The exchanges and queues of DESIGN §3, declared idempotently: declaring the
//! same topology again with the same arguments is a no-op for the broker.

use crate::BrokerError;
use contexten_envelope::{
    HEADER_RETRY_TIER, LEGACY_HEADER_RETRY_TIER, Names, Priority, Stage, tier_label,
};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn tier_binding(header: &str, tier: Duration) -> FieldTable {
    let mut binding = FieldTable::default();
    binding.insert("x-match".into(), long("all"));
    binding.insert(header.into(), long(&tier_label(tier)));
    binding
}

/// Declares every exchange and queue of the fleet under `names`' prefix.
pub async fn declare(
    channel: &Channel,
    names: &Names,
    tiers: &[Duration],
) -> Result<(), BrokerError> {
    let work = names.work_exchange();
    let retry = names.retry_exchange();
    let dlx = names.dead_letter_exchange();
    channel
        .exchange_declare(
            work.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    // Delayed messages keep their stage routing key, so the tier is chosen by a header.
    channel
        .exchange_declare(
            retry.as_str().into(),
            ExchangeKind::Headers,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;

    for stage in Stage::QUEUED {
        let queue = names.stage_queue(stage);
        let mut args = FieldTable::default();
        args.insert(
            "x-max-priority".into(),
            AMQPValue::ShortShortUInt(Priority::MAX_AMQP),
        );
        args.insert("x-dead-letter-exchange".into(), long(&dlx));
        args.insert("x-queue-type".into(), long("classic"));
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                work.as_str().into(),
                stage.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let dead = names.dead_queue(stage);
        channel
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                dead.as_str().into(),
                dlx.as_str().into(),
                stage.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    for tier in tiers {
        let queue = names.retry_queue(*tier);
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(tier.as_millis() as i64),
        );
        // Expired messages go back to the work exchange with their stage routing key.
        args.insert("x-dead-letter-exchange".into(), long(&work));
        args.insert("x-queue-type".into(), long("classic"));
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                retry.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                tier_binding(HEADER_RETRY_TIER, *tier),
            )
            .await?;
        // A binding on the old `x-` header matched every delayed message, so each
        // was delivered once per tier; unbinding one that is absent is a no-op.
        channel
            .queue_unbind(
                queue.as_str().into(),
                retry.as_str().into(),
                "".into(),
                tier_binding(LEGACY_HEADER_RETRY_TIER, *tier),
            )
            .await?;
    }
    Ok(())
}

/// Deletes every exchange and queue under `names`' prefix (tests and the
/// operator's teardown).
pub async fn delete(
    channel: &Channel,
    names: &Names,
    tiers: &[Duration],
) -> Result<(), BrokerError> {
    for stage in Stage::QUEUED {
        for queue in [names.stage_queue(stage), names.dead_queue(stage)] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
    }
    for tier in tiers {
        channel
            .queue_delete(
                names.retry_queue(*tier).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await?;
    }
    for exchange in [
        names.work_exchange(),
        names.retry_exchange(),
        names.dead_letter_exchange(),
    ] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}
