//! Retrieval evaluation: builds (request, expected files) cases from the history of
//! local git repositories at run time and scores the engine against plain BM25
//! and code-aware BM25 with recall@1/5/10 and MRR@10, per set (tuning / test),
//! language and repository (see `eval/README.md`).
//!
//! A case is a non-merge commit touching 1–5 source files (at most 20 files in
//! all), at least one of which existed in its parent, with a message of at least
//! a few words; the request is the message, the answer the changed files, and
//! every ranker sees the parent's tree.
//!
//! Usage: `codemap-eval [--split FILE] [--mirror DIR] [--per-repo N]
//! [--set test|tuning|all] [--fit] [--levers] [--cold N] [--history N] [GIT_DIR...]`

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use contexten_codemap::{
    CoChange, CodeMap, Engine, EngineConfig, Language, Query, RERANK_FEATURES, RankParams,
    RepoSource, baseline_rank, code_aware_rank,
};

const MAX_FILES: usize = 5;
const MAX_ALL_FILES: usize = 20;
const MIN_WORDS: usize = 4;
const KS: [usize; 3] = [1, 5, 10];
/// Commits of history before a case's parent the co-change table counts.
const DEFAULT_HISTORY: usize = 1000;

struct Repo {
    name: String,
    language: String,
    set: String,
    git_dir: PathBuf,
}

struct Case {
    repo: usize,
    commit: String,
    parent: String,
    request: String,
    expected: Vec<String>,
}

#[derive(Default, Clone)]
struct Scores {
    n: usize,
    recall: [f64; 3],
    mrr: f64,
}

impl Scores {
    fn add(&mut self, ranked: &[String], expected: &[String]) {
        self.n += 1;
        for (i, k) in KS.iter().enumerate() {
            let hit = expected
                .iter()
                .filter(|e| ranked.iter().take(*k).any(|r| r == *e))
                .count();
            self.recall[i] += hit as f64 / expected.len() as f64;
        }
        if let Some(pos) = ranked.iter().take(10).position(|r| expected.contains(r)) {
            self.mrr += 1.0 / (pos + 1) as f64;
        }
    }

    fn r10(&self) -> f64 {
        self.recall[2] / self.n.max(1) as f64
    }

    fn mrr(&self) -> f64 {
        self.mrr / self.n.max(1) as f64
    }

    fn cells(&self) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "{} | {:.3} | {:.3} | {:.3} | {:.3}",
            self.n,
            self.recall[0] / n,
            self.recall[1] / n,
            self.recall[2] / n,
            self.mrr / n
        )
    }
}

/// A ranking configuration scored on every case.
struct Variant {
    name: String,
    params: RankParams,
    history: bool,
}

struct Options {
    split: PathBuf,
    mirror: PathBuf,
    per_repo: usize,
    set: String,
    fit: bool,
    fit_rerank: bool,
    levers: bool,
    cold: usize,
    history: usize,
    dirs: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        split: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/eval/split.toml")),
        mirror: PathBuf::from(
            std::env::var("CODEMAP_EVAL_MIRROR").unwrap_or_else(|_| "/work/.mirror".into()),
        ),
        per_repo: 60,
        set: "all".into(),
        fit: false,
        fit_rerank: false,
        levers: false,
        cold: 0,
        history: DEFAULT_HISTORY,
        dirs: Vec::new(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cold-one" => {
                let dir = args.next().context("--cold-one GIT_DIR PARENT")?;
                let parent = args.next().context("--cold-one GIT_DIR PARENT")?;
                let history: usize = args.next().map_or(Ok(DEFAULT_HISTORY), |h| h.parse())?;
                return cold_one(&dir, &parent, history);
            }
            "--split" => o.split = args.next().context("--split FILE")?.into(),
            "--mirror" => o.mirror = args.next().context("--mirror DIR")?.into(),
            "--per-repo" => o.per_repo = args.next().context("--per-repo N")?.parse()?,
            "--set" => o.set = args.next().context("--set test|tuning|all")?,
            "--fit" => o.fit = true,
            "--fit-rerank" => o.fit_rerank = true,
            "--levers" => o.levers = true,
            "--cold" => o.cold = args.next().context("--cold N")?.parse()?,
            "--history" => o.history = args.next().context("--history N")?.parse()?,
            _ => o.dirs.push(PathBuf::from(a)),
        }
    }
    let repos = repositories(&o)?;
    let mut cases = Vec::new();
    for (ri, r) in repos.iter().enumerate() {
        let c = cases_from_history(&r.git_dir, ri, o.per_repo)
            .with_context(|| format!("while reading history of {}", r.git_dir.display()))?;
        eprintln!("{} ({}, {}): {} cases", r.name, r.language, r.set, c.len());
        cases.extend(c);
    }
    let variants = variants(&o);
    run(&o, &repos, &cases, &variants)
}

