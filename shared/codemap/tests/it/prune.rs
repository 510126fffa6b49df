//! The disk cache stays under its budget, least recently used entries first.

use crate::caching::files;
use crate::helpers::*;
use contexten_codemap::{AnalysisStore, DiskStore, Engine, EngineConfig, RepoSource, prune_cache};
use std::path::Path;
use std::time::{Duration, SystemTime};

const KIB: u64 = 1024;

/// Writes `bytes` bytes at `path`, last used `age` ago.
fn entry(path: &Path, bytes: u64, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; bytes as usize]).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[test]
fn an_oversized_cache_loses_its_least_recently_used_entries_down_to_the_low_water_mark() {
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path();
    // 100 KiB of analyses, 10 each, used 10..1 hours ago; a 60 KiB repository
    // fetched 5.5 hours ago (its newest file counts); one analysis in use now.
    for i in 0..10u64 {
        entry(
            &root.join(format!("analysis/a{i}/k{i}.json")),
            10 * KIB,
            hours(10 - i),
        );
    }
    entry(
        &root.join("git/old.git/objects/pack/p.pack"),
        50 * KIB,
        hours(30),
    );
    entry(
        &root.join("git/old.git/FETCH_HEAD"),
        10 * KIB,
        Duration::from_secs(5 * 3600 + 1800),
    );
    entry(&root.join("analysis/zz/now.json"), 10 * KIB, Duration::ZERO);

    // 170 KiB against a 150 KiB budget: down to 120 KiB (80 %), oldest first.
    let report = prune_cache(root, 150 * KIB, Duration::from_secs(600)).unwrap();
    assert_eq!(report.bytes_before, 170 * KIB);
    assert_eq!(report.bytes_after, 120 * KIB);
    assert_eq!((report.files_removed, report.repositories_removed), (5, 0));
    for i in 0..5 {
        assert!(
            !root.join(format!("analysis/a{i}/k{i}.json")).exists(),
            "a{i}"
        );
    }
    for i in 5..10 {
        assert!(
            root.join(format!("analysis/a{i}/k{i}.json")).exists(),
            "a{i}"
        );
    }
    assert!(root.join("git/old.git/FETCH_HEAD").exists());

    // A tighter budget (down to 32 KiB) takes the repository as a whole, then
    // the oldest analyses.
    let report = prune_cache(root, 40 * KIB, Duration::from_secs(600)).unwrap();
    assert_eq!((report.files_removed, report.repositories_removed), (3, 1));
    assert!(!root.join("git/old.git").exists());
    assert_eq!(report.bytes_after, 30 * KIB, "{report:?}");
    assert_eq!(report.freed(), 90 * KIB);
    for kept in [
        "analysis/a8/k8.json",
        "analysis/a9/k9.json",
        "analysis/zz/now.json",
    ] {
        assert!(root.join(kept).exists(), "{kept}");
    }
}

#[test]
fn a_cache_within_budget_or_missing_is_left_alone() {
    let cache = tempfile::tempdir().unwrap();
    entry(
        &cache.path().join("analysis/ab/k.json"),
        10 * KIB,
        hours(100),
    );
    let report = prune_cache(cache.path(), 10 * KIB, Duration::ZERO).unwrap();
    assert_eq!(
        (report.bytes_before, report.bytes_after),
        (10 * KIB, 10 * KIB)
    );
    assert!(cache.path().join("analysis/ab/k.json").exists());
    let missing = prune_cache(&cache.path().join("nothing"), 1, Duration::ZERO).unwrap();
    assert_eq!(missing.bytes_before, 0);
}

#[test]
fn a_disk_cache_hit_marks_the_entry_used() {
    let cache = tempfile::tempdir().unwrap();
    let store = DiskStore::new(cache.path().join("analysis"));
    store.put("abc-rust-v1", b"value").unwrap();
    let file = std::fs::read_dir(cache.path().join("analysis/ab"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(SystemTime::now() - hours(48))
        .unwrap();
    assert_eq!(
        store.get("abc-rust-v1").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    let age = std::fs::metadata(&file)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
}

#[test]
fn a_pruned_cache_only_costs_a_new_parse() {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let cache = tempfile::tempdir().unwrap();
    let cfg = || EngineConfig {
        allow_local: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let src = RepoSource::Local(dir.path().to_path_buf());
    let first = Engine::new(cfg()).analyse(&src).unwrap();
    let report = prune_cache(cache.path(), 1, Duration::ZERO).unwrap();
    assert_eq!(report.files_removed, 20);
    assert_eq!(report.bytes_after, 0);
    let again = Engine::new(cfg());
    let second = again.analyse(&src).unwrap();
    assert_eq!(again.stats().files_parsed, 20);
    assert_eq!(first.len(), second.len());
}
