//! The exchanges and queues of DESIGN §3, declared idempotently: declaring the
//! same topology again with the same arguments is a no-op for the broker.

use crate::BrokerError;
use crate::publisher::long;
use contexten_envelope::{HEADER_RETRY_TIER, Names, Priority, Stage, tier_label};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// Declares a durable exchange.
async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await?;
    Ok(())
}

/// Declares a durable queue with `args` and binds it to `exchange`.
async fn declare_bound_queue(
    channel: &Channel,
    queue: &str,
    args: FieldTable,
    exchange: &str,
    routing_key: &str,
    binding: FieldTable,
) -> Result<(), BrokerError> {
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            binding,
        )
        .await?;
    Ok(())
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
    declare_exchange(channel, &work, ExchangeKind::Direct).await?;
    // Delayed messages keep their stage routing key, so the tier is chosen by a header.
    declare_exchange(channel, &retry, ExchangeKind::Headers).await?;
    declare_exchange(channel, &dlx, ExchangeKind::Direct).await?;

    for stage in Stage::QUEUED {
        let mut args = FieldTable::default();
        args.insert(
            "x-max-priority".into(),
            AMQPValue::ShortShortUInt(Priority::MAX_AMQP),
        );
        args.insert("x-dead-letter-exchange".into(), long(&dlx));
        args.insert("x-queue-type".into(), long("classic"));
        let (queue, dead) = (names.stage_queue(stage), names.dead_queue(stage));
        declare_bound_queue(
            channel,
            &queue,
            args,
            &work,
            stage.as_str(),
            FieldTable::default(),
        )
        .await?;
        declare_bound_queue(
            channel,
            &dead,
            FieldTable::default(),
            &dlx,
            stage.as_str(),
            FieldTable::default(),
        )
        .await?;
    }

    for tier in tiers {
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(tier.as_millis() as i64),
        );
        // Expired messages go back to the work exchange with their stage routing key.
        args.insert("x-dead-letter-exchange".into(), long(&work));
        args.insert("x-queue-type".into(), long("classic"));
        // The headers exchange ignores headers starting with `x-` when matching, so
        // the tier header must not start with `x-`.
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), long("all"));
        binding.insert(HEADER_RETRY_TIER.into(), long(&tier_label(*tier)));
        declare_bound_queue(
            channel,
            &names.retry_queue(*tier),
            args,
            &retry,
            "",
            binding,
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
