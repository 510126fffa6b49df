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
//!
//! `QUEUE_TYPE` chooses the queue kind (docs/design.md §3). `classic`: one
//! queue per stage with `x-max-priority` 3. `quorum`: replicated queues, which
//! have no priorities on RabbitMQ 3.x, so each stage has one queue per
//! priority lane ([`lane_queue`]: `<prefix>.<stage>` for batch, then
//! `.p1`–`.p3`), the runtime consumes all of them and starts the highest lane
//! first. Publishers route by lane ([`routing_key`]) in both modes: the
//! classic stage queue is bound with every lane's key. Quorum queues carry
//! `x-delivery-limit` (`QUORUM_DELIVERY_LIMIT`) and dead-letter
//! `at-least-once` (which needs `x-overflow` `reject-publish`).

use crate::BrokerError;
use crate::publisher::long;
use contexten_config::{
    BrokerSettings, DEFAULT_DEAD_QUEUE_MAX_LENGTH, DEFAULT_QUORUM_DELIVERY_LIMIT, QueueType,
};
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

/// Every priority, lowest first: the lanes of a stage in quorum mode.
pub const LANES: [Priority; 4] = [
    Priority::Batch,
    Priority::Normal,
    Priority::Interactive,
    Priority::Operator,
];

/// The suffix of a lane above the lowest (`.p1`–`.p3`); the lowest lane keeps
/// the stage's own queue name and routing key, so anything published with the
/// bare stage key lands in a consumed queue in either mode.
fn lane_suffix(priority: Priority) -> String {
    match priority.amqp() {
        0 => String::new(),
        n => format!(".p{n}"),
    }
}

/// The routing key of an envelope of `priority` for `stage` on the work and
/// retry exchanges (`generate`, `generate.p1`, …). Every publisher routes by
/// it; the classic stage queue is bound with all four keys.
pub fn routing_key(stage: Stage, priority: Priority) -> String {
    format!("{}{}", stage.as_str(), lane_suffix(priority))
}

/// A routing key without its lane suffix: the stage's own key.
pub fn without_lane(routing_key: &str) -> &str {
    match routing_key.rsplit_once('.') {
        Some((stage, "p1" | "p2" | "p3")) => stage,
        _ => routing_key,
    }
}

/// The quorum-mode queue of `stage`'s `priority` lane (the lowest lane is
/// [`Names::stage_queue`]).
pub fn lane_queue(names: &Names, stage: Stage, priority: Priority) -> String {
    format!("{}{}", names.stage_queue(stage), lane_suffix(priority))
}

/// The queues a stage's work waits in, highest priority first, with their
/// priority: the stage queue in classic mode (every priority), one per lane in
/// quorum mode. Everything that lists, counts, consumes or purges a stage's
/// work goes through this.
pub fn work_queues(names: &Names, queue_type: QueueType, stage: Stage) -> Vec<(String, Priority)> {
    match queue_type {
        QueueType::Classic => vec![(names.stage_queue(stage), Priority::Operator)],
        QueueType::Quorum => LANES
            .iter()
            .rev()
            .map(|&p| (lane_queue(names, stage, p), p))
            .collect(),
    }
}

/// How the queues are declared: kind and limits.
#[derive(Debug, Clone, Copy)]
struct Kind {
    queue_type: QueueType,
    delivery_limit: u32,
    dead_max_length: u32,
}

impl Kind {
    fn of(settings: &BrokerSettings) -> Self {
        Kind {
            queue_type: settings.queue_type,
            delivery_limit: settings.delivery_limit,
            dead_max_length: settings.dead_queue_max_length,
        }
    }

    /// `x-queue-type`, and for quorum queues at-least-once dead-lettering.
    fn base(&self, args: &mut FieldTable) {
        args.insert("x-queue-type".into(), long(self.queue_type.as_str()));
        if self.queue_type == QueueType::Quorum {
            // The broker keeps a dead letter until the dead-letter target
            // confirms it (RabbitMQ 3.10+); it requires `reject-publish`.
            args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
            args.insert("x-overflow".into(), long(DEAD_QUEUE_OVERFLOW));
        }
    }
}

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
fn dead_queue_args(queue_type: QueueType, max_length: u32) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long(queue_type.as_str()));
    }
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
    let kind = Kind {
        queue_type: QueueType::Classic,
        delivery_limit: DEFAULT_QUORUM_DELIVERY_LIMIT,
        dead_max_length: DEFAULT_DEAD_QUEUE_MAX_LENGTH,
    };
    declare_work(channel, names, tiers, kind).await?;
    let dlx = names.dead_letter_exchange();
    for stage in Stage::QUEUED {
        let args = dead_queue_args(kind.queue_type, kind.dead_max_length);
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
        bind_lanes(channel, &dead, &dlx, stage).await?;
    }
    Ok(())
}

