//! Engine benchmark on real code that ships on this machine: the Python standard
//! library and the Rust crates in the cargo registry.
//!
//! Reports, as medians over repeated runs: cold analysis time and its ratio to only
//! reading and parsing every file with tree-sitter on the same cores, warm query
//! latency, re-analysis after changing one file, the size of the stdlib's
//! whole-repository map in the shared store and how long a cold replica takes to
//! answer from it, and peak memory: per tree, a cold analysis in a fresh
//! process (VmHWM against the source bytes analysed; README "Context worker
//! memory"), again in one that has loaded every grammar first, and of the
//! whole benchmark process.
//!
//! Run: `cargo bench -p contexten-codemap --bench codemap` (env `CODEMAP_BENCH_RUNS`,
//! `CODEMAP_BENCH_PY`, `CODEMAP_BENCH_RUST` override the defaults).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contexten_codemap::{
    AnalysisStore, CodemapError, Engine, EngineConfig, Language, Query, RepoSource,
};
use rayon::prelude::*;

const QUERIES: &[&str] = &[
    "json decoder raises on trailing comma",
    "asyncio event loop shutdown hangs when a task is cancelled",
    "HTTPConnection timeout is ignored for proxies",
    "email header parsing of encoded words",
    "pathlib glob with recursive pattern returns duplicates",
    "logging handler rotation loses records",
    "Traceback (most recent call last):\n  File \"Lib/argparse.py\", line 1900, in parse_known_args",
    "subprocess Popen communicate deadlock with large output",
    "zipfile extract path traversal",
    "csv DictReader restkey",
    "SSLContext load_verify_locations",
    "dataclasses field default_factory",
    "unittest mock patch autospec",
    "ThreadPoolExecutor shutdown wait",
    "sqlite3 connection isolation level",
    "datetime strptime timezone offset",
    "tarfile filter data",
    "http.cookies SimpleCookie",
    "decimal context rounding",
    "xml.etree ElementTree iterparse",
];

/// Targets (issue 20): a cold analysis costs at most this many times reading
/// and parsing the same files, and its peak resident memory is at most this
/// many times the source bytes analysed.
const MAX_RATIO: f64 = 1.5;
const MAX_MEMORY_RATIO: f64 = 3.0;

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// Set in a child process: analyse this tree once, print its memory figures.
const CHILD_ENV: &str = "CODEMAP_BENCH_MEMORY_CHILD";
/// Set for a memory child that reads its tree as a git repository.
const CHILD_GIT_ENV: &str = "CODEMAP_BENCH_MEMORY_GIT";
/// Set for a memory child that first loads every grammar and compiles every
/// query (by analysing one small file of each language), as a worker that has
/// served repositories in all of them has: about 12 MiB of grammar tables a
/// Python tree never touches.
const CHILD_ALL_GRAMMARS_ENV: &str = "CODEMAP_BENCH_MEMORY_ALL_GRAMMARS";

