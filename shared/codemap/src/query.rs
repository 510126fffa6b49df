//! Relevance: which files and symbols a request is about.
//!
//! Three signals are fused: BM25 over code-aware terms (path, symbol names, docs,
//! content), personalised PageRank over the reference/import graph seeded by the
//! lexical and explicit matches, and explicit mentions (paths, symbol names,
//! stack-trace frames, error messages found in the code).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::bm25::weigh_query;
use crate::cochange::CoChange;
use crate::codemap::{CodeMap, SymbolId, idx};
use crate::graph::{self, Adjacency};
use crate::parse::SymbolKind;
use crate::request::Request;
use crate::tokens;

const SYMBOLS_PER_FILE: usize = 5;
/// A reverse (definer → user) edge carries this share of the forward weight.
const REVERSE_EDGE: f32 = 0.3;

/// Fusion weights and priors of the ranking (defaults tuned on the retrieval
/// evaluation; see `eval/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RankParams {
    /// Weight of the normalised BM25 score.
    pub w_bm25: f32,
    /// Weight of the normalised personalised PageRank.
    pub w_pagerank: f32,
    /// Weight of explicit mentions.
    pub w_mention: f32,
    /// How many lexical hits seed the personalised PageRank.
    pub seed_top: usize,
    /// Exponent of the global PageRank the personalised one is divided by, so
    /// hubs everyone uses do not win every query (0 = off).
    pub hub_damping: f32,
    /// Score factor of files that are not source code (docs, config).
    pub non_code: f32,
    /// Share of a file's score given to its test / subject companion.
    pub companion: f32,
    /// Score factor of test files when the request does not speak of tests, so
    /// a test that repeats the subject's names does not outrank the subject.
    pub test_file: f32,
    /// Score factor of vendored and generated files (`vendor/`, `*.min.js`, `*.pb.go`).
    pub vendored: f32,
    /// Weight of the request's first line (its title) in the lexical query.
    pub w_title: f32,
    /// Weight of the rest of the request.
    pub w_body: f32,
    /// Share of a top file's score given to the files that changed with it
    /// (only when history is given, [`CodeMap::query_history`]).
    pub w_cochange: f32,
    /// How many top files pass score to their co-change neighbours.
    pub cochange_seeds: usize,
    /// Score boost of often-changed files: `score * (1 + w_churn * churn)`.
    pub w_churn: f32,
    /// Score boost of recently changed files: `score * (1 + w_recent * recency)`.
    pub w_recent: f32,
    /// Score added to recently changed source files whatever the request says,
    /// `w_active * recency`: a vague request is most likely about the code
    /// being worked on.
    pub w_active: f32,
    /// Score added to the files that past commits reading like the request
    /// touched, `w_similar * share` (share 0..1, the best such file 1).
    pub w_similar: f32,
    /// How many of the most similar past commits lend their files score.
    pub similar_commits: usize,
    /// Score added to the files of past commits that name an issue or pull
    /// request the request names (`#123`), `w_reference / sqrt(files)`.
    pub w_reference: f32,
    /// Weight of the match between the request and each file's past commit
    /// messages taken together.
    pub w_message_file: f32,
    /// Whether the learned reranker reorders the top [`RERANK_DEPTH`] files
    /// (0 = off; any other value = on).
    pub rerank: f32,
}

impl Default for RankParams {
    /// Fitted on the evaluation's tuning repositories only (coordinate moves
    /// over these weights, objective R@10 + MRR@10; `eval/README.md`).
    fn default() -> Self {
        Self {
            w_bm25: 1.0,
            w_pagerank: 0.2,
            w_mention: 0.5,
            seed_top: 15,
            hub_damping: 0.25,
            non_code: 0.1,
            companion: 0.3,
            test_file: 0.7,
            vendored: 0.3,
            w_title: 3.0,
            w_body: 0.75,
            w_cochange: 0.1,
            cochange_seeds: 5,
            w_churn: 0.5,
            w_recent: 0.0,
            w_active: 0.2,
            w_similar: 0.3,
            similar_commits: 10,
            w_reference: 1.0,
            w_message_file: 0.0,
            rerank: 1.0,
        }
    }
}

impl RankParams {
    /// Parses `key=value,...` overrides (used by the evaluation to explore weights).
    pub fn with_overrides(mut self, spec: &str) -> Self {
        for kv in spec.split(',').filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(x) = v.trim().parse::<f32>() else {
                continue;
            };
            match k.trim() {
                "w_bm25" => self.w_bm25 = x,
                "w_pagerank" => self.w_pagerank = x,
                "w_mention" => self.w_mention = x,
                "seed_top" => self.seed_top = x as usize,
                "hub_damping" => self.hub_damping = x,
                "non_code" => self.non_code = x,
                "companion" => self.companion = x,
                "test_file" => self.test_file = x,
                "vendored" => self.vendored = x,
                "w_title" => self.w_title = x,
                "w_body" => self.w_body = x,
                "w_cochange" => self.w_cochange = x,
                "cochange_seeds" => self.cochange_seeds = x as usize,
                "w_churn" => self.w_churn = x,
                "w_recent" => self.w_recent = x,
                "w_active" => self.w_active = x,
                "w_similar" => self.w_similar = x,
                "similar_commits" => self.similar_commits = x as usize,
                "w_reference" => self.w_reference = x,
                "w_message_file" => self.w_message_file = x,
                "rerank" => self.rerank = x,
                _ => {}
            }
        }
        self
    }
}

