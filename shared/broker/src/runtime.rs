//! The consumer runtime: one connection per session (reconnected with backoff), a
//! consume channel with a prefetch, a confirm channel for successors, and one
//! task per delivery. Outcomes become broker actions in [`apply`], the only place
//! that acks. Each delivery is counted before its handler runs ([`poison`]); one
//! delivered more than `MAX_DELIVERIES` times without an outcome is dead-lettered
//! as `poison`.
//!
//! In quorum mode (`QUEUE_TYPE=quorum`) a stage has one queue per priority lane
//! ([`topology::work_queues`]): the runtime consumes every lane with twice
//! the prefetch each, holds what arrives, and starts at most `WORKER_PREFETCH`
//! handlers, always the highest lane's delivery first. The broker counts
//! redeliveries (`x-delivery-count`); on the last one `QUORUM_DELIVERY_LIMIT`
//! allows, the runtime sets the message aside as `poison` itself (dead letter
//! and failure answer) rather than let the broker drop it into the dead queue
//! unanswered on the next return.

use crate::failure::failure_text;
use crate::lanes::{Lanes, Pick};
use crate::poison::{self, Begin};
use crate::publisher::{Route, long};
use crate::{
    BrokerError, DeadReason, Handler, Next, Outcome, Publisher, RetryPolicy, Store, connect,
    topology,
};
use contexten_config::{BrokerSettings, QueueType};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_AT_MS, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, HEADER_DEAD_STAGE,
    HEADER_PAYLOAD_REF, HEADER_RETRY_TIER, Names, Reason, ReplyKind, STATUS_RESULT_FIELD, Stage,
    StageTiming, TaskEnvelope, TaskResult, now_ms, tier_label,
};
use contexten_telemetry::health::Readiness;
use contexten_telemetry::{metric, propagation};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything a worker needs besides its handler.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The binary's name (connection name, logs, metrics).
    pub service: &'static str,
    /// The stage whose queue this worker consumes.
    pub stage: Stage,
    pub broker: BrokerSettings,
    /// Shared with the health server: the runtime reports `broker` here.
    pub readiness: Readiness,
}

/// State shared by the deliveries of one broker session.
struct Session<H> {
    stage: Stage,
    names: Names,
    publisher: Publisher,
    store: Store,
    policy: RetryPolicy,
    handler: Arc<H>,
    /// `MAX_DELIVERIES`.
    max_deliveries: u32,
    /// `QUORUM_DELIVERY_LIMIT` in quorum mode: the broker's own limit.
    delivery_limit: Option<u32>,
}

/// The header in which quorum queues count a message's returns.
const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// The deliveries of every lane, tagged with the lane's AMQP priority.
type Intake = SelectAll<BoxStream<'static, (u8, Result<Delivery, lapin::Error>)>>;

/// A consuming channel: its consumers (one per queue) and, in quorum mode,
/// the lanes' deliveries waiting for a handler slot.
struct Consuming {
    channel: lapin::Channel,
    intake: Intake,
    tags: Vec<String>,
    /// `Some` in quorum mode.
    lanes: Option<Lanes<Delivery>>,
}

