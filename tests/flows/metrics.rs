//! The metrics the binaries really expose (issue 19): a GitHub comment goes
//! through the five binaries, then each one's `/metrics` is scraped. Every
//! `contexten_*` series must be in the catalog's list
//! (`deploy/chart-check/metrics/contexten.txt`, which the dashboard and alert
//! check reads; a telemetry test keeps it equal to the catalog in
//! `shared/telemetry/src/metric.rs`), with no label the list does not name.
//! `/status` answers on every binary with its build, dependencies and breakers.

use crate::{github_comment, sample_repo};
use contexten_fleet_tests::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const REGENERATE: &str = "UPDATE_METRICS=1 cargo test -p contexten-telemetry --test catalog";

/// The catalog's list: name → label names.
fn catalog_list() -> BTreeMap<String, BTreeSet<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/chart-check/metrics/contexten.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate it with `{REGENERATE}`", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap_or_default().to_owned();
            let labels = parts
                .next()
                .map(|l| l.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            (name, labels)
        })
        .collect()
}

/// One sample line of the Prometheus text format: its series name and labels.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_owned();
    let mut labels = BTreeMap::new();
    if line[end..].starts_with('{') {
        let mut rest = &line[end + 1..];
        loop {
            rest = rest.trim_start_matches(',');
            if rest.starts_with('}') || rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut close = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        close = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            labels.insert(key.to_owned(), value);
            rest = &after[close? + 1..];
        }
    }
    Some((name, labels))
}

/// The catalog name a series belongs to (a histogram's `_bucket`, `_sum` and
/// `_count` belong to the histogram).
fn owner<'a>(series: &str, list: &'a BTreeMap<String, BTreeSet<String>>) -> Option<&'a str> {
    if let Some((name, _)) = list.get_key_value(series) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        list.get_key_value(base)
            .filter(|_| base.ends_with("_seconds"))
            .map(|(name, _)| name.as_str())
    })
}

#[tokio::test]
async fn every_metric_the_fleet_exposes_is_in_the_catalog_and_status_answers() {
    let list = catalog_list();
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = sample_repo(fleet.dir.path());
    let payload = github_comment(
        &repo,
        11,
        5101,
        "/contexten generate add a parse_duration function to app/timeutil.py next to format_duration",
    );
    let response = fleet
        .github_webhook("issue_comment", "d-gh-metrics", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    // The final answer is posted when the dispatcher has recorded the task's
    // end-to-end latency.
    let dispatcher = fleet
        .services
        .iter()
        .find(|s| s.name == "dispatcher")
        .expect("a dispatcher");
    let end_to_end = eventually(FLOW_WITHIN, || async {
        let text = scrape(&fleet, &dispatcher.health_addr).await;
        text.lines()
            .any(|l| {
                l.starts_with("contexten_task_end_to_end_seconds_count{")
                    && l.contains("source=\"github\"")
            })
            .then_some(())
    })
    .await;
    assert!(
        end_to_end.is_some(),
        "no end-to-end latency recorded\n{}",
        fleet.logs(40)
    );

    let mut exposed: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut problems = Vec::new();
    for service in &fleet.services {
        let text = scrape(&fleet, &service.health_addr).await;
        let mut build_info = false;
        for (series, labels) in text.lines().filter_map(parse_sample) {
            if !series.starts_with("contexten_") {
                continue;
            }
            let Some(name) = owner(&series, &list) else {
                problems.push(format!(
                    "{}: `{series}` is not in the catalog",
                    service.name
                ));
                continue;
            };
            let allowed = &list[name];
            for label in labels.keys() {
                if label != "le" && !allowed.contains(label) {
                    problems.push(format!(
                        "{}: `{series}` has label `{label}`, the catalog lists {allowed:?}",
                        service.name
                    ));
                }
            }
            if name == "contexten_build_info" {
                build_info = labels.get("service").map(String::as_str) == Some(service.name)
                    && labels.get("version").is_some_and(|v| !v.is_empty());
            }
            exposed
                .entry(name.to_owned())
                .or_default()
                .insert(service.name);
        }
        if !build_info {
            problems.push(format!(
                "{}: no contexten_build_info for itself",
                service.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nAdd each metric to CATALOG in shared/telemetry/src/metric.rs and regenerate the list \
         and the README with `{REGENERATE}`",
        problems.join("\n")
    );
    // The flow exercised the core of every stage.
    for name in [
        "contexten_ingest_requests_total",
        "contexten_ingest_tasks_total",
        "contexten_stage_received_total",
        "contexten_handler_duration_seconds",
        "contexten_llm_requests_total",
        "contexten_dispatch_replies_total",
        "contexten_task_end_to_end_seconds",
        "contexten_breaker_state",
    ] {
        assert!(
            exposed.contains_key(name),
            "{name} not exposed: {exposed:?}"
        );
    }
    // Breakers report one series per state, known before they ever trip.
    let generator = fleet
        .services
        .iter()
        .find(|s| s.name == "generator-worker")
        .expect("a generator");
    let text = scrape(&fleet, &generator.health_addr).await;
    let llm_states: BTreeMap<String, String> = text
        .lines()
        .filter(|l| l.starts_with("contexten_breaker_state{"))
        .filter_map(|line| {
            let (_, labels) = parse_sample(line)?;
            (labels.get("breaker").map(String::as_str) == Some("llm")).then_some(())?;
            let value = line.rsplit(' ').next()?.to_owned();
            Some((labels.get("state")?.clone(), value))
        })
        .collect();
    assert_eq!(
        llm_states,
        BTreeMap::from([
            ("closed".to_owned(), "1".to_owned()),
            ("half_open".to_owned(), "0".to_owned()),
            ("open".to_owned(), "0".to_owned()),
        ]),
        "{text}"
    );

    for service in &fleet.services {
        let status: Value = fleet
            .http
            .get(format!("http://{}/status", service.health_addr))
            .send()
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status is JSON");
        assert_eq!(status["build"]["service"], service.name, "{status}");
        assert_eq!(
            status["build"]["version"],
            env!("CARGO_PKG_VERSION"),
            "{status}"
        );
        for dependency in ["broker", "redis"] {
            assert_eq!(
                status["dependencies"][dependency]["ready"], true,
                "{status}"
            );
        }
        assert_eq!(status["round_trips"]["broker"]["ok"], true, "{status}");
        assert_eq!(
            status["round_trips"]["redis_records"]["ok"], true,
            "{status}"
        );
        assert!(
            status["round_trips"]["redis_records"]["rtt_ms"]
                .as_f64()
                .is_some(),
            "{status}"
        );
        if service.name == "generator-worker" {
            assert_eq!(status["breakers"]["llm"]["state"], "closed", "{status}");
        }
    }
    fleet.stop().await;
}

async fn scrape(fleet: &Fleet, addr: &str) -> String {
    fleet
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

#[test]
fn a_sample_line_is_read_with_its_labels() {
    let (name, labels) =
        parse_sample(r#"contexten_stage_done_total{stage="generate",outcome="a,\"b\""} 3"#)
            .unwrap();
    assert_eq!(name, "contexten_stage_done_total");
    assert_eq!(labels["stage"], "generate");
    assert_eq!(labels["outcome"], "a,\"b\"");
    assert_eq!(parse_sample("# TYPE x counter"), None);
    assert_eq!(
        parse_sample("contexten_ingest_acks_lost_total 1")
            .unwrap()
            .1
            .len(),
        0
    );
}
