//! The memory budget: partial analyses under a tight budget, the budget
//! shared by concurrent analyses and kept maps, and the estimate checked
//! against a real analysis's peak resident memory.

use std::path::Path;
use std::time::Duration;

use contexten_codemap::{
    CodemapError, ESTIMATE_FIXED, Engine, EngineConfig, RepoSource, file_estimate, is_partial,
};

use crate::helpers::{git, write};

/// 40 source files, 10 tests and a README, every file `size`-ish bytes.
fn many_files(root: &Path) -> u64 {
    let body = |i: usize| {
        format!(
            "def ledger_total_{i}(rows):\n    return sum(r.amount for r in rows) + {i}\n{}",
            "# padding line\n".repeat(30)
        )
    };
    for i in 0..40 {
        write(root, &format!("src/ledger_{i:02}.py"), &body(i));
    }
    for i in 0..10 {
        write(root, &format!("tests/test_ledger_{i}.py"), &body(i));
    }
    write(root, "README.md", "# ledger\n");
    body(10).len() as u64
}

fn budgeted(budget: u64, wait: Duration) -> Engine {
    Engine::new(EngineConfig {
        allow_local: true,
        memory_budget: Some(budget),
        memory_wait: wait,
        ..EngineConfig::default()
    })
}

#[test]
fn a_tight_budget_analyses_the_most_valuable_files_and_says_how_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = many_files(dir.path());
    let budget = ESTIMATE_FIXED + 8 * file_estimate(size + 16);
    let engine = budgeted(budget, Duration::from_secs(5));
    let map = engine
        .analyse(&RepoSource::Local(dir.path().to_path_buf()))
        .expect("a partial analysis, not an error");
    assert_eq!(map.len(), 8, "{:?}", map.skipped());
    assert_eq!(map.skipped().get("memory_budget"), Some(&43));
    assert!(is_partial(map.skipped()));
    assert!(
        map.files().iter().all(|f| f.path.starts_with("src/")),
        "source first"
    );
    assert!(map.memory_reserved() <= budget);
    assert!(map.memory_estimate() <= budget);
}

#[test]
fn a_git_tree_over_the_budget_is_read_in_part_before_any_blob_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = many_files(dir.path());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "x"]);
    let engine = budgeted(
        ESTIMATE_FIXED + 20 * file_estimate(size + 16),
        Duration::from_secs(5),
    );
    let src = RepoSource::Git {
        url: dir.path().display().to_string(),
        reference: None,
    };
    let map = engine.analyse(&src).expect("analyse");
    assert_eq!(map.len(), 20);
    assert_eq!(map.skipped().get("memory_budget"), Some(&31));
    // The first 20 by value: all 40 sources are the same size, so path order.
    assert_eq!(map.files()[0].path, "src/ledger_00.py");
    assert!(map.files().iter().all(|f| f.path.starts_with("src/")));
}

#[test]
fn analyses_share_the_budget_and_kept_maps_make_room() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let size = many_files(a.path());
    many_files(b.path());
    // Another tree (a map is shared by every commit of the same tree).
    write(b.path(), "README.md", "# ledger b\n");
    for dir in [a.path(), b.path()] {
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "x"]);
    }
    // Room for one whole repository, not two.
    let one = ESTIMATE_FIXED + 51 * file_estimate(size + 16);
    let engine = budgeted(one + one / 4, Duration::from_millis(300));
    let src = |d: &Path| RepoSource::Git {
        url: d.display().to_string(),
        reference: None,
    };
    let held = engine.analyse(&src(a.path())).expect("a");
    assert!(!is_partial(held.skipped()));
    // The first map is still in use: the second waits, then gives up.
    match engine.analyse(&src(b.path())) {
        Err(CodemapError::MemoryBusy { budget, .. }) => assert_eq!(budget, one + one / 4),
        other => panic!("expected MemoryBusy, got {:?}", other.map(|m| m.len())),
    }
    // Once its user is done, the engine's own copy of it is dropped for room.
    drop(held);
    let second = engine.analyse(&src(b.path())).expect("b");
    assert!(!is_partial(second.skipped()));
    assert!(second.memory_reserved() <= one + one / 4);
}