/// The repositories to score: the split file's (those present), or the
/// directories given on the command line (as set `adhoc`).
fn repositories(o: &Options) -> anyhow::Result<Vec<Repo>> {
    if !o.dirs.is_empty() {
        return Ok(o
            .dirs
            .iter()
            .map(|d| Repo {
                name: repo_name(&d.display().to_string()),
                language: "mixed".into(),
                set: "adhoc".into(),
                git_dir: d.clone(),
            })
            .collect());
    }
    let text = std::fs::read_to_string(&o.split)
        .with_context(|| format!("reading {}", o.split.display()))?;
    let mut repos = Vec::new();
    let mut missing = Vec::new();
    for (name, language, set) in parse_split(&text) {
        if o.set != "all" && o.set != set {
            continue;
        }
        let git_dir = o.mirror.join(name.replace('/', "+")).join("repo");
        if !is_git_dir(&git_dir) {
            missing.push(name);
            continue;
        }
        repos.push(Repo {
            name,
            language,
            set,
            git_dir,
        });
    }
    if !missing.is_empty() {
        eprintln!(
            "eval: {} repositories missing under {} (fetch them with full history, e.g. \
             `git clone --bare https://github.com/<owner>/<name> {}/<owner>+<name>/repo`, \
             or the session's fetch tool): {}",
            missing.len(),
            o.mirror.display(),
            o.mirror.display(),
            missing.join(", ")
        );
    }
    if repos.is_empty() {
        bail!("no repository of the split is on this machine");
    }
    Ok(repos)
}

/// `[[repo]]` tables of `name`, `language` and `set` (a small subset of TOML).
fn parse_split(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut flush = |cur: &mut BTreeMap<String, String>| {
        if let (Some(n), Some(l), Some(s)) = (cur.get("name"), cur.get("language"), cur.get("set"))
        {
            out.push((n.clone(), l.clone(), s.clone()));
        }
        cur.clear();
    };
    for line in text.lines().map(str::trim) {
        if line == "[[repo]]" {
            flush(&mut cur);
        } else if let Some((k, v)) = line.split_once('=') {
            if !line.starts_with('#') {
                cur.insert(k.trim().into(), v.trim().trim_matches('"').into());
            }
        }
    }
    flush(&mut cur);
    out
}

