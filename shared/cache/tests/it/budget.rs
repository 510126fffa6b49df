//! Disk budgets: least recently used entries go first, down to the low-water
//! mark; entries in use stay; a cache hit marks an entry used.

use contexten_broker::CancellationToken;
use contexten_cache::{Cache, CacheConfig, DiskBudget};
use contexten_testkit::eventually;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The context worker's layout: per-file analyses and fetched repositories.
fn budget(root: &Path, max_bytes: u64, keep_recent: Duration) -> DiskBudget {
    DiskBudget::new(max_bytes, keep_recent)
        .files_under(root.join("analysis"))
        .dirs_in(root.join("git"))
}

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
    let report = budget(root, 150 * KIB, Duration::from_secs(600))
        .prune()
        .unwrap();
    assert_eq!(report.bytes_before, 170 * KIB);
    assert_eq!(report.bytes_after, 120 * KIB);
    assert_eq!((report.files_removed, report.dirs_removed), (5, 0));
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
    let report = budget(root, 40 * KIB, Duration::from_secs(600))
        .prune()
        .unwrap();
    assert_eq!((report.files_removed, report.dirs_removed), (3, 1));
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
    let report = budget(cache.path(), 10 * KIB, Duration::ZERO)
        .prune()
        .unwrap();
    assert_eq!(
        (report.bytes_before, report.bytes_after),
        (10 * KIB, 10 * KIB)
    );
    assert!(cache.path().join("analysis/ab/k.json").exists());
    let missing = budget(&cache.path().join("nothing"), 1, Duration::ZERO)
        .prune()
        .unwrap();
    assert_eq!(missing.bytes_before, 0);
}

#[tokio::test]
async fn an_answer_read_from_disk_is_marked_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(
        CacheConfig {
            name: "gen",
            memory_entries: 10,
            ttl: Duration::from_secs(600),
            disk_dir: Some(dir.path().to_path_buf()),
            encryption: None,
        },
        None,
    );
    cache.put("answer", b"fn main() {}").await;
    let file = walk(dir.path()).pop().expect("the answer on disk");
    entry_age(&file, hours(48));
    cache.evict_memory("answer").await;
    assert_eq!(&*cache.get("answer").await.unwrap().value, b"fn main() {}");
    let age = contexten_testkit::file_age(&file);
    assert!(age < Duration::from_secs(60), "{age:?}");
}

#[tokio::test]
async fn a_kept_budget_prunes_at_start_and_then_periodically_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("analysis/ab/old.json");
    entry(&old, 4 * KIB, hours(24));
    let stop = CancellationToken::new();
    let keeper = tokio::spawn(
        budget(dir.path(), KIB, Duration::from_secs(600)).keep_pruned(
            "test",
            Duration::from_millis(50),
            stop.clone(),
        ),
    );
    for round in ["at start", "on a later round"] {
        eventually(
            Duration::from_secs(10),
            &format!("{round}: pruned"),
            || async { !old.exists() },
        )
        .await;
        entry(&old, 4 * KIB, hours(24));
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), keeper)
        .await
        .expect("stops when told")
        .unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn entry_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}