#[test]
fn interned_strings_start_anew_past_their_limit_and_answers_stay_the_same() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    many_files(a.path());
    write(
        b.path(),
        "billing/tax.py",
        "def vat_rate(country):\n    return 0.2\n",
    );
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        max_interned: 50,
        ..EngineConfig::default()
    });
    let fresh = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    let local = |d: &Path| RepoSource::Local(d.to_path_buf());
    let query = contexten_codemap::Query::new("ledger_total_7 sums rows", 3);
    let first = engine.analyse(&local(a.path())).expect("a");
    // Over 50 strings: the next analysis starts new tables...
    engine.analyse(&local(b.path())).expect("b");
    // ...and the files cached under the old ones are not reused with them.
    let again = engine.analyse(&local(a.path())).expect("a again");
    let expected = fresh.analyse(&local(a.path())).expect("fresh");
    let paths = |m: &contexten_codemap::CodeMap| -> Vec<String> {
        m.query(&query).into_iter().map(|r| r.path).collect()
    };
    assert_eq!(paths(&again), paths(&expected));
    assert_eq!(paths(&first), paths(&expected), "the old map still answers");
    // The function's file and its test (same body, a path closer to the
    // request's `7`) lead; which comes first is the reranker's call.
    assert!(
        paths(&expected)[..2].contains(&"src/ledger_07.py".to_owned()),
        "{:?}",
        paths(&expected)
    );
    assert!(engine.stats().files_parsed > fresh.stats().files_parsed + 1);
}

/// Set in the child process that measures one analysis.
const CHILD: &str = "CODEMAP_TEST_MEMORY_CHILD";

/// The estimate against reality: a fresh process analyses real Rust code (this
/// workspace's, several copies) and its peak resident memory above its
/// baseline must stay under the files' estimate, without even counting
/// [`ESTIMATE_FIXED`].
#[test]
fn the_estimate_is_an_upper_bound_of_a_real_analysis() {
    if let Ok(root) = std::env::var(CHILD) {
        return measure_child(Path::new(&root));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut sources = Vec::new();
    for top in ["shared", "services"] {
        collect_rs(&workspace.join(top), &mut sources);
    }
    assert!(sources.len() > 50, "the workspace's sources were found");
    let mut n = 0;
    for copy in 0..4 {
        for (i, text) in sources.iter().enumerate() {
            // A distinct blob per copy, so no analysis is shared.
            write(
                dir.path(),
                &format!("c{copy}/f{i}.rs"),
                &format!("{text}\n// copy {copy}\n"),
            );
            n += 1;
        }
    }
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "memory::the_estimate_is_an_upper_bound_of_a_real_analysis",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY "))
        .unwrap_or_else(|| panic!("no figures in {stdout}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    let [files, source_bytes, baseline, peak, estimate] = f[..] else {
        panic!("{line}")
    };
    assert_eq!(files, n as u64, "every file analysed");
    let used = peak.saturating_sub(baseline);
    let proportional = estimate - ESTIMATE_FIXED;
    eprintln!(
        "{files} files, {source_bytes} source bytes: peak {peak} over a baseline of {baseline} \
         ({:.2}x the source), estimate {estimate} ({proportional} without the fixed part)",
        used as f64 / source_bytes as f64
    );
    assert!(used <= proportional, "{used} > {proportional}");
}

fn measure_child(root: &Path) {
    // Lazily built statics (compiled queries) belong to the process.
    let warm = tempfile::tempdir().expect("tempdir");
    write(warm.path(), "a.rs", "fn a() {}\n");
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    drop(engine.analyse(&RepoSource::Local(warm.path().to_path_buf())));
    drop(engine);
    let baseline = status_bytes("VmRSS:");
    // Writing 5 resets VmHWM to the current resident size (proc(5)).
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    let map = engine
        .analyse(&RepoSource::Local(root.to_path_buf()))
        .expect("analyse");
    let peak = status_bytes("VmHWM:");
    let source: usize = map.files().iter().map(|f| f.content.len()).sum();
    println!(
        "MEMORY {} {source} {baseline} {peak} {}",
        map.len(),
        map.memory_estimate()
    );
}

fn collect_rs(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                collect_rs(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push(text);
            }
        }
    }
}

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field");
    kib * 1024
}