/// Explicit hints that come with a request (from the envelope or the CLI).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hints {
    /// Paths the requester named.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Symbols the requester named.
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Stack traces, logs or error messages pasted with the request.
    #[serde(default)]
    pub traces: Vec<String>,
}

/// A relevance query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The request text.
    pub text: String,
    /// Explicit hints.
    #[serde(default)]
    pub hints: Hints,
    /// How many files to return.
    pub top_k: usize,
}

impl Query {
    /// A query from text alone.
    pub fn new(text: impl Into<String>, top_k: usize) -> Self {
        Self {
            text: text.into(),
            hints: Hints::default(),
            top_k,
        }
    }
}

/// How a score was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreComponents {
    /// Lexical score, normalised to the best file (0..1).
    pub bm25: f32,
    /// Personalised PageRank, normalised to the best file (0..1).
    pub pagerank: f32,
    /// Explicit mention strength.
    pub mention: f32,
}

/// A relevant symbol inside a ranked file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedSymbol {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SymbolKind,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Declaration header.
    pub signature: String,
    /// Relevance.
    pub score: f32,
    /// Why it was chosen.
    pub reasons: Vec<String>,
}

/// A relevant file, best first in [`CodeMap::query`]'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedFile {
    /// Path.
    pub path: String,
    /// Fused score.
    pub score: f32,
    /// Most relevant symbols in the file.
    pub symbols: Vec<RankedSymbol>,
    /// Why it was chosen.
    pub reasons: Vec<String>,
    /// Score parts.
    pub components: ScoreComponents,
}

#[derive(Default)]
struct Mentions {
    files: BTreeMap<u32, (f32, Vec<String>)>,
    symbols: BTreeMap<SymbolId, (f32, String)>,
}

impl Mentions {
    fn file(&mut self, f: u32, w: f32, reason: String) {
        let e = self.files.entry(f).or_default();
        e.0 = e.0.max(w);
        if !e.1.contains(&reason) && e.1.len() < 4 {
            e.1.push(reason);
        }
    }

    fn symbol(&mut self, id: SymbolId, w: f32, reason: String) {
        let e = self.symbols.entry(id).or_insert((0.0, reason));
        e.0 = e.0.max(w);
    }
}

static FRAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?P<path>[A-Za-z0-9_.$\-/\\]+\.(?:py|pyi|rs|ts|tsx|js|jsx|mjs|cjs|go|java))(?:"?, line |:)(?P<line>\d+)"#)
        .unwrap_or_else(|e| panic!("frame regex: {e}"))
});
static PATH_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_.\-]+)+|[A-Za-z0-9_\-]+\.(?:py|rs|ts|tsx|js|jsx|go|java|toml|json|yaml|yml|md)\b")
        .unwrap_or_else(|e| panic!("path regex: {e}"))
});
static QUOTED_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""([^"\n]{10,200})"|'([^'\n]{10,200})'|`([^`\n]{10,200})`"#)
        .unwrap_or_else(|e| panic!("quoted regex: {e}"))
});
static IDENT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"`?([A-Za-z_][A-Za-z0-9_]*(?:(?:::|\.)[A-Za-z_][A-Za-z0-9_]*)*)(`|\()?")
        .unwrap_or_else(|e| panic!("ident regex: {e}"))
});

/// Share of a file's fused score a history or companion lift must make to be
/// named among its reasons.
const LIFT_REASON: f32 = 0.1;

/// How many of the hand-fused top files the reranker reorders.
pub const RERANK_DEPTH: usize = 30;
/// Features per file the reranker reads ([`CodeMap::rerank_candidates`]).
pub const RERANK_FEATURES: usize = 18;
/// The reranker's weights, one per feature, fitted on the evaluation's tuning
/// set with a pairwise logistic loss (`codemap-eval --fit-rerank`,
/// `eval/README.md`).
const RERANK_WEIGHTS: [f32; RERANK_FEATURES] = [
    1.1095, 0.9868, 0.2870, 0.6150, -0.1052, 0.6993, -2.4722, -0.4834, 0.2227, 1.4945, 0.1362,
    1.5355, 0.0591, 0.5827, -0.4830, 2.0036, 0.2544, 0.5816,
];

/// Per-file signals of one query and their hand-fitted fusion (`score`).
struct Signals {
    bm25: Vec<f32>,
    ppr: Vec<f32>,
    mention: Vec<f32>,
    about_tests: bool,
    history: HistorySignals,
    companion: Vec<f32>,
    score: Vec<f32>,
    /// The highest `score` (at least a tiny positive number, to divide by).
    best: f32,
    /// Terms of the request's first line.
    title: Vec<String>,
}

impl Signals {
    /// The top [`RERANK_DEPTH`] files by `score`, best first.
    fn candidates(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.score.len())
            .filter(|i| self.score[*i] > 0.0)
            .collect();
        order.sort_by(|a, b| self.score[*b].total_cmp(&self.score[*a]).then(a.cmp(b)));
        order.truncate(RERANK_DEPTH);
        order
    }
}

/// What the history said about each file (all zero without history).
#[derive(Default)]
struct HistorySignals {
    churn: Vec<f32>,
    recency: Vec<f32>,
    /// Share of the score lent by similar past commits (0..1).
    similar: Vec<f32>,
    /// Match of the file's past commit messages (0..1).
    message: Vec<f32>,
    /// Score lent by co-changed top files.
    cochange: Vec<f32>,
    /// File → subject of the similar past commit that lent it the most.
    similar_from: HashMap<usize, String>,
    /// Score lent by past commits naming an issue the request names.
    referenced: Vec<f32>,
    /// File → subject of the newest such commit.
    referenced_from: HashMap<usize, String>,
    /// File → the top file that lent it the most co-change score.
    cochange_from: HashMap<usize, usize>,
}