fn main() {
    if let Ok(root) = std::env::var(CHILD_ENV) {
        return memory_child(Path::new(&root));
    }
    // Five interleaved pairs: on a shared 2-core machine one pair's ratio moved
    // between 1.35 and 1.57 from run to run, three pairs' median by ±0.1.
    let runs: usize = std::env::var("CODEMAP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(py) = python_stdlib() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let n = copy_tree(&py, tmp.path());
        eprintln!("python stdlib: {n} files copied from {}", py.display());
        memory_rows("python-stdlib", tmp.path(), false, &mut rows);
        bench_tree("python-stdlib", tmp.path(), runs, true, &mut rows);
        // bench_shared_map made the copy a git repository: the same tree
        // read as the worker reads a repository.
        if bench_shared_map("python-stdlib", tmp.path(), &mut rows) {
            memory_rows("python-stdlib (from git)", tmp.path(), true, &mut rows);
        }
    }
    if let Some(reg) = cargo_registry() {
        memory_rows("cargo-registry", &reg, false, &mut rows);
        // One pair's ratio moved between 1.35 and 1.94 on the same code:
        // three interleaved pairs (about 90 s more) give a median to go by.
        let registry_runs = std::env::var("CODEMAP_BENCH_REGISTRY_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        bench_tree("cargo-registry", &reg, registry_runs, false, &mut rows);
    }
    rows.push((
        "peak memory of this whole process (VmHWM; every run above)".into(),
        vm_hwm(),
    ));
    println!("\n{:<56} value", "measure");
    for (k, v) in rows {
        println!("{k:<56} {v}");
    }
}

fn bench_tree(name: &str, root: &Path, runs: usize, full: bool, rows: &mut Vec<(String, String)>) {
    let src = RepoSource::Local(root.to_path_buf());
    let cfg = || EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    };
    // Warm-up: page cache, lazily compiled queries.
    let map = Engine::new(cfg()).analyse(&src).expect("analyse");
    let files: Vec<(PathBuf, Language)> = map
        .files()
        .iter()
        .map(|f| (root.join(&f.path), f.language))
        .collect();
    let bytes: usize = map.files().iter().map(|f| f.content.len()).sum();
    rows.push((
        format!("{name}: files / MiB"),
        format!("{} / {:.1}", files.len(), bytes as f64 / 1048576.0),
    ));

    // Interleaved so that load from other processes hits both alike; CPU time is
    // reported next to wall time because it is far less sensitive to that load.
    let (mut cold, mut parse, mut cold_cpu, mut parse_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let c0 = cpu_time();
        cold.push(time(|| {
            drop(Engine::new(cfg()).analyse(&src).expect("analyse"))
        }));
        let c1 = cpu_time();
        parse.push(time(|| read_and_parse(&files)));
        let c2 = cpu_time();
        cold_cpu.push(c1 - c0);
        parse_cpu.push(c2 - c1);
    }
    let (cold, parse) = (median(cold), median(parse));
    let (cold_cpu, parse_cpu) = (median(cold_cpu), median(parse_cpu));
    rows.push((
        format!("{name}: cold analysis wall / cpu (median of {runs})"),
        format!("{} / {}", ms(cold), ms(cold_cpu)),
    ));
    rows.push((
        format!("{name}: read + tree-sitter parse only wall / cpu"),
        format!("{} / {}", ms(parse), ms(parse_cpu)),
    ));
    let (wall, cpu) = (
        cold.as_secs_f64() / parse.as_secs_f64(),
        cold_cpu.as_secs_f64() / parse_cpu.as_secs_f64(),
    );
    // CPU time is what the target is judged on: wall time moves with the
    // load other processes put on the machine (see above).
    rows.push((
        format!("{name}: cold / parse-only ratio wall / cpu (target <= {MAX_RATIO})"),
        format!("{wall:.2} / {cpu:.2} {}", verdict(cpu <= MAX_RATIO)),
    ));
    if !full {
        return;
    }
    let engine = Engine::new(cfg());
    let map = engine.analyse(&src).expect("analyse");
    let mut lat = Vec::new();
    for _ in 0..5 {
        for q in QUERIES {
            lat.push(time(|| drop(map.query(&Query::new(*q, 10)))));
        }
    }
    rows.push((
        format!("{name}: warm query median / p95 (target <= 50 ms)"),
        format!("{} / {}", ms(median(lat.clone())), ms(p95(lat))),
    ));
    let prompt = median(
        QUERIES
            .iter()
            .map(|q| {
                let ranked = map.query(&Query::new(*q, 10));
                time(|| drop(map.assemble_prompt(q, &ranked, 8000, "gpt-4o")))
            })
            .collect(),
    );
    rows.push((
        format!("{name}: prompt assembly median (8k budget)"),
        ms(prompt),
    ));

    let victim = map
        .files()
        .iter()
        .find(|f| f.path.ends_with("argparse.py"))
        .or_else(|| map.files().iter().find(|f| f.language.is_parsed()))
        .map(|f| root.join(&f.path))
        .expect("a source file");
    let original = std::fs::read_to_string(&victim).expect("read");
    let before = engine.stats().files_parsed;
    let mut re = Vec::new();
    for i in 0..runs.max(5) {
        std::fs::write(&victim, format!("{original}\n# edit {i}\n")).expect("write");
        re.push(time(|| drop(engine.analyse(&src).expect("reanalyse"))));
    }
    std::fs::write(&victim, original).expect("restore");
    let reparsed = engine.stats().files_parsed - before;
    rows.push((
        format!("{name}: re-analysis after 1 changed file (target <= 100 ms)"),
        format!(
            "{} (files parsed: {reparsed} over {} edits)",
            ms(median(re)),
            runs.max(5)
        ),
    ));
}

/// An in-process stand-in for Redis: the value sizes and the cold replica's work
/// are what is measured, not the network.
#[derive(Debug, Default)]
struct MemoryStore(Mutex<HashMap<String, Vec<u8>>>);

