// Temporary experiment (not committed): confirm latency by queue kind.
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let conn = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5600.0);
    let n: usize = 6000;
    let body = vec![b'x'; 1500];
    let kinds: Vec<(&str, FieldTable, u8)> = vec![
        (
            "prio-persist",
            table(&[("x-max-priority", AMQPValue::ShortShortUInt(3))]),
            2,
        ),
        ("plain-persist", table(&[]), 2),
        (
            "v2-persist",
            table(&[("x-queue-version", AMQPValue::LongInt(2))]),
            2,
        ),
        (
            "prio-v2-persist",
            table(&[
                ("x-max-priority", AMQPValue::ShortShortUInt(3)),
                ("x-queue-version", AMQPValue::LongInt(2)),
            ]),
            2,
        ),
        (
            "prio-transient",
            table(&[("x-max-priority", AMQPValue::ShortShortUInt(3))]),
            1,
        ),
    ];
    let ch = conn.create_channel().await.unwrap();
    for (name, args, _) in &kinds {
        for q in ["a", "b"] {
            let qn = format!("exp-{name}-{q}");
            let _ = ch
                .queue_delete(qn.as_str().into(), QueueDeleteOptions::default())
                .await;
            ch.queue_declare(
                qn.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args.clone(),
            )
            .await
            .unwrap();
        }
    }
    let mut chans = Vec::new();
    for _ in 0..4 {
        let c = conn.create_channel().await.unwrap();
        c.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        chans.push(c);
    }
    for round in 0..3 {
        for (name, _, mode) in &kinds {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let start = Instant::now();
            let mut pending = FuturesUnordered::new();
            for i in 0..n {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let q = format!("exp-{name}-{}", if i % 2 == 0 { "a" } else { "b" });
                let c = chans[i % 4].clone();
                let body = body.clone();
                let mode = *mode;
                pending.push(tokio::spawn(async move {
                    let conf = c
                        .basic_publish(
                            "".into(),
                            q.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default()
                                .with_delivery_mode(mode)
                                .with_priority(1),
                        )
                        .await
                        .unwrap();
                    conf.await.unwrap();
                    due.elapsed()
                }));
            }
            let mut l = Vec::new();
            while let Some(r) = pending.next().await {
                l.push(r.unwrap());
            }
            l.sort();
            let q =
                |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
            println!(
                "round {round} {name:<16} p50 {:.2} p90 {:.2} p99 {:.2} ms",
                q(0.5),
                q(0.9),
                q(0.99)
            );
            for qq in ["a", "b"] {
                ch.queue_purge(
                    format!("exp-{name}-{qq}").as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .unwrap();
            }
        }
    }
    for (name, _, _) in &kinds {
        for q in ["a", "b"] {
            let _ = ch
                .queue_delete(
                    format!("exp-{name}-{q}").as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}

fn table(kv: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in kv {
        t.insert((*k).into(), v.clone());
    }
    t
}