impl HistorySignals {
    fn at(v: &[f32], i: usize) -> f32 {
        v.get(i).copied().unwrap_or(0.0)
    }
}

impl CodeMap {
    /// Ranks files (and symbols inside them) by relevance to `q`. Deterministic.
    pub fn query(&self, q: &Query) -> Vec<RankedFile> {
        self.query_with(q, &RankParams::default())
    }

    /// [`CodeMap::query`] with explicit ranking parameters.
    pub fn query_with(&self, q: &Query, p: &RankParams) -> Vec<RankedFile> {
        self.query_history(q, p, None)
    }

    /// [`CodeMap::query_with`] that also uses the repository's history: files
    /// that changed together with the top files, and how often each changed.
    /// An empty history (a shallow clone) ranks as [`CodeMap::query_with`].
    pub fn query_history(
        &self,
        q: &Query,
        p: &RankParams,
        history: Option<&CoChange>,
    ) -> Vec<RankedFile> {
        if self.files.is_empty() || q.top_k == 0 {
            return Vec::new();
        }
        let (signals, mentions, weighted) = self.signals(q, p, history);
        let mut score = signals.score.clone();
        if p.rerank != 0.0 {
            self.rerank(&signals, &mut score, p);
        }
        let mut scored: Vec<(u32, f32)> = (0..self.files.len())
            .map(|i| (idx(i), score[i]))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| {
            b.1.total_cmp(&a.1).then_with(|| {
                self.files[a.0 as usize]
                    .path
                    .cmp(&self.files[b.0 as usize].path)
            })
        });
        scored.truncate(q.top_k);
        let term_set: Vec<(String, f32)> = weighted
            .iter()
            .map(|(t, w)| (t.clone(), w * self.bm25.idf(t)))
            .filter(|(_, w)| *w > 0.0)
            .collect();
        scored
            .into_iter()
            .map(|(f, score)| self.ranked_file(f, score, &mentions, &term_set, &signals, p))
            .collect()
    }

    /// The top [`RERANK_DEPTH`] files by the hand-fitted fusion with the
    /// reranker's features, best first (the evaluation fits the reranker on
    /// these).
    pub fn rerank_candidates(
        &self,
        q: &Query,
        p: &RankParams,
        history: Option<&CoChange>,
    ) -> Vec<(String, [f32; RERANK_FEATURES])> {
        if self.files.is_empty() {
            return Vec::new();
        }
        let (signals, _, _) = self.signals(q, p, history);
        signals
            .candidates()
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                (
                    self.files[i].path.clone(),
                    self.rerank_features(&signals, i, rank),
                )
            })
            .collect()
    }

    /// Every per-file signal of `q`, and the hand-fitted fusion of them.
    fn signals(
        &self,
        q: &Query,
        p: &RankParams,
        history: Option<&CoChange>,
    ) -> (Signals, Mentions, Vec<(String, f32)>) {
        let mut text = q.text.clone();
        for t in &q.hints.traces {
            text.push('\n');
            text.push_str(t);
        }
        let request = Request::parse(&text, p.w_title, p.w_body);
        let mut mentions = self.mentions(&text, &q.hints);
        for code in &request.code {
            self.identifier_mentions(code, true, &mut mentions);
        }
        let mut weighted = request.terms.clone();
        for s in q.hints.symbols.iter().chain(&q.hints.paths) {
            for t in tokens::query_terms(s) {
                weighted.push((t, 1.0));
            }
        }
        let raw = self.bm25.score(&weighted);
        let bm25 = normalise(&raw);

        let mut order: Vec<usize> = (0..raw.len()).filter(|i| raw[*i] > 0.0).collect();
        order.sort_by(|a, b| raw[*b].total_cmp(&raw[*a]).then(a.cmp(b)));
        let mut personal = vec![0.0f32; self.files.len()];
        for &i in order.iter().take(p.seed_top) {
            personal[i] += bm25[i] * bm25[i];
        }
        for (f, (w, _)) in &mentions.files {
            personal[*f as usize] += 2.0 * w;
        }
        let ppr = if personal.iter().any(|x| *x > 0.0) {
            let mut r = graph::pagerank(self.ppr_graph(), &personal);
            if p.hub_damping > 0.0 {
                let global = self.file_centrality();
                for (x, g) in r.iter_mut().zip(global) {
                    *x /= g.max(1e-9).powf(p.hub_damping);
                }
            }
            normalise(&r)
        } else {
            vec![0.0; self.files.len()]
        };

        let about_tests = ["test", "spec", "unittest", "pytest"]
            .iter()
            .any(|t| request.has(t));
        let test_factor = if about_tests { 1.0 } else { p.test_file };
        let tests = self.test_files();
        let base: Vec<f32> = (0..self.files.len())
            .map(|i| {
                let mention = mentions.files.get(&idx(i)).map_or(0.0, |m| m.0);
                let s = p.w_bm25 * bm25[i] + p.w_pagerank * ppr[i] + p.w_mention * mention;
                let f = &self.files[i];
                let s = if f.language.is_parsed() {
                    s
                } else {
                    s * p.non_code
                };
                let s = if mention == 0.0 && is_vendored_path(&f.path) {
                    s * p.vendored
                } else {
                    s
                };
                if tests[i] && mention == 0.0 {
                    s * test_factor
                } else {
                    s
                }
            })
            .collect();
        let (base, history) = match history.filter(|h| !h.is_empty()) {
            Some(h) => self.history_lift(base, p, h, &weighted, &text),
            None => (base, HistorySignals::default()),
        };
        let companion = self.companion_lift(&base, p.companion);
        let score: Vec<f32> = base.iter().zip(&companion).map(|(b, c)| b + c).collect();
        let mention: Vec<f32> = (0..self.files.len())
            .map(|i| mentions.files.get(&idx(i)).map_or(0.0, |m| m.0))
            .collect();
        let title = tokens::query_terms(text.trim_start().lines().next().unwrap_or(""));
        let best = score.iter().copied().fold(0.0f32, f32::max).max(1e-9);
        let signals = Signals {
            bm25,
            ppr,
            mention,
            about_tests,
            history,
            companion,
            score,
            best,
            title,
        };
        (signals, mentions, weighted)
    }

    /// Reorders the top [`RERANK_DEPTH`] files by the learned model, giving
    /// them the same set of scores in the new order (the rest keep theirs).
    fn rerank(&self, s: &Signals, score: &mut [f32], p: &RankParams) {
        let top = s.candidates();
        let mut values: Vec<f32> = top.iter().map(|i| score[*i]).collect();
        let mut model: Vec<(usize, f32)> = top
            .iter()
            .enumerate()
            .map(|(rank, &i)| {
                let f = self.rerank_features(s, i, rank);
                (i, f.iter().zip(RERANK_WEIGHTS).map(|(x, w)| x * w).sum())
            })
            .collect();
        model.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        values.sort_by(|a, b| b.total_cmp(a));
        for ((i, _), v) in model.into_iter().zip(values) {
            score[i] = v;
        }
        // The test prior holds between a file and its own test whatever the
        // model says: unless the request is about tests (or the prior is
        // off), the subject leads.
        if !s.about_tests && p.test_file < 1.0 {
            let tests = self.test_files();
            for &(a, b) in self.companion_pairs() {
                let (a, b) = (a as usize, b as usize);
                if !tests[a] && tests[b] && score[b] > score[a] && score[a] > 0.0 {
                    score.swap(a, b);
                }
            }
        }
    }

    /// The reranker's view of file `i`, `rank` (0-based) in the hand-fused order.
    fn rerank_features(&self, s: &Signals, i: usize, rank: usize) -> [f32; RERANK_FEATURES] {
        let f = &self.files[i];
        let best = s.best;
        let test = if self.test_files()[i] { 1.0 } else { 0.0 };
        let h = &s.history;
        let at = HistorySignals::at;
        // Share of the title's terms in the path, and in the names it defines.
        let (in_path, in_names) = if s.title.is_empty() {
            (0.0, 0.0)
        } else {
            let path = tokens::query_terms(&f.path);
            let names: Vec<String> = f
                .analysis
                .symbols
                .iter()
                .flat_map(|sym| tokens::query_terms(&sym.name))
                .collect();
            let share = |set: &[String]| {
                s.title.iter().filter(|t| set.contains(t)).count() as f32 / s.title.len() as f32
            };
            (share(&path), share(&names))
        };
        let bm25 = s.bm25[i];
        [
            s.score[i] / best,
            bm25,
            s.ppr[i],
            s.mention[i],
            test * if s.about_tests { 0.0 } else { 1.0 },
            test * if s.about_tests { 1.0 } else { 0.0 },
            if f.language.is_parsed() { 0.0 } else { 1.0 },
            if is_vendored_path(&f.path) { 1.0 } else { 0.0 },
            at(&h.churn, i),
            at(&h.recency, i),
            at(&h.similar, i),
            at(&h.message, i),
            at(&h.cochange, i) / best,
            s.companion[i] / best,
            (1.0 + rank as f32).ln(),
            in_path,
            in_names,
            bm25 * test,
        ]
    }

    /// Boosts often-changed files and lends each top file's score to the files
    /// that changed with it.
    fn history_lift(
        &self,
        mut base: Vec<f32>,
        p: &RankParams,
        h: &CoChange,
        request: &[(String, f32)],
        text: &str,
    ) -> (Vec<f32>, HistorySignals) {
        let n = base.len();
        let mut signals = HistorySignals {
            churn: self.files.iter().map(|f| h.churn(&f.path)).collect(),
            recency: self.files.iter().map(|f| h.recency(&f.path)).collect(),
            similar: vec![0.0; n],
            message: vec![0.0; n],
            cochange: vec![0.0; n],
            similar_from: HashMap::new(),
            referenced: vec![0.0; n],
            referenced_from: HashMap::new(),
            cochange_from: HashMap::new(),
        };
        for (path, x) in h.message_match(request) {
            if let Some(&f) = self.by_path.get(path) {
                signals.message[f as usize] = x;
                base[f as usize] += p.w_message_file * x;
            }
        }
        if p.w_similar > 0.0 && p.similar_commits > 0 {
            // Files of past changes described like this request, each commit's
            // similarity spread over its files (a one-file fix says more).
            let mut share = vec![0.0f32; base.len()];
            let mut strongest: HashMap<usize, (f32, &str)> = HashMap::new();
            for past in h.similar_commits(request, p.similar_commits) {
                let each = past.similarity / (past.files.len() as f32).sqrt();
                for path in past.files {
                    if let Some(&f) = self.by_path.get(path.as_str()) {
                        share[f as usize] += each;
                        keep_strongest(&mut strongest, f as usize, each, past.subject);
                    }
                }
            }
            signals.similar_from = strongest
                .into_iter()
                .map(|(f, (_, subject))| (f, subject.to_owned()))
                .collect();
            let best = share.iter().copied().fold(0.0f32, f32::max);
            if best > 0.0 {
                for ((s, x), out) in base.iter_mut().zip(share).zip(&mut signals.similar) {
                    *out = x / best;
                    *s += p.w_similar * x / best;
                }
            }
        }
        if p.w_reference > 0.0 {
            for past in h.referenced_commits(text) {
                let each = p.w_reference / (past.files.len() as f32).sqrt();
                for path in past.files {
                    if let Some(&f) = self.by_path.get(path.as_str()) {
                        let f = f as usize;
                        base[f] += each;
                        signals.referenced[f] += each;
                        signals
                            .referenced_from
                            .entry(f)
                            .or_insert_with(|| past.subject.to_owned());
                    }
                }
            }
        }
        if p.w_churn > 0.0 || p.w_recent > 0.0 {
            for (i, s) in base.iter_mut().enumerate() {
                *s *= 1.0 + p.w_churn * signals.churn[i] + p.w_recent * signals.recency[i];
            }
        }
        if p.w_active > 0.0 {
            let tests = self.test_files();
            for (i, (s, f)) in base.iter_mut().zip(&self.files).enumerate() {
                if f.language.is_parsed() && !tests[i] {
                    *s += p.w_active * signals.recency[i];
                }
            }
        }
        if p.w_cochange <= 0.0 || p.cochange_seeds == 0 {
            return (base, signals);
        }
        let mut order: Vec<usize> = (0..base.len()).filter(|i| base[*i] > 0.0).collect();
        order.sort_by(|a, b| base[*b].total_cmp(&base[*a]).then(a.cmp(b)));
        let mut lift = vec![0.0f32; base.len()];
        let mut strongest: HashMap<usize, (f32, usize)> = HashMap::new();
        for &a in order.iter().take(p.cochange_seeds) {
            for (path, conf) in h.neighbours(&self.files[a].path) {
                if let Some(&b) = self.by_path.get(path.as_str()) {
                    let l = p.w_cochange * conf * base[a];
                    lift[b as usize] += l;
                    keep_strongest(&mut strongest, b as usize, l, a);
                }
            }
        }
        signals.cochange_from = strongest.into_iter().map(|(b, (_, a))| (b, a)).collect();
        for ((s, l), out) in base.iter_mut().zip(lift).zip(&mut signals.cochange) {
            *out = l;
            *s += l;
        }
        (base, signals)
    }

    /// Why the history or a companion lifted file `i`, for the reasons shown
    /// with it: the lifts that make at least [`LIFT_REASON`] of its fused score.
    fn history_reasons(&self, i: usize, s: &Signals, p: &RankParams) -> Vec<String> {
        let mut reasons = Vec::new();
        let h = &s.history;
        let worth = |lift: f32| lift > 0.0 && lift >= LIFT_REASON * s.score[i];
        if let Some(subject) = h.similar_from.get(&i) {
            if worth(p.w_similar * HistorySignals::at(&h.similar, i)) {
                let subject = shown_subject(subject);
                reasons.push(format!(
                    "changed by a past commit like this request: \"{subject}\""
                ));
            }
        }
        if let Some(subject) = h.referenced_from.get(&i) {
            if worth(HistorySignals::at(&h.referenced, i)) {
                let subject = shown_subject(subject);
                reasons.push(format!(
                    "changed by the change the request names: \"{subject}\""
                ));
            }
        }
        if let Some(&a) = h.cochange_from.get(&i) {
            if worth(HistorySignals::at(&h.cochange, i)) {
                reasons.push(format!("often changes with {}", self.files[a].path));
            }
        }
        if worth(s.companion[i]) {
            let partner = self
                .companion_pairs()
                .iter()
                .filter(|(_, b)| *b as usize == i)
                .map(|(a, _)| *a as usize)
                .max_by(|a, b| s.score[*a].total_cmp(&s.score[*b]).then(b.cmp(a)));
            if let Some(a) = partner {
                let what = if self.test_files()[i] {
                    "test of"
                } else {
                    "tested by"
                };
                reasons.push(format!("{what} {}", self.files[a].path));
            }
        }
        reasons
    }

    /// Which files are tests (computed once).
    fn test_files(&self) -> &[bool] {
        self.test_files
            .get_or_init(|| self.files.iter().map(|f| is_test_path(&f.path)).collect())
    }

    /// Each file passes `share` of its score to its test (`foo_test.go`,
    /// `FooTest.java`, `test_foo.py`, `test/foo.ts`) or, for a test, to its subject.
    fn companion_lift(&self, base: &[f32], share: f32) -> Vec<f32> {
        let mut lift = vec![0.0f32; base.len()];
        if share <= 0.0 {
            return lift;
        }
        let companions = self.companion_pairs();
        for &(a, b) in companions {
            lift[b as usize] = lift[b as usize].max(share * base[a as usize]);
        }
        lift
    }

    /// (file, its test or subject) pairs, both ways (computed once).
    fn companion_pairs(&self) -> &[(u32, u32)] {
        self.companions.get_or_init(|| {
            let mut by_stem: HashMap<String, Vec<u32>> = HashMap::new();
            for (i, f) in self.files.iter().enumerate() {
                if f.language.is_parsed() {
                    by_stem
                        .entry(subject_stem(&f.path))
                        .or_default()
                        .push(idx(i));
                }
            }
            let mut pairs = Vec::new();
            for group in by_stem.values().filter(|g| g.len() > 1 && g.len() <= 4) {
                for &a in group {
                    for &b in group {
                        if a != b
                            && is_test_path(&self.files[a as usize].path)
                                != is_test_path(&self.files[b as usize].path)
                        {
                            pairs.push((a, b));
                        }
                    }
                }
            }
            pairs.sort_unstable();
            pairs
        })
    }

    /// The graph PPR walks: forward reference/import edges plus weaker reverse ones.
    fn ppr_graph(&self) -> &Adjacency {
        self.ppr_graph.get_or_init(|| {
            let mut g: Vec<BTreeMap<u32, f32>> = vec![BTreeMap::new(); self.graph.len()];
            for (i, edges) in self.graph.iter().enumerate() {
                for &(j, w) in edges {
                    *g[i].entry(j).or_default() += w;
                    *g[j as usize].entry(idx(i)).or_default() += REVERSE_EDGE * w;
                }
            }
            g.into_iter().map(|m| m.into_iter().collect()).collect()
        })
    }

    fn mentions(&self, text: &str, hints: &Hints) -> Mentions {
        let mut m = Mentions::default();
        for p in &hints.paths {
            if let Some(f) = self.find_file(p) {
                m.file(f, 2.0, format!("named in hints: {p}"));
            }
        }
        for s in &hints.symbols {
            for id in self.find_symbols(s) {
                m.file(id.0, 1.5, format!("defines `{s}` named in hints"));
                m.symbol(id, 2.0, format!("named in hints: {s}"));
            }
        }
        for c in FRAME_RE.captures_iter(text) {
            let (Some(p), Some(l)) = (c.name("path"), c.name("line")) else {
                continue;
            };
            let path = p.as_str().replace('\\', "/");
            let line: u32 = l.as_str().parse().unwrap_or(0);
            let Some(f) = self.find_file(&path) else {
                continue;
            };
            let at = self.symbol_at(f, line);
            let in_sym = at.map(|s| {
                format!(
                    " in `{}`",
                    self.files[f as usize].analysis.symbols[s as usize].name
                )
            });
            m.file(
                f,
                1.5,
                format!(
                    "stack frame {path}:{line}{}",
                    in_sym.clone().unwrap_or_default()
                ),
            );
            if let Some(s) = at {
                m.symbol((f, s), 1.5, format!("stack frame {path}:{line}"));
            }
        }
        for c in PATH_RE.find_iter(text) {
            let p = c.as_str().trim_matches(|ch: char| ch == '.' || ch == '/');
            if p.len() < 4 || !p.contains(['/', '.']) {
                continue;
            }
            if let Some(f) = self.find_file(p) {
                m.file(f, 1.2, format!("path mentioned: {p}"));
            }
        }
        for c in QUOTED_RE.captures_iter(text) {
            let Some(s) = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)) else {
                continue;
            };
            let needle = s.as_str().trim();
            if !needle.contains(' ') {
                continue;
            }
            let hits: Vec<usize> = (0..self.files.len())
                .filter(|i| self.files[*i].content.contains(needle))
                .collect();
            if hits.len() <= 5 {
                for f in hits {
                    m.file(idx(f), 1.0, format!("contains the message \"{needle}\""));
                }
            }
        }
        self.identifier_mentions(text, false, &mut m);
        m
    }

    /// Files defining names the text mentions; `code` says the text is code (a
    /// fenced block), so every name in it counts as an identifier.
    fn identifier_mentions(&self, text: &str, code: bool, m: &mut Mentions) {
        let mut seen: Vec<&str> = Vec::new();
        for c in IDENT_RE.captures_iter(text) {
            let Some(word) = c.get(1).map(|w| w.as_str()) else {
                continue;
            };
            if word.len() < 3 || seen.contains(&word) {
                continue;
            }
            seen.push(word);
            let code_like = code
                || c.get(2).is_some()
                || word.contains('_')
                || word.contains("::")
                || word.contains('.')
                || word.chars().skip(1).any(|ch| ch.is_ascii_uppercase());
            let ids = self.find_symbols(word);
            if ids.is_empty() {
                continue;
            }
            let files: std::collections::BTreeSet<u32> = ids.iter().map(|(f, _)| *f).collect();
            let strength = match (code_like, files.len()) {
                (true, n) if n <= 3 => 1.0,
                (true, n) if n <= 10 => 0.5,
                (false, n) if n <= 2 && word.len() >= 5 => 0.35,
                _ => continue,
            };
            for id in &ids {
                m.file(
                    id.0,
                    strength,
                    format!("defines `{word}` mentioned in the request"),
                );
                m.symbol(
                    *id,
                    strength * 2.0,
                    format!("mentioned in the request: {word}"),
                );
            }
        }
    }

    fn ranked_file(
        &self,
        f: u32,
        score: f32,
        mentions: &Mentions,
        terms: &[(String, f32)],
        signals: &Signals,
        p: &RankParams,
    ) -> RankedFile {
        let file = &self.files[f as usize];
        let c = ScoreComponents {
            bm25: signals.bm25[f as usize],
            pagerank: signals.ppr[f as usize],
            mention: signals.mention[f as usize],
        };
        let mut reasons: Vec<String> = mentions
            .files
            .get(&f)
            .map(|m| m.1.clone())
            .unwrap_or_default();
        if c.bm25 > 0.0 {
            let mut matched: Vec<&str> = terms
                .iter()
                .filter(|(t, _)| {
                    self.bm25.term_id(t).is_some_and(|id| {
                        file.lexical.binary_search_by_key(&id, |(x, _)| *x).is_ok()
                    })
                })
                .map(|(t, _)| t.as_str())
                .collect();
            matched.truncate(6);
            reasons.push(format!(
                "lexical match ({:.2}): {}",
                c.bm25,
                matched.join(", ")
            ));
        }
        if c.pagerank > 0.05 {
            reasons.push(format!(
                "graph neighbour of matching files (pagerank {:.2})",
                c.pagerank
            ));
        }
        reasons.extend(self.history_reasons(f as usize, signals, p));
        let mut symbols: Vec<RankedSymbol> = file
            .analysis
            .symbols
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind != SymbolKind::Impl)
            .filter_map(|(si, s)| {
                let mut sc = 0.0;
                let mut why = Vec::new();
                if let Some((w, r)) = mentions.symbols.get(&(f, idx(si))) {
                    sc += w;
                    why.push(r.clone());
                }
                let mut hit = Vec::new();
                tokens::code_terms(&s.name, |t| {
                    if let Some((_, w)) = terms.iter().find(|(q, _)| q == t) {
                        if !hit.contains(&t.to_owned()) {
                            hit.push(t.to_owned());
                            sc += w * 0.2;
                        }
                    }
                });
                if !hit.is_empty() {
                    why.push(format!("name matches: {}", hit.join(", ")));
                }
                (sc > 0.0).then(|| RankedSymbol {
                    name: s.name.clone(),
                    kind: s.kind,
                    start_line: s.start_line,
                    end_line: s.end_line,
                    signature: s.signature.clone(),
                    score: sc,
                    reasons: why,
                })
            })
            .collect();
        symbols.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.start_line.cmp(&b.start_line))
        });
        symbols.truncate(SYMBOLS_PER_FILE);
        RankedFile {
            path: file.path.clone(),
            score,
            symbols,
            reasons,
            components: c,
        }
    }
}