/// Consumes `options.stage` until `shutdown` is cancelled, then stops consuming,
/// lets in-flight deliveries finish within the shutdown deadline and returns.
pub async fn run_worker<H: Handler>(
    options: WorkerOptions,
    store: Store,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let handler = Arc::new(handler);
    let names = Names::new(options.broker.prefix.clone());
    let policy = RetryPolicy::new(
        options.broker.retry_tiers.clone(),
        options.broker.max_attempts,
    );
    let mut in_flight = JoinSet::new();
    let mut first = true;
    loop {
        let Some(connection) =
            connect::connect_with_backoff(&options.broker, options.service, &shutdown).await
        else {
            break;
        };
        if !first {
            metric::broker_reconnected(options.service);
        }
        first = false;
        let session =
            match open_session(&options, &connection, &names, &store, &policy, &handler).await {
                Ok(session) => Arc::new(session),
                Err(error) => {
                    tracing::warn!(%error, "could not open a broker session; reconnecting");
                    let _ = connection.close(0, "session failed".into()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
        let consume = match consume(&options, &connection, &names).await {
            Ok(consume) => consume,
            Err(error) => {
                tracing::warn!(%error, "could not start consuming; reconnecting");
                let _ = connection.close(0, "consume failed".into()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut consuming = consume;
        options.readiness.set("broker", true, "connected");
        tracing::info!(
            stage = %options.stage,
            prefetch = options.broker.prefetch,
            queue_type = options.broker.queue_type.as_str(),
            "consuming"
        );
        let slots = usize::from(options.broker.prefetch);

        let stopping = loop {
            // Quorum mode: start held deliveries, highest lane first, while
            // handler slots are free, or learn when to look again.
            let mut look_again = None;
            if let Some(lanes) = consuming.lanes.as_mut() {
                while in_flight.len() < slots {
                    match lanes.pick(tokio::time::Instant::now()) {
                        Pick::Start((lane, delivery)) => {
                            in_flight.spawn(process(session.clone(), delivery, lane));
                        }
                        Pick::WaitUntil(at) => {
                            look_again = Some(at);
                            break;
                        }
                        Pick::Idle => break,
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break true,
                next = consuming.intake.next() => match next {
                    Some((lane, Ok(delivery))) => match consuming.lanes.as_mut() {
                        None => {
                            in_flight.spawn(process(session.clone(), delivery, lane));
                        }
                        Some(lanes) => lanes.arrived(lane, delivery),
                    },
                    Some((_, Err(error))) => {
                        tracing::warn!(%error, "consumer failed; reconnecting");
                        break false;
                    }
                    None => {
                        tracing::warn!("consumer cancelled by the broker; reconnecting");
                        break false;
                    }
                },
                _ = tokio::time::sleep_until(look_again.unwrap_or_else(tokio::time::Instant::now)),
                    if look_again.is_some() => {}
                Some(finished) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let (Some(lanes), Ok(lane)) = (consuming.lanes.as_mut(), finished) {
                        lanes.finished(lane, tokio::time::Instant::now());
                    }
                }
            }
        };
        options.readiness.set(
            "broker",
            false,
            if stopping {
                "shutting down"
            } else {
                "reconnecting"
            },
        );
        if stopping {
            // Stop new deliveries first; unacked prefetched ones return to the queue
            // when the connection closes.
            for tag in &consuming.tags {
                let _ = consuming
                    .channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
            }
            // Held deliveries that never started return to their queues with
            // the connection.
            drain(&mut in_flight, options.broker.shutdown_timeout).await;
            let _ = connection.close(200, "shutdown".into()).await;
            return Ok(());
        }
        let _ = connection.close(0, "reconnecting".into()).await;
    }
    drain(&mut in_flight, options.broker.shutdown_timeout).await;
    Ok(())
}

async fn open_session<H>(
    options: &WorkerOptions,
    connection: &Connection,
    names: &Names,
    store: &Store,
    policy: &RetryPolicy,
    handler: &Arc<H>,
) -> Result<Session<H>, BrokerError> {
    topology::declare_for(connection, names, &options.broker).await?;
    let publisher = Publisher::new(
        connection,
        names.clone(),
        Some(store.clone()),
        options.broker.payload_inline_limit,
    )
    .await?
    .with_confirm_timeout(options.broker.publish_confirm_timeout);
    Ok(Session {
        stage: options.stage,
        names: names.clone(),
        publisher,
        store: store.clone(),
        policy: policy.clone(),
        handler: handler.clone(),
        max_deliveries: options.broker.max_deliveries,
        delivery_limit: (options.broker.queue_type == QueueType::Quorum)
            .then_some(options.broker.delivery_limit),
    })
}

/// Consumes the stage's queue (classic) or every lane of it (quorum), the
/// highest lane first, each with the worker's prefetch.
async fn consume(
    options: &WorkerOptions,
    connection: &Connection,
    names: &Names,
) -> Result<Consuming, BrokerError> {
    let channel = connection.create_channel().await?;
    let quorum = options.broker.queue_type == QueueType::Quorum;
    // Per consumer. A lane may fill every handler slot on its own and keeps
    // as many again waiting, so when a handler finishes the next delivery of
    // a busy high lane is already here, not still on its way while a lower
    // lane's waits (quorum queues refuse a channel-wide prefetch).
    let prefetch = if quorum {
        options.broker.prefetch.saturating_mul(2)
    } else {
        options.broker.prefetch
    };
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let queues = topology::work_queues(names, options.broker.queue_type, options.stage);
    let mut waiting = Vec::new();
    let mut intake = SelectAll::new();
    let mut tags = Vec::with_capacity(queues.len());
    for (queue, priority) in queues {
        let lane = priority.amqp();
        if quorum {
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            };
            let state = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await?;
            if state.message_count() > 0 {
                waiting.push(lane);
            }
        }
        let tag = format!("{}-{}", options.service, uuid::Uuid::now_v7());
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        intake.push(consumer.map(move |d| (lane, d)).boxed());
        tags.push(tag);
    }
    let now = tokio::time::Instant::now();
    Ok(Consuming {
        channel,
        intake,
        tags,
        lanes: quorum.then(|| Lanes::new(prefetch, waiting, now)),
    })
}

/// Waits for in-flight deliveries up to `deadline`; what is left is requeued by
/// the broker when the connection closes.
async fn drain(in_flight: &mut JoinSet<u8>, deadline: Duration) {
    let pending = in_flight.len();
    if pending == 0 {
        return;
    }
    tracing::info!(pending, "finishing in-flight deliveries");
    let finished = tokio::time::timeout(deadline, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            left = in_flight.len(),
            "shutdown deadline reached; the broker requeues the rest"
        );
        in_flight.abort_all();
    }
}

/// The headers of a delivery as strings (integers rendered in decimal).
fn string_headers(properties: &BasicProperties) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(table) = properties.headers() {
        for (key, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::ShortUInt(n) => n.to_string(),
                AMQPValue::ShortShortUInt(n) => n.to_string(),
                _ => continue,
            };
            map.insert(key.as_str().to_owned(), text);
        }
    }
    map
}

/// Handles one delivery; returns its lane (for [`Lanes::finished`]).
async fn process<H: Handler>(session: Arc<Session<H>>, delivery: Delivery, lane: u8) -> u8 {
    handle_delivery(session, delivery).await;
    lane
}

async fn handle_delivery<H: Handler>(session: Arc<Session<H>>, delivery: Delivery) {
    let stage = session.stage;
    metric::received(stage.as_str());
    let headers = string_headers(&delivery.properties);
    let attempt: u32 = headers
        .get(HEADER_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);

    let body = match headers.get(HEADER_PAYLOAD_REF) {
        None => delivery.data.clone(),
        Some(key) => match session.store.get_payload(key).await {
            Ok(body) => body,
            Err(BrokerError::PayloadMissing(key)) => {
                let detail = format!("the large payload {key} is gone from redis");
                return settle(
                    &delivery,
                    dead_letter_raw(&session, &delivery, attempt, "payload_missing", &detail).await,
                )
                .await;
            }
            Err(error) => {
                return settle(
                    &delivery,
                    retry_raw(&session, &delivery, attempt, &error.to_string()).await,
                )
                .await;
            }
        },
    };
    let redeliveries = broker_returns(&delivery);
    let envelope = match TaskEnvelope::from_json(&body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(stage = %stage, reason = %error.reason_code(), %error, "unusable message");
            return settle(
                &delivery,
                dead_letter_raw(
                    &session,
                    &delivery,
                    attempt,
                    error.reason_code().as_str(),
                    &error.to_string(),
                )
                .await,
            )
            .await;
        }
    };

    // A consumer span per delivery, the child of the producer span whose context
    // the message carries: one task is one trace (docs/design.md §8).
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {stage}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %session.names.stage_queue(stage),
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.message.id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            .unwrap_or_default(),
        messaging.message.delivery_count = attempt + 1,
        contexten.outcome = tracing::field::Empty,
        contexten.dead_letter.reason = tracing::field::Empty,
        stage = stage.as_str(),
        task_id = %envelope.task_id,
        correlation_id = %envelope.correlation_id,
        attempt,
        hop = envelope.hop,
    );
    propagation::adopt_parent(&span, &headers);
    let result = handle_envelope(&session, envelope, attempt, redeliveries)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    settle(&delivery, result).await;
}

async fn handle_envelope<H: Handler>(
    session: &Session<H>,
    mut envelope: TaskEnvelope,
    attempt: u32,
    redeliveries: Option<u32>,
) -> Result<(), BrokerError> {
    let stage = session.stage;
    envelope.attempt = attempt;
    let begun = poison::begin(&session.store, stage, &envelope).await;
    if let Ok(Begin::Complete) = begun {
        metric::duplicate_skipped(stage.as_str());
        tracing::info!("already completed by this stage; acking the redelivery");
        return Ok(());
    }
    // Quorum mode: the broker's count needs no Redis and survives every
    // crash. On the last delivery it allows, the message is set aside here,
    // answered, instead of by the broker on the next return, unanswered.
    if let (Some(limit), Some(count)) = (session.delivery_limit, redeliveries)
        && count >= limit
    {
        let detail = format!(
            "returned to its queue {count} times (QUORUM_DELIVERY_LIMIT {limit}): \
             the worker died, the handler panicked or the outcome could not be settled"
        );
        let trace = propagation::inject(&tracing::Span::current());
        let reason = DeadReason::new(Reason::Poison, detail);
        return dead_letter(session, &envelope, &reason, None, &trace).await;
    }
    // Without Redis the delivery is handled uncounted: a Redis outage must not
    // dead-letter healthy work; counting resumes with Redis (in quorum mode
    // the broker's count above still holds).
    let counted = match begun {
        Ok(Begin::Complete) => return Ok(()),
        Ok(Begin::Delivery(count)) if count > session.max_deliveries => {
            let detail = format!(
                "delivered {count} times without an outcome (MAX_DELIVERIES {}): \
                 the worker died or the handler panicked handling it",
                session.max_deliveries
            );
            let trace = propagation::inject(&tracing::Span::current());
            let reason = DeadReason::new(Reason::Poison, detail);
            return dead_letter(session, &envelope, &reason, None, &trace).await;
        }
        Ok(Begin::Delivery(_)) => true,
        Err(_) => {
            metric::redis_degraded("completion");
            false
        }
    };
    let input = envelope.clone();
    envelope.timings.push(StageTiming {
        stage,
        started_at_ms: now_ms(),
        finished_at_ms: None,
    });
    let started = Instant::now();
    // A panic would leave the delivery unacked until the connection closes; it
    // is requeued instead and, its count kept, becomes `poison` if it recurs.
    let handled = AssertUnwindSafe(session.handler.handle(envelope))
        .catch_unwind()
        .await;
    let Ok(outcome) = handled else {
        metric::finished(stage.as_str(), "panic", started.elapsed());
        tracing::error!("the handler panicked; requeueing the delivery");
        return Err(BrokerError::HandlerPanicked);
    };
    metric::finished(stage.as_str(), outcome.label(), started.elapsed());
    let result = apply(session, &input, outcome).await;
    if result.is_err() && counted {
        // Requeued by the runtime itself (see `settle`): not a crash.
        poison::release(&session.store, stage, &input).await;
    }
    result
}

/// Turns an outcome into broker actions; returns once every successor is confirmed.
async fn apply<H>(
    session: &Session<H>,
    input: &TaskEnvelope,
    outcome: Outcome,
) -> Result<(), BrokerError> {
    let stage = session.stage;
    let trace = propagation::inject(&tracing::Span::current());
    let span = tracing::Span::current();
    span.record("contexten.outcome", outcome.label());
    let state = match outcome {
        Outcome::Done => "done".to_owned(),
        Outcome::Forward(nexts) => {
            let mut targets = Vec::with_capacity(nexts.len());
            for (
                i,
                Next {
                    stage: to,
                    envelope,
                    delay,
                },
            ) in nexts.into_iter().enumerate()
            {
                let mut next = *envelope;
                finish_timing(&mut next, stage);
                next.hop = input.hop + 1 + i as u32;
                next.attempt = 0;
                let route = match delay {
                    None => Route::Now,
                    Some(delay) => Route::After {
                        tier: session.policy.tier_for(delay),
                        delay,
                    },
                };
                match session
                    .publisher
                    .publish_envelope(to, &next, route, &trace)
                    .await
                {
                    Err(BrokerError::Unroutable {
                        exchange,
                        routing_key,
                    }) => {
                        let detail = format!("no queue bound for {routing_key} on {exchange}");
                        let reason = DeadReason::new(Reason::Unroutable, detail);
                        return dead_letter(session, input, &reason, None, &trace).await;
                    }
                    other => other?,
                }
                targets.push(to.as_str());
            }
            tracing::info!(to = ?targets, "forwarded");
            format!("queued:{}", targets.join(","))
        }
        Outcome::RetryAfter(requested, reason) => {
            let retry = input.attempt + 1;
            if retry >= session.policy.max_attempts() {
                let detail = format!(
                    "gave up after {} attempts; last error {}: {}",
                    retry, reason.code, reason.detail
                );
                let exhausted = DeadReason::new(Reason::RetriesExhausted, detail);
                let cause = Some(reason.code.as_str());
                return dead_letter(session, input, &exhausted, cause, &trace).await;
            }
            let delay = session.policy.delay(retry, requested);
            let mut next = input.clone();
            next.hop = input.hop + 1;
            next.attempt = retry;
            let route = Route::After {
                tier: session.policy.tier_for(delay),
                delay,
            };
            session
                .publisher
                .publish_envelope(stage, &next, route, &trace)
                .await?;
            metric::retried(stage.as_str(), reason.code.as_str());
            tracing::info!(retry, delay_ms = delay.as_millis() as u64, reason = %reason.code, detail = %reason.detail, "retry scheduled");
            "retrying".to_owned()
        }
        Outcome::DeadLetter(reason) => {
            return dead_letter(session, input, &reason, None, &trace).await;
        }
    };
    record(session, input, &state).await;
    Ok(())
}

fn finish_timing(envelope: &mut TaskEnvelope, stage: Stage) {
    let now = now_ms();
    match envelope.timings.iter_mut().rev().find(|t| t.stage == stage) {
        Some(timing) if timing.finished_at_ms.is_none() => timing.finished_at_ms = Some(now),
        Some(_) => {}
        None => envelope.timings.push(StageTiming {
            stage,
            started_at_ms: now,
            finished_at_ms: Some(now),
        }),
    }
}

async fn record<H>(session: &Session<H>, input: &TaskEnvelope, state: &str) {
    let mut finished = input.clone();
    finish_timing(&mut finished, session.stage);
    // An acknowledgement or progress note runs beside the task: it marks its own
    // message done but must not overwrite the task's state or stage.
    let side_message = matches!(input.reply, Some(ReplyKind::Ack | ReplyKind::Progress));
    // Every final answer passes through dispatch, whatever its target (one with
    // no callback, `ReplyTarget::None`, too), so the API can read it here.
    // Stored before the state, so a reader that sees the task final finds it.
    if session.stage == Stage::Dispatch && !side_message {
        let key = session.names.status_key(input.task_id);
        let answer = answer_record(input);
        let stored = session
            .store
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.cmd("EVAL")
                    .arg(STORE_ANSWER)
                    .arg(1)
                    .arg(&key)
                    .arg(STATUS_RESULT_FIELD)
                    .arg(answer)
                    .ignore();
                p
            })
            .await;
        if stored.is_err() {
            metric::redis_degraded("answer");
        }
    }
    let recorded = if side_message {
        session
            .store
            .record_side_completion(session.stage, &finished)
            .await
    } else {
        session
            .store
            .record_completion(session.stage, &finished, state)
            .await
    };
    if recorded.is_err() {
        metric::redis_degraded("completion");
    }
}