fn is_git_dir(p: &Path) -> bool {
    Command::new("git")
        .arg("--git-dir")
        .arg(p)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The configurations scored besides the defaults.
fn variants(o: &Options) -> Vec<Variant> {
    let d = RankParams::default();
    let mut v = Vec::new();
    // CODEMAP_EVAL_GRID="w_pagerank=0.1,hub_damping=0.5;w_title=2" scores extra sets.
    for s in std::env::var("CODEMAP_EVAL_GRID")
        .unwrap_or_default()
        .split(';')
        .filter(|s| !s.is_empty())
    {
        v.push(Variant {
            name: format!("grid {s}"),
            params: d.with_overrides(s),
            history: true,
        });
    }
    if o.levers {
        // Each lever turned off from the defaults (ablation), plus co-change
        // without history at all (a shallow clone in production).
        for (name, spec) in [
            (
                "previous defaults (before issue 20)",
                "w_bm25=0.6,w_pagerank=0.3,w_mention=1,seed_top=10,non_code=0.5,vendored=1,\
                 w_title=1,w_body=1,w_cochange=0,w_churn=0,w_recent=0,w_active=0,\
                 w_similar=0,w_reference=0,rerank=0",
            ),
            ("no history at all (co-change, churn, active files)", ""),
            ("no title/body weighting", "w_title=1,w_body=1"),
            ("no test prior", "test_file=1"),
            ("no recency", "w_recent=0"),
            ("no active-file prior", "w_active=0"),
            ("no vendored prior", "vendored=1"),
            ("no non-code prior", "non_code=1"),
            ("no co-change", "w_cochange=0"),
            ("no churn", "w_churn=0"),
            ("no personalised PageRank", "w_pagerank=0"),
            ("no companion", "companion=0"),
            ("no similar past commits", "w_similar=0"),
            ("no referenced change (#123)", "w_reference=0"),
            ("no reranker (hand-fitted fusion only)", "rerank=0"),
        ] {
            v.push(Variant {
                name: format!("lever: {name}"),
                params: d.with_overrides(spec),
                history: !name.starts_with("no history"),
            });
        }
    }
    if o.fit {
        // One round of coordinate moves: each parameter alone over a range,
        // the others at their defaults.
        let grid: &[(&str, &[f32])] = &[
            ("w_active", &[0.2, 0.4, 0.8, 1.5]),
            ("w_recent", &[0.0, 1.0, 2.0, 4.0]),
            ("w_churn", &[0.0, 0.5, 1.0]),
            ("w_cochange", &[0.1, 0.25, 0.5]),
            ("vendored", &[0.3, 0.6, 1.0]),
            ("non_code", &[0.1, 0.2, 0.3]),
        ];
        for (k, vals) in grid {
            for x in *vals {
                let spec = format!("{k}={x}");
                v.push(Variant {
                    name: format!("fit {spec}"),
                    params: d.with_overrides(&spec),
                    history: true,
                });
            }
        }
    }
    v
}

/// Per (set, group) scores of one ranker, in insertion order of groups.
type Table = BTreeMap<(String, String), Scores>;

fn run(o: &Options, repos: &[Repo], cases: &[Case], variants: &[Variant]) -> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    let defaults = RankParams::default();
    let rankers = ["engine", "code-aware BM25", "plain BM25"];
    let mut tables: Vec<Table> = vec![Table::new(); rankers.len()];
    let mut variant_scores: Vec<BTreeMap<String, Scores>> = vec![BTreeMap::new(); variants.len()];
    let started = Instant::now();
    let mut query_ms = Vec::new();
    let mut rerank_data: Vec<Vec<(bool, [f32; RERANK_FEATURES])>> = Vec::new();
    let mut dump = match std::env::var_os("CODEMAP_EVAL_DUMP") {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(&p).context("creating CODEMAP_EVAL_DUMP")?,
        )),
        None => None,
    };
    let mut cold_sample: Vec<usize> = Vec::new();
    let mut per_repo_seen: BTreeMap<usize, usize> = BTreeMap::new();
    for (ci, case) in cases.iter().enumerate() {
        let repo = &repos[case.repo];
        let src = RepoSource::Git {
            url: repo.git_dir.display().to_string(),
            reference: Some(case.parent.clone()),
        };
        let map = engine
            .analyse(&src)
            .with_context(|| format!("analysing {} at {}", repo.name, case.parent))?;
        let expected: Vec<String> = case
            .expected
            .iter()
            .filter(|p| {
                map.find_file(p)
                    .is_some_and(|i| map.files()[i as usize].path == **p)
            })
            .cloned()
            .collect();
        if expected.is_empty() {
            continue;
        }
        let history = CoChange::from_git(&repo.git_dir, &case.parent, o.history)
            .with_context(|| format!("history of {} at {}", repo.name, case.parent))?;
        let q = Query::new(case.request.clone(), 10);
        let t = Instant::now();
        let ranked = paths(&map, &q, &defaults, Some(&history));
        query_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let files = map.files();
        let plain_docs: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.path.clone(), f.content.to_string()))
            .collect();
        let plain = baseline_rank(&plain_docs, &case.request, 10);
        drop(plain_docs);
        let aware_docs: Vec<(String, String, Vec<String>)> = files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    f.content.to_string(),
                    f.analysis.symbols.iter().map(|s| s.name.clone()).collect(),
                )
            })
            .collect();
        let aware = code_aware_rank(&aware_docs, &case.request, 10);
        drop(aware_docs);
        let groups = [
            "ALL".to_owned(),
            format!("lang {}", repo.language),
            format!("repo {}", repo.name),
        ];
        for (table, r) in tables.iter_mut().zip([&ranked, &aware, &plain]) {
            for g in &groups {
                table
                    .entry((repo.set.clone(), g.clone()))
                    .or_default()
                    .add(r, &expected);
            }
        }
        for (v, sc) in variants.iter().zip(variant_scores.iter_mut()) {
            let r = paths(&map, &q, &v.params, v.history.then_some(&history));
            sc.entry(repo.set.clone()).or_default().add(&r, &expected);
        }
        if std::env::var_os("CODEMAP_EVAL_RANKS").is_some() {
            // Where each expected file lands in a 100-deep ranking (a miss
            // past 100 prints "-"), for reading the failures of one repository.
            let deep = paths(
                &map,
                &Query::new(case.request.clone(), 100),
                &defaults,
                Some(&history),
            );
            let ranks: Vec<String> = expected
                .iter()
                .map(|e| match deep.iter().position(|p| p == e) {
                    Some(i) => format!("{}:{e}", i + 1),
                    None => format!("-:{e}"),
                })
                .collect();
            eprintln!(
                "RANKS\t{}\t{}\t{}\t{}\t{}",
                repo.name,
                &case.commit[..8],
                ranks.join(" "),
                deep[..deep.len().min(10)].join(" "),
                case.request.replace('\t', " ").replace('\n', " \\n ")
            );
        }
        if std::env::var_os("CODEMAP_EVAL_VERBOSE").is_some() {
            eprintln!(
                "{} {} expected={:?}\n  engine={:?}\n  aware={:?}",
                repo.name,
                &case.commit[..8],
                expected,
                &ranked[..ranked.len().min(5)],
                &aware[..aware.len().min(5)]
            );
        }
        if let Some(dump) = &mut dump {
            // CODEMAP_EVAL_DUMP=<file>: every case's reranker candidates, one
            // row each (set, repo, case, expected files, label, features, path,
            // parent commit, request as JSON), for fitting outside this binary.
            let candidates = map.rerank_candidates(&q, &defaults, Some(&history));
            let request = serde_json::to_string(&case.request)?;
            for (path, f) in candidates {
                let row: Vec<String> = f.iter().map(|x| format!("{x:.5}")).collect();
                writeln!(
                    dump,
                    "{}\t{}\t{ci}\t{}\t{}\t{}\t{}\t{}\t{}",
                    repo.set,
                    repo.name,
                    expected.len(),
                    u8::from(expected.contains(&path)),
                    row.join(","),
                    path,
                    case.parent,
                    request
                )?;
            }
        }
        if o.fit_rerank && repo.set == "tuning" {
            let candidates = map.rerank_candidates(&q, &defaults, Some(&history));
            rerank_data.push(
                candidates
                    .into_iter()
                    .map(|(path, f)| (expected.contains(&path), f))
                    .collect(),
            );
        }
        if std::env::var_os("CODEMAP_EVAL_MISSES").is_some() {
            // Where each expected file the top 10 missed ranks in the full order.
            let all = map.query_history(
                &Query::new(case.request.clone(), files.len()),
                &defaults,
                Some(&history),
            );
            for e in expected.iter().filter(|e| !ranked.contains(e)) {
                let at = all.iter().position(|r| &r.path == e);
                let c = at.map(|i| all[i].components);
                eprintln!(
                    "MISS {} {} {e} rank={} of {} {:?} title={:?}",
                    repo.set,
                    repo.name,
                    at.map_or("none".to_owned(), |i| (i + 1).to_string()),
                    files.len(),
                    c,
                    case.request.lines().next().unwrap_or("")
                );
            }
        }
        // Cold-latency sample: the first `cold` usable cases of each test (or
        // ad-hoc) repository.
        let seen = per_repo_seen.entry(case.repo).or_default();
        if repo.set != "tuning" && *seen < o.cold {
            cold_sample.push(ci);
        }
        *seen += 1;
    }
    if let Some(mut dump) = dump {
        dump.flush().context("writing CODEMAP_EVAL_DUMP")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sets: Vec<String> = {
        let mut s: Vec<String> = repos.iter().map(|r| r.set.clone()).collect();
        s.sort_by_key(|x| match x.as_str() {
            "test" => 0,
            "tuning" => 1,
            _ => 2,
        });
        s.dedup();
        s
    };
    for set in &sets {
        let label = match set.as_str() {
            "test" => "TEST set (held out: never used to choose weights or levers)",
            "tuning" => "TUNING set (weights and levers were fitted on these cases)",
            _ => "ad-hoc repositories",
        };
        println!("\n## {label}\n");
        println!("| group | ranker | cases | R@1 | R@5 | R@10 | MRR@10 |");
        println!("|---|---|---|---|---|---|---|");
        let groups: Vec<String> = tables[0]
            .keys()
            .filter(|(s, _)| s == set)
            .map(|(_, g)| g.clone())
            .collect();
        let mut ordered: Vec<&String> = groups.iter().filter(|g| *g == "ALL").collect();
        ordered.extend(groups.iter().filter(|g| g.starts_with("lang ")));
        ordered.extend(groups.iter().filter(|g| g.starts_with("repo ")));
        for g in ordered {
            for (name, table) in rankers.iter().zip(&tables) {
                if let Some(s) = table.get(&(set.clone(), g.clone())) {
                    let bold = if *name == "engine" { "**" } else { "" };
                    println!("| {bold}{g}{bold} | {name} | {} |", s.cells());
                }
            }
        }
        if let (Some(e), Some(a)) = (
            tables[0].get(&(set.clone(), "ALL".to_owned())),
            tables[1].get(&(set.clone(), "ALL".to_owned())),
        ) {
            println!(
                "\nR@10 engine {:.3} vs code-aware BM25 {:.3}: {:+.1} points; MRR@10 {:.3} vs {:.3}",
                e.r10(),
                a.r10(),
                100.0 * (e.r10() - a.r10()),
                e.mrr(),
                a.mrr()
            );
        }
    }
    if !variants.is_empty() {
        println!("\n## Variants (R@10 / MRR@10 per set; defaults first)\n");
        println!(
            "| variant | {} |",
            sets.iter()
                .map(|s| format!("{s} R@10 | {s} MRR"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        println!("|---|{}", "---|---|".repeat(sets.len()));
        let defaults_row: Vec<String> = sets
            .iter()
            .map(|s| {
                tables[0]
                    .get(&(s.clone(), "ALL".to_owned()))
                    .map_or("- | -".into(), |x| {
                        format!("{:.3} | {:.3}", x.r10(), x.mrr())
                    })
            })
            .collect();
        println!("| defaults | {} |", defaults_row.join(" | "));
        for (v, sc) in variants.iter().zip(&variant_scores) {
            let row: Vec<String> = sets
                .iter()
                .map(|s| {
                    sc.get(s).map_or("- | -".into(), |x| {
                        format!("{:.3} | {:.3}", x.r10(), x.mrr())
                    })
                })
                .collect();
            println!("| {} | {} |", v.name, row.join(" | "));
        }
        if o.fit {
            print_fit(variants, &variant_scores);
        }
    }
    query_ms.sort_by(f64::total_cmp);
    println!(
        "\nelapsed {elapsed:.1}s; warm engine query median {:.1} ms, p95 {:.1} ms",
        percentile(&query_ms, 0.5),
        percentile(&query_ms, 0.95)
    );
    if o.fit_rerank {
        fit_rerank(&rerank_data);
    }
    if !cold_sample.is_empty() {
        cold_latency(o, repos, cases, &cold_sample)?;
    }
    Ok(())
}

/// The best value of each fitted parameter on the tuning set (objective R@10 + MRR@10).
fn print_fit(variants: &[Variant], scores: &[BTreeMap<String, Scores>]) {
    let mut best: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for (v, sc) in variants.iter().zip(scores) {
        let Some(spec) = v.name.strip_prefix("fit ") else {
            continue;
        };
        let Some(s) = sc.get("tuning") else {
            continue;
        };
        let key = spec.split('=').next().unwrap_or(spec).to_owned();
        let obj = s.r10() + s.mrr();
        let e = best.entry(key).or_insert((f64::MIN, String::new()));
        if obj > e.0 + 1e-9 {
            *e = (obj, spec.to_owned());
        }
    }
    let specs: Vec<String> = best.values().map(|(_, s)| s.clone()).collect();
    println!(
        "\nfit (tuning set, best single moves by R@10 + MRR@10): {}",
        specs.join(",")
    );
}

fn paths(map: &CodeMap, q: &Query, p: &RankParams, h: Option<&CoChange>) -> Vec<String> {
    map.query_history(q, p, h)
        .into_iter()
        .map(|r| r.path)
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Fits the reranker's weights on the tuning cases' candidates with a
/// pairwise logistic loss (every expected file against every other candidate
/// of its case, each case weighing the same, L2 1e-3), by gradient descent,
/// and prints them with R@10 / MRR@10 over the candidates before and after.
fn fit_rerank(cases: &[Vec<(bool, [f32; RERANK_FEATURES])>]) {
    const L2: f32 = 1e-3;
    let usable: Vec<&Vec<(bool, [f32; RERANK_FEATURES])>> = cases
        .iter()
        .filter(|c| c.iter().any(|x| x.0) && c.iter().any(|x| !x.0))
        .collect();
    let mut w = [0.0f32; RERANK_FEATURES];
    w[0] = 1.0; // start from the hand-fused order
    // CODEMAP_EVAL_RERANK_FROZEN="17,4": features held at 0 (ablation).
    let frozen: Vec<usize> = std::env::var("CODEMAP_EVAL_RERANK_FROZEN")
        .unwrap_or_default()
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    let (mut m, mut v) = ([0.0f32; RERANK_FEATURES], [0.0f32; RERANK_FEATURES]);
    let score = |w: &[f32; RERANK_FEATURES], f: &[f32; RERANK_FEATURES]| -> f32 {
        w.iter().zip(f).map(|(a, b)| a * b).sum()
    };
    for step in 1..=3000 {
        let mut grad = [0.0f32; RERANK_FEATURES];
        let mut loss = 0.0f32;
        for c in &usable {
            let pairs = c.iter().filter(|x| x.0).count() * c.iter().filter(|x| !x.0).count();
            let norm = 1.0 / (pairs as f32 * usable.len() as f32);
            for (_, pos) in c.iter().filter(|x| x.0) {
                let sp = score(&w, pos);
                for (_, neg) in c.iter().filter(|x| !x.0) {
                    let d = sp - score(&w, neg);
                    loss += norm * (1.0 + (-d).exp()).ln();
                    let g = -1.0 / (1.0 + d.exp());
                    for k in 0..RERANK_FEATURES {
                        grad[k] += norm * g * (pos[k] - neg[k]);
                    }
                }
            }
        }
        // Adam, learning rate 0.01.
        for k in 0..RERANK_FEATURES {
            let g = grad[k] + L2 * w[k];
            m[k] = 0.9 * m[k] + 0.1 * g;
            v[k] = 0.999 * v[k] + 0.001 * g * g;
            let mh = m[k] / (1.0 - 0.9f32.powi(step));
            let vh = v[k] / (1.0 - 0.999f32.powi(step));
            w[k] -= 0.01 * mh / (vh.sqrt() + 1e-8);
        }
        for k in frozen.iter().copied().filter(|k| *k < RERANK_FEATURES) {
            w[k] = 0.0;
        }
        if step % 500 == 0 {
            eprintln!("fit-rerank step {step}: loss {loss:.4}");
        }
    }
    let metrics = |w: &[f32; RERANK_FEATURES]| {
        let (mut r10, mut mrr) = (0.0f32, 0.0f32);
        for c in cases {
            let total = c.iter().filter(|x| x.0).count().max(1) as f32;
            let mut order: Vec<usize> = (0..c.len()).collect();
            order.sort_by(|a, b| {
                score(w, &c[*b].1)
                    .total_cmp(&score(w, &c[*a].1))
                    .then(a.cmp(b))
            });
            let hits = order.iter().take(10).filter(|i| c[**i].0).count() as f32;
            r10 += hits / total;
            if let Some(r) = order.iter().take(10).position(|i| c[*i].0) {
                mrr += 1.0 / (r as f32 + 1.0);
            }
        }
        let n = cases.len().max(1) as f32;
        (r10 / n, mrr / n)
    };
    let mut hand = [0.0f32; RERANK_FEATURES];
    hand[0] = 1.0;
    let (hr, hm) = metrics(&hand);
    let (fr, fm) = metrics(&w);
    println!(
        "rerank fit on {} tuning cases ({} with a pair): over the top candidates, hand order R@10 {hr:.3} MRR@10 {hm:.3}; fitted R@10 {fr:.3} MRR@10 {fm:.3}",
        cases.len(),
        usable.len()
    );
    println!(
        "const RERANK_WEIGHTS: [f32; RERANK_FEATURES] = [{}];",
        w.iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Spawns this binary once per sampled case (`--cold-one`): process start, a
/// cold analysis with no cache, the history read and one query, timed from
/// outside.
fn cold_latency(
    o: &Options,
    repos: &[Repo],
    cases: &[Case],
    sample: &[usize],
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut ms = Vec::new();
    let mut sizes = Vec::new();
    for &ci in sample {
        let case = &cases[ci];
        let repo = &repos[case.repo];
        let t = Instant::now();
        let mut child = Command::new(&exe)
            .arg("--cold-one")
            .arg(&repo.git_dir)
            .arg(&case.parent)
            .arg(o.history.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning a cold query")?;
        child
            .stdin
            .take()
            .context("child stdin")?
            .write_all(case.request.as_bytes())?;
        let out = child.wait_with_output()?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let files: usize = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        sizes.push(files);
    }
    ms.sort_by(f64::total_cmp);
    sizes.sort_unstable();
    println!(
        "cold query (process start + analysis without cache + history + query), {} cases from {} repositories \
         ({}–{} files per tree): median {:.0} ms, p95 {:.0} ms",
        ms.len(),
        sample
            .iter()
            .map(|c| cases[*c].repo)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        sizes.first().copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95)
    );
    Ok(())
}

/// The child side of [`cold_latency`]: prints the number of files analysed and the top file.
fn cold_one(dir: &str, parent: &str, history: usize) -> anyhow::Result<()> {
    let mut request = String::new();
    std::io::stdin().read_to_string(&mut request)?;
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    let t0 = Instant::now();
    let map = engine.analyse(&RepoSource::Git {
        url: dir.to_owned(),
        reference: Some(parent.to_owned()),
    })?;
    let t_an = t0.elapsed();
    let p = RankParams::default();
    let h = if p.w_cochange > 0.0 || p.w_churn > 0.0 {
        Some(CoChange::from_git(Path::new(dir), parent, history)?)
    } else {
        None
    };
    let t_h = t0.elapsed();
    let r = map.query_history(&Query::new(request, 10), &p, h.as_ref());
    if std::env::var_os("CODEMAP_EVAL_PHASES").is_some() {
        eprintln!(
            "phases: analyse {:?} history {:?} query {:?}",
            t_an,
            t_h - t_an,
            t0.elapsed() - t_h
        );
    }
    println!(
        "{} {}",
        map.files().len(),
        r.first().map_or("-", |f| f.path.as_str())
    );
    Ok(())
}

fn repo_name(git_dir: &str) -> String {
    let p = git_dir
        .trim_end_matches('/')
        .trim_end_matches("/repo")
        .trim_end_matches("/.git");
    p.rsplit('/').next().unwrap_or(p).replace('+', "/")
}

fn cases_from_history(git_dir: &Path, repo: usize, limit: usize) -> anyhow::Result<Vec<Case>> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args([
            "log",
            "--no-merges",
            "--no-renames",
            "--name-status",
            "--format=%x1e%H %P%x1f%B%x1f",
            "HEAD",
        ])
        .output()
        .context("running git log")?;
    if !out.status.success() {
        bail!("git log failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = String::from_utf8_lossy(&out.stdout);
    let mut cases = Vec::new();
    for rec in log.split('\x1e').filter(|r| !r.trim().is_empty()) {
        let mut parts = rec.splitn(3, '\x1f');
        let (Some(ids), Some(body), Some(files)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mut ids = ids.split_whitespace();
        let (Some(commit), Some(parent)) = (ids.next(), ids.next()) else {
            continue;
        };
        let request = clean_message(body);
        if request.split_whitespace().count() < MIN_WORDS || is_noise(&request) {
            continue;
        }
        // Expected = modified or deleted source files (they existed in the parent);
        // the 1..=5 limit counts every touched source file, added ones included.
        // Commits touching only docs, lock or config files have no source file
        // and are skipped.
        let mut source = Vec::new();
        let mut touched = 0usize;
        let mut all = 0usize;
        for line in files.lines().filter(|l| !l.is_empty()) {
            let Some((status, path)) = line.split_once('\t') else {
                continue;
            };
            all += 1;
            if !Language::from_path(path).is_parsed() {
                continue;
            }
            touched += 1;
            if status.starts_with('M') || status.starts_with('D') {
                source.push(path.to_owned());
            }
        }
        if source.is_empty() || touched > MAX_FILES || all > MAX_ALL_FILES {
            continue;
        }
        cases.push(Case {
            repo,
            commit: commit.to_owned(),
            parent: parent.to_owned(),
            request,
            expected: source,
        });
        if cases.len() >= limit {
            break;
        }
    }
    Ok(cases)
}

/// Drops trailers (`Signed-off-by:` ...) that say nothing about the change.
fn clean_message(body: &str) -> String {
    body.lines()
        .filter(|l| {
            let t = l.trim_start();
            ![
                "Signed-off-by:",
                "Co-authored-by:",
                "Co-Authored-By:",
                "Reviewed-by:",
                "Change-Id:",
                "PR-URL:",
                "Fixes #",
                "Closes #",
            ]
            .iter()
            .any(|p| t.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

fn is_noise(msg: &str) -> bool {
    let l = msg.to_ascii_lowercase();
    [
        "bump version",
        "release ",
        "update changelog",
        "cargo fmt",
        "rustfmt",
        "gofmt",
        "typo",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_file_lists_ten_test_and_twelve_tuning_repositories() {
        let text = include_str!("../../eval/split.toml");
        let split = parse_split(text);
        let test: Vec<_> = split.iter().filter(|r| r.2 == "test").collect();
        let tuning: Vec<_> = split.iter().filter(|r| r.2 == "tuning").collect();
        assert_eq!((test.len(), tuning.len()), (10, 12));
        let langs: std::collections::BTreeSet<_> = test.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(langs.len(), 10, "one test repository per language");
        assert!(
            test.iter().all(|t| tuning.iter().all(|u| u.0 != t.0)),
            "no repository in both sets"
        );
    }

    #[test]
    fn metrics_count_recall_and_first_hit() {
        let mut s = Scores::default();
        let ranked: Vec<String> = ["a", "b", "c"].iter().map(|x| (*x).to_owned()).collect();
        s.add(&ranked, &["b".to_owned(), "z".to_owned()]);
        assert_eq!(s.recall, [0.0, 0.5, 0.5]);
        assert!((s.mrr - 0.5).abs() < 1e-9);
    }
}