/// Whether a path looks like a test file.
pub(crate) fn is_test_path(path: &str) -> bool {
    let l = path.to_ascii_lowercase();
    let (dirs, name) = l.rsplit_once('/').unwrap_or(("", &l));
    let stem = name.split('.').next().unwrap_or(name);
    // Directories: `test/`, `spec/`, and .NET's `UnitTests/`, `Foo.Tests/`.
    dirs.split('/').any(|c| {
        matches!(c, "test" | "tests" | "__tests__" | "spec" | "specs") || c.ends_with("tests")
    }) || name.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with("_spec")
        || name.contains(".test.")
        || name.contains(".spec.")
        // `FooTest.java`, `FooTests.cs`, `FooTest.php`: PascalCase test
        // classes (`Latest.java` is not one).
        || ([".java", ".cs", ".php", ".kt", ".scala"].iter().any(|e| name.ends_with(e)) && {
            let original = path.rsplit('/').next().unwrap_or(path);
            let original = original.split('.').next().unwrap_or(original);
            original.ends_with("Test") || original.ends_with("Tests")
        })
}

/// Whether a path looks vendored or generated (third-party copies, minified
/// bundles, protobuf and designer output).
pub(crate) fn is_vendored_path(path: &str) -> bool {
    let l = path.to_ascii_lowercase();
    let name = l.rsplit('/').next().unwrap_or(&l);
    l.split('/').any(|c| {
        matches!(
            c,
            "vendor"
                | "vendored"
                | "bundled"
                | "third_party"
                | "thirdparty"
                | "3rdparty"
                | "node_modules"
        )
    }) || name.ends_with(".min.js")
        || name.ends_with("_pb2.py")
        || name.ends_with(".pb.go")
        || name.ends_with(".pb.cc")
        || name.ends_with(".pb.h")
        || name.contains(".generated.")
        || name.ends_with(".g.cs")
        || name.ends_with(".designer.cs")
}

