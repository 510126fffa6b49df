//! The foundation benchmark's raw lapin loop, shared so that other benchmarks
//! (ingest's load test) compare themselves with exactly the same reference,
//! measured in the same run. Only built with the `bench` feature.

use crate::{Publisher, Store, topology};
use contexten_envelope::{Names, Stage, TaskEnvelope};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::time::{Duration, Instant};

/// Publishes in flight at most, waiting for confirms (the foundation benchmark's window).
pub const CONFIRM_WINDOW: usize = 256;

/// Consumer prefetch of the foundation benchmark.
pub const PREFETCH: u16 = 64;

/// Publishes every envelope to `stage` with up to `window` confirms outstanding.
pub async fn publish_all(
    publisher: &Publisher,
    stage: Stage,
    envelopes: &[TaskEnvelope],
    window: usize,
) {
    let mut pending = FuturesUnordered::new();
    for env in envelopes {
        if pending.len() >= window {
            let confirmed: Result<(), _> = pending.next().await.expect("pending");
            confirmed.expect("confirmed");
        }
        pending.push(publisher.publish(stage, env));
    }
    while let Some(result) = pending.next().await {
        result.expect("confirmed");
    }
}

/// The raw publish-confirm/consume/ack loop: `envelopes` published to `stage`'s
/// queue through `publisher` while a plain lapin consumer on its own connection
/// (prefetch `prefetch`) acks them. Returns messages per second.
pub async fn publish_consume_ack(
    amqp_url: &str,
    publisher: &Publisher,
    queue: &str,
    stage: Stage,
    envelopes: &[TaskEnvelope],
    prefetch: u16,
) -> f64 {
    let n = envelopes.len();
    let consumer_conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("consumer connection");
    let channel = consumer_conn.create_channel().await.expect("channel");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    let consume = async {
        for _ in 0..n {
            let delivery = consumer.next().await.expect("delivery").expect("ok");
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
        }
    };
    tokio::join!(
        publish_all(publisher, stage, envelopes, CONFIRM_WINDOW),
        consume
    );
    let elapsed = start.elapsed();
    let _ = consumer_conn.close(200, "raw done".into()).await;
    n as f64 / elapsed.as_secs_f64()
}

/// Removes a benchmark's topology and every Redis key under its prefix.
pub async fn remove_everything(
    connection: &Connection,
    names: &Names,
    retry_tiers: &[Duration],
    store: &Store,
) {
    let channel = connection.create_channel().await.expect("channel");
    topology::delete(&channel, names, retry_tiers)
        .await
        .expect("topology deleted");
    let mut conn = store.connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", names.prefix()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .expect("deleted");
    }
}