impl AnalysisStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
        Ok(self.0.lock().expect("lock").get(key).cloned())
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
        self.0
            .lock()
            .expect("lock")
            .insert(key.into(), value.into());
        Ok(())
    }
}

/// Commits the tree to git, analyses it with a shared store, then times a second
/// engine (empty memory, no disk) answering the same commit from that store.
/// The shared-map figures; `false` when `root` could not be made a git
/// repository.
fn bench_shared_map(name: &str, root: &Path, rows: &mut Vec<(String, String)>) -> bool {
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "-m",
            "snapshot",
        ],
    ] {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("{name}: git {args:?} failed; no shared-map figures");
            return false;
        }
    }
    let store = Arc::new(MemoryStore::default());
    let cfg = || EngineConfig {
        allow_local: true,
        shared_store: Some(store.clone()),
        ..EngineConfig::default()
    };
    let src = RepoSource::Git {
        url: root.display().to_string(),
        reference: Some("HEAD".into()),
    };
    let t = Instant::now();
    let first = Engine::new(cfg());
    first.analyse(&src).expect("analyse");
    let cold = t.elapsed();
    let (map_bytes, file_bytes, file_entries) = {
        let all = store.0.lock().expect("lock");
        let map: usize = all
            .iter()
            .filter(|(k, _)| k.starts_with("map-"))
            .map(|(_, v)| v.len())
            .sum();
        let files: usize = all.values().map(Vec::len).sum::<usize>() - map;
        (map, files, all.len() - 1)
    };
    let mut loads = Vec::new();
    let mut parsed = 0;
    for _ in 0..3 {
        let replica = Engine::new(cfg());
        loads.push(time(|| drop(replica.analyse(&src).expect("from store"))));
        parsed += replica.stats().files_parsed;
    }
    rows.push((
        format!("{name}: whole-repository map in the shared store"),
        format!(
            "{:.2} MiB (per-file entries: {file_entries}, {:.1} MiB)",
            map_bytes as f64 / 1048576.0,
            file_bytes as f64 / 1048576.0
        ),
    ));
    rows.push((
        format!("{name}: cold replica from the shared map vs cold analysis"),
        format!(
            "{} vs {} (files parsed: {parsed})",
            ms(median(loads)),
            ms(cold)
        ),
    ));
    true
}

fn read_and_parse(files: &[(PathBuf, Language)]) {
    thread_local! {
        static PARSER: std::cell::RefCell<tree_sitter::Parser> = std::cell::RefCell::new(tree_sitter::Parser::new());
    }
    files.par_iter().for_each(|(p, lang)| {
        let Ok(text) = std::fs::read_to_string(p) else {
            return;
        };
        if let Some(g) = lang.grammar() {
            PARSER.with(|parser| {
                let mut parser = parser.borrow_mut();
                if parser.set_language(&g).is_ok() {
                    std::hint::black_box(parser.parse(&text, None));
                }
            });
        }
    });
}

/// User + system CPU time of this process so far (`/proc/self/stat`, clock ticks).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 95 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn python_stdlib() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CODEMAP_BENCH_PY") {
        return Some(PathBuf::from(p)).filter(|p| p.is_dir());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig;print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_dir().then_some(p)
}

fn cargo_registry() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CODEMAP_BENCH_RUST") {
        return Some(PathBuf::from(p)).filter(|p| p.is_dir());
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok()?;
    std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
}

/// Copies the text files of a tree (no site-packages / caches) so the benchmark
/// can edit one without touching the installation.
fn copy_tree(from: &Path, to: &Path) -> usize {
    let mut n = 0;
    let walker = ignore::WalkBuilder::new(from)
        .standard_filters(false)
        .filter_entry(|e| {
            !matches!(
                e.file_name().to_str(),
                Some("site-packages" | "__pycache__")
            )
        })
        .build();
    for e in walker.flatten() {
        if !e.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(from) else {
            continue;
        };
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if std::fs::copy(e.path(), &dest).is_ok() {
            n += 1;
        }
    }
    n
}

/// One tree's peak memory, measured in a fresh process so that neither the
/// other trees nor the timing runs' leftovers count.
#[derive(Debug, Clone, Copy)]
struct Memory {
    files: usize,
    source_bytes: usize,
    /// Resident before the analysis: the binary and its libraries, plus, with
    /// [`CHILD_ALL_GRAMMARS_ENV`], every grammar and query.
    baseline_kib: u64,
    /// VmHWM during the analysis, reset after measuring the baseline.
    peak_kib: u64,
}