/// The name a test and its subject share: `FooTest.java`, `foo_test.go`,
/// `test_foo.py`, `foo.test.ts` → `foo`.
/// Keeps, per file, the source that lent it the most (`lift`), to name it.
fn keep_strongest<V: Copy>(map: &mut HashMap<usize, (f32, V)>, file: usize, lift: f32, from: V) {
    let kept = map.entry(file).or_insert((lift, from));
    if lift > kept.0 {
        *kept = (lift, from);
    }
}

/// A commit subject as a reason shows it: masked like file content (a commit
/// message is text from outside), then shortened.
fn shown_subject(subject: &str) -> String {
    let masked = crate::redact::redact(subject, &mut Default::default());
    crate::cochange::shortened(&masked).into_owned()
}

fn subject_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let stem = name.split('.').next().unwrap_or(&name);
    let stem = stem.strip_prefix("test_").unwrap_or(stem);
    let stem = stem.strip_suffix("_test").unwrap_or(stem);
    let stem = stem.strip_suffix("_spec").unwrap_or(stem);
    let stem = stem
        .strip_suffix("tests")
        .or_else(|| stem.strip_suffix("test"))
        .unwrap_or(stem);
    stem.trim_end_matches('_').to_owned()
}

fn normalise(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(0.0f32, f32::max);
    if max <= 0.0 {
        return vec![0.0; v.len()];
    }
    v.iter().map(|x| x / max).collect()
}

