//! The metric names RabbitMQ's Prometheus plugin exports, collected from a
//! real node (docs/operations.md "Alerts"): the chart check compares the
//! dashboard's and the alert rules' queries with
//! deploy/chart-check/metrics/rabbitmq.txt, so that list must come from the
//! broker, not from memory. Fails when the file is stale;
//! `UPDATE_METRICS=1` rewrites it.

use contexten_testkit::{RabbitNode, RabbitOptions};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET <path>` over HTTP/1.0 on loopback: the body when the status is 200.
async fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no answer within 30 s"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!(
            "{path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

/// Sample names with the union of their label names, from the text format.
fn names(exposition: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in exposition.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..end].to_owned()).or_default();
        if let Some(rest) = line[end..].strip_prefix('{') {
            // label="value",...  (values may hold commas: split on `="` pairs)
            let mut rest = rest;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].trim_start_matches([',', ' ']);
                labels.insert(name.to_owned());
                // skip the quoted value, honouring \" escapes
                let value = &rest[eq + 2..];
                let mut close = 0;
                let bytes = value.as_bytes();
                while close < bytes.len() {
                    match bytes[close] {
                        b'\\' => close += 2,
                        b'"' => break,
                        _ => close += 1,
                    }
                }
                rest = value.get(close + 1..).unwrap_or("");
            }
        }
    }
}

#[tokio::test]
async fn rabbitmq_prometheus_metric_names_match_the_list() {
    // Statistics every 500 ms instead of 5 s: the per-object families fill
    // in sooner (the names do not depend on it).
    let node = RabbitNode::start(
        RabbitOptions::default()
            .prometheus(true)
            .config_line("collect_statistics_interval = 500"),
    )
    .await
    .unwrap();
    let port: u16 = node
        .prometheus_url()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // A queue with a ready message and a consumer on another, the channel
    // open while scraping: the per-queue, per-channel and per-connection
    // families then all have samples.
    let conn = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["metrics-ready", "metrics-consumed"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_publish(
        "".into(),
        "metrics-ready".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _consumer = ch
        .basic_consume(
            "metrics-consumed".into(),
            "metrics".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // The plugin's listener may come up just after AMQP, and per-object
    // stats are emitted periodically: take the names once two scrapes two
    // seconds apart agree and the per-queue families are there.
    let mut found = BTreeMap::new();
    let mut previous = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        found.clear();
        let mut ok = true;
        for path in ["/metrics", "/metrics/per-object"] {
            match get(port, path).await {
                Ok(body) => names(&body, &mut found),
                Err(_) => ok = false,
            }
        }
        let queue_seen = found
            .get("rabbitmq_queue_messages_ready")
            .is_some_and(|l| l.contains("queue"));
        let consumers_seen = found.contains_key("rabbitmq_queue_consumers");
        if ok && queue_seen && consumers_seen && found == previous {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the plugin's metric names did not settle within 90 s"
        );
        previous = found.clone();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let rendered: String = found
        .iter()
        .map(|(name, labels)| {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            if labels.is_empty() {
                format!("{name}\n")
            } else {
                format!("{name} {}\n", labels.join(","))
            }
        })
        .collect();
    let header = "# Metric names of RabbitMQ's rabbitmq_prometheus plugin (/metrics and\n\
                  # /metrics/per-object), one `name label1,label2` per line, collected from a\n\
                  # real node by shared/testkit/tests/rabbitmq_metrics.rs\n\
                  # (UPDATE_METRICS=1 cargo nextest run -p contexten-testkit rabbitmq_metrics).\n";
    let text = format!("{header}{rendered}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/chart-check/metrics/rabbitmq.txt");
    if std::env::var_os("UPDATE_METRICS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    let listed: BTreeSet<&str> = shipped
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let now: BTreeSet<&str> = rendered.lines().collect();
    let gone: Vec<_> = listed.difference(&now).collect();
    let new: Vec<_> = now.difference(&listed).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{} is stale (rerun with UPDATE_METRICS=1):\n  no longer exported: {gone:?}\n  not listed: {new:?}",
        path.display()
    );
}