fn memory_child(root: &Path) {
    if std::env::var_os(CHILD_ALL_GRAMMARS_ENV).is_some() {
        load_every_grammar();
    }
    let baseline_kib = status_kib("VmRSS:");
    // Writing 5 resets the high-water mark to the current RSS (proc(5)).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    // The worker reads repositories from git (all blobs through one
    // `cat-file`), a working directory file by file: both are measured.
    let src = if std::env::var_os(CHILD_GIT_ENV).is_some() {
        RepoSource::Git {
            url: root.display().to_string(),
            reference: Some("HEAD".into()),
        }
    } else {
        RepoSource::Local(root.to_path_buf())
    };
    let map = engine.analyse(&src).expect("analyse");
    let peak_kib = status_kib("VmHWM:");
    let source_bytes: usize = map.files().iter().map(|f| f.content.len()).sum();
    println!(
        "{} {source_bytes} {baseline_kib} {peak_kib}",
        map.files().len()
    );
}

/// Pages in every grammar's tables and compiles every query.
fn load_every_grammar() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("a.rs", "fn a() {}\n"),
        ("a.py", "def a():\n    pass\n"),
        ("a.go", "package a\nfunc A() {}\n"),
        ("A.java", "class A { void a() {} }\n"),
        ("a.js", "function a() {}\n"),
        ("a.ts", "function a(): void {}\n"),
        ("a.tsx", "const A = () => <div />;\n"),
        ("a.c", "int a(void) { return 0; }\n"),
        ("a.cpp", "class A { public: ~A() {} };\n"),
        ("A.cs", "namespace N { class A { void B() {} } }\n"),
        ("a.rb", "class A\n  def b; end\nend\n"),
        ("a.php", "<?php\nfunction a() {}\n"),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    drop(engine.analyse(&RepoSource::Local(dir.path().to_path_buf())));
}

fn measure_memory(root: &Path, git: bool, all_grammars: bool) -> Option<Memory> {
    let mut child = std::process::Command::new(std::env::current_exe().ok()?);
    if git {
        child.env(CHILD_GIT_ENV, "1");
    }
    if all_grammars {
        child.env(CHILD_ALL_GRAMMARS_ENV, "1");
    }
    let out = child
        .env(CHILD_ENV, root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .lines()
        .last()?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [files, source_bytes, baseline_kib, peak_kib] = f[..] else {
        return None;
    };
    Some(Memory {
        files: usize::try_from(files).ok()?,
        source_bytes: usize::try_from(source_bytes).ok()?,
        baseline_kib,
        peak_kib,
    })
}

/// A tree's peak in a fresh process (the target's figure: what analysing this
/// tree takes, its own grammars included) and, for comparison, in a process
/// that already holds every grammar.
fn memory_rows(name: &str, root: &Path, git: bool, rows: &mut Vec<(String, String)>) {
    let Some(m) = measure_memory(root, git, false) else {
        rows.push((format!("{name}: peak memory"), "not measured".into()));
        return;
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let src = m.source_bytes as f64 / 1024.0;
    rows.push((
        format!("{name}: files / source MiB / RSS before analysing MiB"),
        format!(
            "{} / {:.1} / {:.1}",
            m.files,
            src / 1024.0,
            mib(m.baseline_kib)
        ),
    ));
    let ratio = m.peak_kib as f64 / src;
    rows.push((
        format!("{name}: peak RSS MiB, ratio to source (target <= {MAX_MEMORY_RATIO})"),
        format!(
            "{:.1}, {ratio:.2}x {} (above its start: {:.1}, {:.2}x)",
            mib(m.peak_kib),
            verdict(ratio <= MAX_MEMORY_RATIO),
            mib(m.peak_kib.saturating_sub(m.baseline_kib)),
            m.peak_kib.saturating_sub(m.baseline_kib) as f64 / src
        ),
    ));
    if let Some(all) = measure_memory(root, git, true) {
        rows.push((
            format!("{name}: peak RSS MiB with every grammar already loaded"),
            format!(
                "{:.1}, {:.2}x ({:.1} of it before analysing)",
                mib(all.peak_kib),
                all.peak_kib as f64 / src,
                mib(all.baseline_kib)
            ),
        ));
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l[field.len()..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}