/// The `top_k` paths with a positive score, best first (ties by path), as
/// both BM25 baselines rank them.
fn top_scored(paths: &[&str], scores: &[f32], top_k: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..paths.len()).filter(|i| scores[*i] > 0.0).collect();
    order.sort_by(|a, b| {
        scores[*b]
            .total_cmp(&scores[*a])
            .then(paths[*a].cmp(paths[*b]))
    });
    order
        .into_iter()
        .take(top_k)
        .map(|i| paths[i].to_owned())
        .collect()
}

/// Plain BM25 over whole-file contents: the evaluation baseline.
pub fn baseline_rank(files: &[(String, String)], text: &str, top_k: usize) -> Vec<String> {
    let terms = std::sync::Arc::new(crate::bm25::TermTable::default());
    let docs: Vec<Vec<(u32, f32)>> = files
        .iter()
        .map(|(_, content)| {
            let mut d: HashMap<String, f32> = HashMap::new();
            tokens::plain_terms(content, |t| *d.entry(t.to_owned()).or_default() += 1.0);
            terms.intern_all(d.iter().map(|(t, w)| (t.as_str(), *w)))
        })
        .collect();
    let refs: Vec<&[(u32, f32)]> = docs.iter().map(Vec::as_slice).collect();
    let idx = crate::bm25::Bm25Index::build(&refs, terms);
    let mut q = Vec::new();
    tokens::plain_terms(text, |t| {
        if !tokens::is_stop_word(t) {
            q.push(t.to_owned());
        }
    });
    let scores = idx.score(&weigh_query(&q));
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    top_scored(&paths, &scores, top_k)
}