/// Writes a task's answer into its status record only if the record exists
/// (so its TTL is kept and no record without one is created) and only once:
/// the first final answer dispatch handles is the one the dispatcher posts.
const STORE_ANSWER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"#;
/// The longest answer text kept in the status record; past it the text is cut
/// with [`TRUNCATED_MARKER`] (the callback, if any, carries it whole).
const ANSWER_TEXT_LIMIT: usize = 1 << 20;
/// The longest summary kept (it is a sentence or a paragraph).
const ANSWER_SUMMARY_LIMIT: usize = 64 << 10;
/// Pull request links kept at most.
const ANSWER_MAX_LINKS: usize = 100;
/// Appended to a text cut at [`ANSWER_TEXT_LIMIT`].
const TRUNCATED_MARKER: &str = "\n[contexten: truncated; the stored answer keeps the first 1 MiB]";

/// The answer as the status record keeps it (the `result` field): the result's
/// known fields (its `extra` map is dropped: fields this version does not know
/// could hold anything), bounded in size, with the task's cost and fallback
/// reason. ingest's `GET /v1/tasks/{id}` reads it back.
fn answer_record(envelope: &TaskEnvelope) -> String {
    let reply = envelope.reply.unwrap_or(ReplyKind::Final);
    let mut answer = serde_json::json!({
        "v": 1,
        "reply": reply,
        "cost": envelope.cost,
        "fallback_reason": envelope.fallback_reason,
        "recorded_at_ms": now_ms(),
    });
    if let Some(result) = &envelope.result {
        let (text, truncated) = match result.text.as_deref() {
            Some(text) if text.len() > ANSWER_TEXT_LIMIT => {
                let cut = cut_at(text, ANSWER_TEXT_LIMIT - TRUNCATED_MARKER.len());
                (Some(format!("{cut}{TRUNCATED_MARKER}")), true)
            }
            other => (other.map(str::to_owned), false),
        };
        let fields = serde_json::json!({
            "kind": result.kind,
            "produced_by": result.produced_by,
            "summary": cut_at(&result.summary, ANSWER_SUMMARY_LIMIT),
            "text": text,
            "text_truncated": truncated,
            "language": result.language,
            "web_url": result.web_url,
            "pull_requests": result.pull_requests.iter().take(ANSWER_MAX_LINKS).collect::<Vec<_>>(),
            "reason": result.reason,
        });
        if let (Some(answer), serde_json::Value::Object(fields)) = (answer.as_object_mut(), fields)
        {
            answer.extend(fields);
        }
    }
    answer.to_string()
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a
/// character boundary.
fn cut_at(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Dead-letters `input` with its reason and, unless dispatch itself failed, sends
/// the requester a failure answer (docs/design.md §2: silence is a bug): the reason code
/// and its sentence ([`failure_text`]); the detail stays in the header and the log.
/// `cause` is the last retry's code when the retries are spent.
async fn dead_letter<H>(
    session: &Session<H>,
    input: &TaskEnvelope,
    reason: &DeadReason,
    cause: Option<&str>,
    trace: &HashMap<String, String>,
) -> Result<(), BrokerError> {
    let stage = session.stage;
    let (code, detail) = (reason.code.as_str(), reason.detail.as_str());
    let span = tracing::Span::current();
    span.record("contexten.outcome", "dead_letter");
    span.record("contexten.dead_letter.reason", code);
    span.record("otel.status_code", "ERROR");
    let mut table = FieldTable::default();
    for (key, value) in trace {
        table.insert(key.as_str().into(), long(value));
    }
    dead_headers(&mut table, stage, input.attempt, code, detail);
    let published = session
        .publisher
        .publish_raw(crate::PublishedMessage {
            exchange: session.names.dead_letter_exchange(),
            routing_key: stage.as_str().to_owned(),
            body: input.to_json(),
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(input.message_id(stage).into())
                .with_correlation_id(input.correlation_id.as_str().into())
                .with_headers(table),
        })
        .await;
    refused_when_full(stage, code, detail, published)?;
    metric::dead_lettered(stage.as_str(), code);
    tracing::warn!(reason = code, detail, "dead-lettered");
    if stage != Stage::Dispatch {
        let mut answer = input.clone();
        finish_timing(&mut answer, stage);
        answer.hop = input.hop + 1;
        answer.attempt = 0;
        answer.result = Some(TaskResult::failure(
            stage,
            code,
            failure_text(stage, code, cause),
        ));
        answer.reply = Some(ReplyKind::Failure);
        session
            .publisher
            .publish_envelope(Stage::Dispatch, &answer, Route::Now, trace)
            .await?;
    }
    record(session, input, &format!("dead_lettered:{code}")).await;
    Ok(())
}

/// A dead queue at `DEAD_QUEUE_MAX_LENGTH` nacks a dead letter (`x-overflow`
/// `reject-publish`, see [`topology`]): the letter is then only logged and
/// counted, and the task goes on to its failure answer and ack. Requeueing it
/// instead would run its handler again and again while the queue stays full.
fn refused_when_full(
    stage: Stage,
    code: &str,
    detail: &str,
    published: Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    match published {
        Err(BrokerError::Nacked) => {
            metric::dead_letter_refused(stage.as_str(), code);
            tracing::error!(
                reason = code,
                detail,
                "the dead queue is full (DEAD_QUEUE_MAX_LENGTH): this dead letter is only logged"
            );
            Ok(())
        }
        other => other,
    }
}

fn dead_headers(table: &mut FieldTable, stage: Stage, attempt: u32, code: &str, detail: &str) {
    table.insert(HEADER_DEAD_REASON.into(), long(code));
    table.insert(HEADER_DEAD_DETAIL.into(), long(detail));
    table.insert(HEADER_DEAD_STAGE.into(), long(stage.as_str()));
    table.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    table.insert(HEADER_DEAD_AT_MS.into(), AMQPValue::LongLongInt(now));
}

/// Dead-letters a delivery that is not a usable envelope, bytes unchanged.
async fn dead_letter_raw<H>(
    session: &Session<H>,
    delivery: &Delivery,
    attempt: u32,
    code: &str,
    detail: &str,
) -> Result<(), BrokerError> {
    let stage = session.stage;
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    dead_headers(&mut table, stage, attempt, code, detail);
    let published = session
        .publisher
        .publish_raw(crate::PublishedMessage {
            exchange: session.names.dead_letter_exchange(),
            routing_key: stage.as_str().to_owned(),
            body: delivery.data.clone(),
            properties: delivery
                .properties
                .clone()
                .with_delivery_mode(2)
                .with_headers(table),
        })
        .await;
    refused_when_full(stage, code, detail, published)?;
    metric::dead_lettered(stage.as_str(), code);
    Ok(())
}

/// Re-queues a delivery whose body could not be read yet (Redis down), bytes and
/// headers unchanged, counting an attempt.
async fn retry_raw<H>(
    session: &Session<H>,
    delivery: &Delivery,
    attempt: u32,
    error: &str,
) -> Result<(), BrokerError> {
    let retry = attempt + 1;
    if retry >= session.policy.max_attempts() {
        let detail = format!("payload unreadable after {retry} attempts: {error}");
        return dead_letter_raw(session, delivery, attempt, "retries_exhausted", &detail).await;
    }
    let delay = session.policy.delay(retry, Duration::ZERO);
    let tier = session.policy.tier_for(delay);
    // A new message: the quorum queue's count of the old one's returns must
    // not travel with it (it would count toward the new one's limit).
    let kept = delivery.properties.headers().as_ref().map(|headers| {
        headers
            .inner()
            .iter()
            .filter(|(key, _)| key.as_str() != HEADER_DELIVERY_COUNT)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    let mut table = FieldTable::from(kept.unwrap_or_default());
    table.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(retry));
    table.insert(HEADER_RETRY_TIER.into(), long(&tier_label(tier)));
    session
        .publisher
        .publish_raw(crate::PublishedMessage {
            exchange: session.names.retry_exchange(),
            // The delivery's own key: back to its stage and lane.
            routing_key: delivery.routing_key.as_str().to_owned(),
            body: delivery.data.clone(),
            properties: delivery
                .properties
                .clone()
                .with_expiration(delay.as_millis().to_string().into())
                .with_headers(table),
        })
        .await?;
    metric::retried(session.stage.as_str(), "redis_unavailable");
    Ok(())
}

/// A quorum queue's count of a delivery's earlier returns (`x-delivery-count`);
/// `None` on a first delivery and on classic queues.
fn delivery_count(properties: &BasicProperties) -> Option<u32> {
    match properties
        .headers()
        .as_ref()?
        .inner()
        .get(HEADER_DELIVERY_COUNT)?
    {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// The broker's count of a redelivered message's returns. A first delivery
/// has none, even when the message carries the header: a republished copy (a
/// payload retry, an operator's replay) brings the old message's count along.
fn broker_returns(delivery: &Delivery) -> Option<u32> {
    if delivery.redelivered {
        delivery_count(&delivery.properties)
    } else {
        None
    }
}

/// How long to hold a delivery before requeueing it: 200 ms, doubling with
/// each return a quorum queue counted, up to 15 s. Every return counts toward
/// `QUORUM_DELIVERY_LIMIT`, so a broker alarm of a few minutes must not use
/// the limit up (20 returns take about 3.5 minutes).
fn requeue_pause(returns: Option<u32>) -> Duration {
    let doublings = returns.unwrap_or(0).min(7);
    (Duration::from_millis(200) * 2u32.pow(doublings)).min(Duration::from_secs(15))
}

/// Acks a delivery whose successors are confirmed; otherwise requeues it so the
/// broker redelivers it (a failed ack on a dead channel requeues it as well).
async fn settle(delivery: &Delivery, result: Result<(), BrokerError>) {
    match result {
        Ok(()) => {
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(%error, "ack failed; the broker will redeliver");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not settle the outcome; requeueing");
            // A pause so a broker-side problem does not become a hot loop.
            tokio::time::sleep(requeue_pause(broker_returns(delivery))).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            let _ = delivery.acker.nack(requeue).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{Request, ResultKind, Source, SourceKind};

    fn final_answer(text: String) -> TaskEnvelope {
        let mut envelope = TaskEnvelope::new(
            Source {
                kind: SourceKind::API,
                delivery_id: None,
                requested_by: Some("client".into()),
                reply_to: contexten_envelope::ReplyTarget::None,
                extra: Default::default(),
            },
            Request::default(),
        );
        let mut result = TaskResult::failure(Stage::Generate, "x", "Here it is.");
        result.kind = ResultKind::Code;
        result.reason = None;
        result.text = Some(text);
        result
            .extra
            .insert("prompt".into(), "the whole prompt".into());
        envelope.result = Some(result);
        envelope.reply = Some(ReplyKind::Final);
        envelope.cost.llm_calls = 2;
        envelope.fallback_reason = Some("generation_invalid".into());
        envelope
    }

    #[test]
    fn the_requeue_pause_grows_with_the_brokers_count_and_is_bounded() {
        assert_eq!(requeue_pause(None), Duration::from_millis(200));
        assert_eq!(requeue_pause(Some(1)), Duration::from_millis(400));
        assert_eq!(requeue_pause(Some(6)), Duration::from_millis(12_800));
        assert_eq!(requeue_pause(Some(50)), Duration::from_secs(15));
        let total: Duration = (0..20).map(|n| requeue_pause(Some(n))).sum();
        assert!(total > Duration::from_secs(180), "{total:?}");
    }

    #[test]
    fn the_brokers_count_is_read_in_any_integer_type() {
        for value in [
            AMQPValue::LongLongInt(3),
            AMQPValue::LongInt(3),
            AMQPValue::ShortShortUInt(3),
        ] {
            let mut table = FieldTable::default();
            table.insert(HEADER_DELIVERY_COUNT.into(), value);
            let properties = BasicProperties::default().with_headers(table);
            assert_eq!(delivery_count(&properties), Some(3));
        }
        assert_eq!(delivery_count(&BasicProperties::default()), None);
    }

    #[test]
    fn the_stored_answer_keeps_the_known_fields_cost_and_fallback_but_not_extras() {
        let stored: serde_json::Value =
            serde_json::from_str(&answer_record(&final_answer("fn main() {}".into()))).unwrap();
        assert_eq!(stored["kind"], "code");
        assert_eq!(stored["reply"], "final");
        assert_eq!(stored["text"], "fn main() {}");
        assert_eq!(stored["text_truncated"], false);
        assert_eq!(stored["cost"]["llm_calls"], 2);
        assert_eq!(stored["fallback_reason"], "generation_invalid");
        assert!(stored.get("prompt").is_none(), "{stored}");
    }

    #[test]
    fn a_text_over_the_limit_is_cut_on_a_character_boundary_with_a_marker() {
        let text = "é".repeat(ANSWER_TEXT_LIMIT);
        let stored: serde_json::Value =
            serde_json::from_str(&answer_record(&final_answer(text))).unwrap();
        let kept = stored["text"].as_str().unwrap();
        assert!(kept.len() <= ANSWER_TEXT_LIMIT, "{}", kept.len());
        assert!(kept.ends_with(TRUNCATED_MARKER));
        assert_eq!(stored["text_truncated"], true);
    }
}
