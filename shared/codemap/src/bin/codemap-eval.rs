//! Retrieval evaluation: builds (request, expected files) cases from the history of
//! local git repositories at run time and scores the engine against a plain
//! BM25-over-file-contents baseline with recall@1/5/10 and MRR.
//!
//! A case is a non-merge commit touching 1–5 source files that existed in its
//! parent, with a message of at least a few words; the request is the message, the
//! answer the changed files, and both rankers see the parent's tree.
//!
//! Usage: `codemap-eval [--per-repo N] [--json] GIT_DIR...`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use contexten_codemap::{
    Engine, EngineConfig, Language, Query, RankParams, RepoSource, baseline_rank,
};

const MAX_FILES: usize = 5;
const MIN_WORDS: usize = 4;
const KS: [usize; 3] = [1, 5, 10];

struct Case {
    repo: String,
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
        if let Some(pos) = ranked.iter().position(|r| expected.contains(r)) {
            self.mrr += 1.0 / (pos + 1) as f64;
        }
    }

    fn row(&self, name: &str) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "{name:<28} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            self.n,
            self.recall[0] / n,
            self.recall[1] / n,
            self.recall[2] / n,
            self.mrr / n
        )
    }
}

fn main() -> anyhow::Result<()> {
    let mut per_repo = 60usize;
    let mut repos: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--per-repo" => per_repo = args.next().context("--per-repo needs a number")?.parse()?,
            _ => repos.push(PathBuf::from(a)),
        }
    }
    if repos.is_empty() {
        bail!("usage: codemap-eval [--per-repo N] GIT_DIR...");
    }
    let mut cases = Vec::new();
    for r in &repos {
        let c = cases_from_history(r, per_repo)
            .with_context(|| format!("while reading history of {}", r.display()))?;
        eprintln!("{}: {} cases", r.display(), c.len());
        cases.extend(c);
    }
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    });
    // CODEMAP_EVAL_GRID="w_pagerank=0.1;hub_damping=0.5" scores extra parameter sets.
    let grid: Vec<(String, RankParams)> = std::env::var("CODEMAP_EVAL_GRID")
        .unwrap_or_default()
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|s| (s.to_owned(), RankParams::default().with_overrides(s)))
        .collect();
    let mut grid_scores: Vec<Scores> = vec![Scores::default(); grid.len()];
    let mut engine_scores: BTreeMap<String, Scores> = BTreeMap::new();
    let mut base_scores: BTreeMap<String, Scores> = BTreeMap::new();
    let mut langs: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    let mut query_ms = Vec::new();
    for case in &cases {
        let src = RepoSource::Git {
            url: case.repo.clone(),
            reference: Some(case.parent.clone()),
        };
        let map = engine
            .analyse(&src)
            .with_context(|| format!("analysing {} at {}", case.repo, case.parent))?;
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
        for p in &expected {
            *langs
                .entry(Language::from_path(p).name().to_owned())
                .or_default() += 1;
        }
        let t = Instant::now();
        let ranked: Vec<String> = map
            .query(&Query::new(case.request.clone(), 10))
            .into_iter()
            .map(|r| r.path)
            .collect();
        query_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        for ((_, params), sc) in grid.iter().zip(grid_scores.iter_mut()) {
            let r: Vec<String> = map
                .query_with(&Query::new(case.request.clone(), 10), params)
                .into_iter()
                .map(|r| r.path)
                .collect();
            sc.add(&r, &expected);
        }
        let files: Vec<(String, String)> = map
            .files()
            .iter()
            .map(|f| (f.path.clone(), f.content.to_string()))
            .collect();
        let base = baseline_rank(&files, &case.request, 10);
        let name = repo_name(&case.repo);
        for key in [name.clone(), "ALL".to_owned()] {
            engine_scores
                .entry(key.clone())
                .or_default()
                .add(&ranked, &expected);
            base_scores.entry(key).or_default().add(&base, &expected);
        }
        if std::env::var_os("CODEMAP_EVAL_VERBOSE").is_some() {
            eprintln!(
                "{} {} expected={:?}\n  engine={:?}\n  base={:?}",
                name,
                &case.commit[..8],
                expected,
                &ranked[..ranked.len().min(5)],
                &base[..base.len().min(5)]
            );
        }
    }
    query_ms.sort_by(f64::total_cmp);
    println!(
        "{:<28} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "ranker / repo", "cases", "R@1", "R@5", "R@10", "MRR"
    );
    for (repo, s) in &engine_scores {
        println!("{}", s.row(&format!("engine   {repo}")));
        if let Some(b) = base_scores.get(repo) {
            println!("{}", b.row(&format!("baseline {repo}")));
        }
    }
    for ((spec, _), sc) in grid.iter().zip(&grid_scores) {
        println!("{}", sc.row(&format!("grid {spec}")));
    }
    println!("expected files by language: {langs:?}");
    println!(
        "elapsed {:.1}s, engine query median {:.1} ms, engine stats {:?}",
        started.elapsed().as_secs_f64(),
        query_ms.get(query_ms.len() / 2).copied().unwrap_or(0.0),
        engine.stats()
    );
    Ok(())
}

fn repo_name(git_dir: &str) -> String {
    let p = git_dir
        .trim_end_matches('/')
        .trim_end_matches("/repo")
        .trim_end_matches("/.git");
    p.rsplit('/').next().unwrap_or(p).to_owned()
}

fn cases_from_history(git_dir: &std::path::Path, limit: usize) -> anyhow::Result<Vec<Case>> {
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
        let mut source = Vec::new();
        let mut touched = 0usize;
        for line in files.lines().filter(|l| !l.is_empty()) {
            let Some((status, path)) = line.split_once('\t') else {
                continue;
            };
            if !Language::from_path(path).is_parsed() {
                continue;
            }
            touched += 1;
            if status.starts_with('M') || status.starts_with('D') {
                source.push(path.to_owned());
            }
        }
        if source.is_empty() || touched > MAX_FILES {
            continue;
        }
        cases.push(Case {
            repo: git_dir.display().to_string(),
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