/// Field weights of [`code_aware_rank`]: a path or definition name says more
/// about what a file is than a word in its body.
const CA_PATH: f32 = 4.0;
const CA_NAME: f32 = 3.0;
const CA_BODY: f32 = 1.0;

/// Code-aware BM25 (the evaluation's strong lexical baseline): BM25F with
/// field weights folded into term frequencies over the path, the definition
/// names and the body of each `(path, content, names)` file, every field
/// tokenised with identifier splitting (camelCase, snake_case, path
/// separators) and the same stemmer and stop words as the engine. No graph,
/// no mentions, no priors.
pub fn code_aware_rank(
    files: &[(String, String, Vec<String>)],
    text: &str,
    top_k: usize,
) -> Vec<String> {
    let terms = std::sync::Arc::new(crate::bm25::TermTable::default());
    let docs: Vec<Vec<(u32, f32)>> = files
        .iter()
        .map(|(path, content, names)| {
            let mut d: HashMap<String, f32> = HashMap::new();
            tokens::code_terms(path, |t| *d.entry(t.to_owned()).or_default() += CA_PATH);
            for n in names {
                tokens::code_terms(n, |t| *d.entry(t.to_owned()).or_default() += CA_NAME);
            }
            tokens::code_terms(content, |t| *d.entry(t.to_owned()).or_default() += CA_BODY);
            terms.intern_all(d.iter().map(|(t, w)| (t.as_str(), *w)))
        })
        .collect();
    let refs: Vec<&[(u32, f32)]> = docs.iter().map(Vec::as_slice).collect();
    let idx = crate::bm25::Bm25Index::build(&refs, terms);
    let scores = idx.score(&weigh_query(&tokens::query_terms(text)));
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    top_scored(&paths, &scores, top_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_aware_bm25_splits_identifiers_and_weighs_names() {
        let files = vec![
            (
                "src/util.py".to_owned(),
                "def helper():\n    # the header parser is elsewhere\n    pass\n".to_owned(),
                vec!["helper".to_owned()],
            ),
            (
                "src/http/headers.py".to_owned(),
                "def parseHeaderLine(raw):\n    return raw\n".to_owned(),
                vec!["parseHeaderLine".to_owned()],
            ),
        ];
        let r = code_aware_rank(&files, "parse_header_line drops folded headers", 2);
        assert_eq!(r[0], "src/http/headers.py", "{r:?}");
        // Plain BM25 does not split `parseHeaderLine`, so it only sees "header".
        let plain: Vec<(String, String)> = files
            .iter()
            .map(|(p, c, _)| (p.clone(), c.clone()))
            .collect();
        let b = baseline_rank(&plain, "parse_header_line", 2);
        assert!(b.is_empty(), "{b:?}");
    }

    #[test]
    fn vendored_and_generated_paths_are_recognised() {
        for p in [
            "vendor/github.com/x/y.go",
            "third_party/lib.c",
            "include/spdlog/fmt/bundled/core.h",
            "web/app.min.js",
            "api/v1/service.pb.go",
            "proto/msg_pb2.py",
            "Forms/Main.Designer.cs",
        ] {
            assert!(is_vendored_path(p), "{p}");
        }
        for p in ["src/vendors.rs", "lib/generate.py", "src/pb.go"] {
            assert!(!is_vendored_path(p), "{p}");
        }
    }

    #[test]
    fn test_files_are_recognised_in_every_parsed_language() {
        for path in [
            "tests/test_models.py",
            "pkg/router_test.go",
            "src/test/java/org/jsoup/NodeTest.java",
            "src/UnitTests/CollectionMapping.cs",
            "Src/Newtonsoft.Json.Tests/JsonConvertTest.cs",
            "test/Foo.Tests.cs",
            "spec/cart_spec.rb",
            "lib/cart_spec.rb",
            "tests/Unit/ClientTest.php",
            "src/ClientTest.php",
            "test/main.ts",
            "src/utils/merge.test.ts",
            "__tests__/a.js",
        ] {
            assert!(is_test_path(path), "{path}");
        }
        for path in [
            "src/requests/models.py",
            "src/Latest.java",
            "src/AutoMapper/Mapper.cs",
            "lib/sinatra/base.rb",
            "src/Client.php",
            "src/contest.rs",
            "include/fmt/format.h",
        ] {
            assert!(!is_test_path(path), "{path}");
        }
        assert_eq!(
            subject_stem("spec/cart_spec.rb"),
            subject_stem("lib/cart.rb")
        );
        assert_eq!(
            subject_stem("tests/ClientTest.php"),
            subject_stem("src/Client.php")
        );
    }
}
