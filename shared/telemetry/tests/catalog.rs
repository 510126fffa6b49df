//! The metric catalog is the one list: the README's metrics section and
//! `deploy/chart-check/metrics/contexten.txt` are generated from it (run with
//! `UPDATE_METRICS=1` to rewrite both), and the catalog itself is well-formed.

use contexten_telemetry::metric::{self, CATALOG, Kind};
use std::collections::BTreeSet;
use std::path::PathBuf;

const BEGIN: &str = "<!-- metrics:begin -->";
const END: &str = "<!-- metrics:end -->";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_METRICS").is_some()
}

#[test]
fn the_catalog_is_well_formed() {
    let mut names = BTreeSet::new();
    for m in CATALOG {
        assert!(names.insert(m.name), "{} listed twice", m.name);
        assert!(m.name.starts_with("contexten_"), "{}", m.name);
        match m.kind {
            Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
            Kind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
            Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
        }
        assert!(!m.help.is_empty(), "{} has no help", m.name);
        let labels: BTreeSet<_> = m.labels.iter().collect();
        assert_eq!(labels.len(), m.labels.len(), "{} repeats a label", m.name);
    }
    assert!(metric::find("contexten_queue_depth").is_none());
    assert_eq!(
        metric::owner_of("contexten_handler_duration_seconds_bucket").map(|m| m.name),
        Some(metric::HANDLER_DURATION)
    );
    assert!(metric::owner_of("contexten_stage_done_total_bucket").is_none());
}

#[test]
fn the_names_file_matches_the_catalog() {
    let path = repo_root().join("deploy/chart-check/metrics/contexten.txt");
    let expected = metric::names_file();
    if updating() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is stale; regenerate it with \
         `UPDATE_METRICS=1 cargo test -p contexten-telemetry --test catalog`. Expected:\n{expected}",
        path.display()
    );
}

#[test]
fn the_readme_metrics_section_matches_the_catalog() {
    let path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md lacks the {BEGIN} … {END} markers");
    };
    let start = begin + BEGIN.len();
    let actual = readme[start..end].trim_matches('\n');
    let expected = metric::readme_section();
    if updating() {
        let rewritten = format!("{}\n{}{}", &readme[..start], expected, &readme[end..]);
        std::fs::write(&path, rewritten).unwrap();
        return;
    }
    assert!(
        actual == expected.trim_matches('\n'),
        "README.md's metrics section is stale; regenerate it with \
         `UPDATE_METRICS=1 cargo test -p contexten-telemetry --test catalog`. Expected:\n{expected}"
    );
}

#[test]
fn a_breaker_reports_one_series_per_state_and_the_new_metrics_render() {
    contexten_telemetry::init_for_tests();
    metric::breaker_state("catalog_test", "half_open");
    metric::end_to_end(
        "catalog_test_source",
        "generate",
        std::time::Duration::from_millis(1500),
    );
    metric::llm_error("catalog_test_llm", "rate_limited");
    metric::generator_fallback("catalog_test_reason");
    let text = contexten_telemetry::render_metrics();
    for (state, value) in [("closed", 0), ("open", 0), ("half_open", 1)] {
        let series = format!(
            "contexten_breaker_state{{breaker=\"catalog_test\",state=\"{state}\"}} {value}"
        );
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    for series in [
        "contexten_task_end_to_end_seconds_count{source=\"catalog_test_source\",strategy=\"generate\"} 1",
        "contexten_llm_errors_total{provider=\"catalog_test_llm\",class=\"rate_limited\"} 1",
        "contexten_generator_fallbacks_total{reason=\"catalog_test_reason\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(
        text.contains("# HELP contexten_task_end_to_end_seconds "),
        "described from the catalog:\n{text}"
    );
}