/// Binds `queue` to `exchange` with the keys of the lanes above the lowest
/// (the lowest, the bare stage key, is bound by the declaration).
async fn bind_lanes(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    stage: Stage,
) -> Result<(), BrokerError> {
    for priority in &LANES[1..] {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key(stage, *priority).as_str().into(),
                QueueBindOptions::default(),
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
    let kind = Kind::of(settings);
    let mut channel = connection.create_channel().await?;
    declare_work(&channel, names, &settings.retry_tiers, kind).await?;
    let dlx = names.dead_letter_exchange();
    for stage in Stage::QUEUED {
        let dead = names.dead_queue(stage);
        let args = dead_queue_args(kind.queue_type, kind.dead_max_length);
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
        bind_lanes(&channel, &dead, &dlx, stage).await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e) if e.get_id() == PRECONDITION_FAILED)
}

/// Declares the exchanges, the stage queues (or lanes) and the delay tiers.
async fn declare_work(
    channel: &Channel,
    names: &Names,
    tiers: &[Duration],
    kind: Kind,
) -> Result<(), BrokerError> {
    let work = names.work_exchange();
    let retry = names.retry_exchange();
    let dlx = names.dead_letter_exchange();
    declare_exchange(channel, &work, ExchangeKind::Direct).await?;
    // Delayed messages keep their stage routing key, so the tier is chosen by a header.
    declare_exchange(channel, &retry, ExchangeKind::Headers).await?;
    declare_exchange(channel, &dlx, ExchangeKind::Direct).await?;

    for stage in Stage::QUEUED {
        match kind.queue_type {
            QueueType::Classic => {
                let mut args = FieldTable::default();
                args.insert(
                    "x-max-priority".into(),
                    AMQPValue::ShortShortUInt(Priority::MAX_AMQP),
                );
                args.insert("x-dead-letter-exchange".into(), long(&dlx));
                kind.base(&mut args);
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
                bind_lanes(channel, &queue, &work, stage).await?;
            }
            QueueType::Quorum => {
                for priority in LANES {
                    let mut args = FieldTable::default();
                    args.insert("x-dead-letter-exchange".into(), long(&dlx));
                    // Every lane dead-letters under the bare stage key, the
                    // one its dead queue is bound with.
                    args.insert("x-dead-letter-routing-key".into(), long(stage.as_str()));
                    args.insert(
                        "x-delivery-limit".into(),
                        AMQPValue::LongLongInt(i64::from(kind.delivery_limit)),
                    );
                    kind.base(&mut args);
                    declare_bound_queue(
                        channel,
                        &lane_queue(names, stage, priority),
                        args,
                        &work,
                        &routing_key(stage, priority),
                        FieldTable::default(),
                    )
                    .await?;
                }
            }
        }
    }

    for tier in tiers {
        let mut args = FieldTable::default();
        // Quorum queues expire messages (queue and per-message TTL) since
        // RabbitMQ 3.10, at the head only, as classic queues do.
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(tier.as_millis() as i64),
        );
        // Expired messages go back to the work exchange with their routing
        // key, so to their stage and lane.
        args.insert("x-dead-letter-exchange".into(), long(&work));
        kind.base(&mut args);
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
        // Every lane, whatever the mode: deleting a queue that does not
        // exist is a no-op for the broker.
        let lanes = work_queues(names, QueueType::Quorum, stage).into_iter();
        for queue in lanes.map(|(q, _)| q).chain([names.dead_queue(stage)]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_named_and_routed_from_the_stage() {
        let names = Names::new("contexten");
        assert_eq!(routing_key(Stage::Generate, Priority::Batch), "generate");
        assert_eq!(
            routing_key(Stage::Generate, Priority::Operator),
            "generate.p3"
        );
        assert_eq!(
            lane_queue(&names, Stage::Dispatch, Priority::Normal),
            "contexten.dispatch.p1"
        );
        assert_eq!(
            lane_queue(&names, Stage::Dispatch, Priority::Batch),
            names.stage_queue(Stage::Dispatch)
        );
        let quorum: Vec<_> = work_queues(&names, QueueType::Quorum, Stage::Agent)
            .into_iter()
            .map(|(q, p)| (q, p.amqp()))
            .collect();
        assert_eq!(
            quorum,
            [
                ("contexten.agent.p3".to_owned(), 3),
                ("contexten.agent.p2".to_owned(), 2),
                ("contexten.agent.p1".to_owned(), 1),
                ("contexten.agent".to_owned(), 0),
            ]
        );
        assert_eq!(
            work_queues(&names, QueueType::Classic, Stage::Agent),
            [("contexten.agent".to_owned(), Priority::Operator)]
        );
        for priority in LANES {
            assert_eq!(
                without_lane(&routing_key(Stage::Context, priority)),
                "context"
            );
        }
    }
}
