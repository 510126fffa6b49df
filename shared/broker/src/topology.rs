//! The exchanges and queues of docs/design.md §3, declared idempotently: declaring the
//! same topology again with the same arguments is a no-op for the broker.
//!
//! Dead queues are bounded (`DEAD_QUEUE_MAX_LENGTH`, `x-max-length`) with
//! `x-overflow` = `reject-publish`: a full dead queue refuses new dead letters
//! instead of dropping its oldest, which are the ones an operator reads first.
//! The runtime logs and counts a refused dead letter and still answers the
//! requester (README "Guarantees of the runtime"). A dead queue declared
//! before the limit existed cannot be re-declared with it (the broker answers
//! `PRECONDITION_FAILED`); [`declare_for`] then keeps the existing queue and
//! warns that a policy should set the limit.

use crate::BrokerError;
use crate::publisher::long;
use contexten_config::{BrokerSettings, DEFAULT_DEAD_QUEUE_MAX_LENGTH};
use contexten_envelope::{HEADER_RETRY_TIER, Names, Priority, Stage, tier_label};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};
use std::time::Duration;

/// What a full dead queue does with one more dead letter: refuse it (the
/// publisher gets a nack), so nothing already kept is dropped unseen.
pub const DEAD_QUEUE_OVERFLOW: &str = "reject-publish";

/// The AMQP reply code for a re-declaration with other arguments.
const PRECONDITION_FAILED: u16 = 406;

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

/// The arguments of a dead queue holding at most `max_length` messages.
fn dead_queue_args(max_length: u32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(max_length)),
    );
    args.insert("x-overflow".into(), long(DEAD_QUEUE_OVERFLOW));
    args
}

/// Declares every exchange and queue of the fleet under `names'` prefix on
/// `channel`, the dead queues with the default length limit (tests and
/// tools; the services use [`declare_for`]).
pub async fn declare(
    channel: &Channel,
    names: &Names,
    tiers: &[Duration],
) -> Result<(), BrokerError> {
    declare_work(channel, names, tiers).await?;
    let dlx = names.dead_letter_exchange();
    for stage in Stage::QUEUED {
        let args = dead_queue_args(DEFAULT_DEAD_QUEUE_MAX_LENGTH);
        let dead = names.dead_queue(stage);
        declare_bound_queue(
            channel,
            &dead,
            args,
            &dlx,
            stage.as_str(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Declares the fleet's topology as `settings` say (retry tiers, dead queue
/// length), on channels of its own. A dead queue that exists with other
/// arguments (declared before `DEAD_QUEUE_MAX_LENGTH` existed, or with
/// another value) is kept as it is, with a warning: the broker closes the
/// channel of a declaration that does not match, and deleting a dead queue
/// would lose its messages.
pub async fn declare_for(
    connection: &Connection,
    names: &Names,
    settings: &BrokerSettings,
) -> Result<(), BrokerError> {
    let mut channel = connection.create_channel().await?;
    declare_work(&channel, names, &settings.retry_tiers).await?;
    let dlx = names.dead_letter_exchange();
    for stage in Stage::QUEUED {
        let dead = names.dead_queue(stage);
        let args = dead_queue_args(settings.dead_queue_max_length);
        let declared = declare_bound_queue(
            &channel,
            &dead,
            args,
            &dlx,
            stage.as_str(),
            FieldTable::default(),
        )
        .await;
        match declared {
            Err(BrokerError::Amqp(error)) if is_precondition_failed(&error) => {
                tracing::warn!(
                    queue = %dead,
                    max_length = settings.dead_queue_max_length,
                    %error,
                    "the dead queue exists with other arguments and is kept as it is; \
                     set its length limit with a policy (README \"Guarantees of the runtime\")"
                );
                channel = connection.create_channel().await?;
                let existing = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::durable()
                };
                channel
                    .queue_declare(dead.as_str().into(), existing, FieldTable::default())
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
            other => other?,
        }
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e) if e.get_id() == PRECONDITION_FAILED)
}

/// Declares the exchanges, the stage queues and the delay tiers.
async fn declare_work(
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
        let queue = names.stage_queue(stage);
        declare_bound_queue(
            channel,
            &queue,
            args,
            &work,
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
