//! Codebase, file and symbol summaries: names, signatures and locations, not counts only.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use crate::codemap::{CodeMap, SymbolId, fixed, idx, parent_dir, unfixed};
use crate::parse::{SymbolDef, SymbolKind};
use crate::query::RankedFile;

const TOP_DIRS: usize = 12;
const TOP_SYMBOLS: usize = 25;
const MAX_USAGES: usize = 200;
/// Definitions the prompt's overview lists.
const OVERVIEW_SYMBOLS: usize = 12;
/// Neighbours of each ranked file (by edge weight; importers) that count.
const NEIGHBOURS_PER_SEED: usize = 24;
/// A ranked file's relevance passed on to the files it references, and to
/// those importing it.
const NEIGHBOUR_SHARE: f32 = 0.5;
const IMPORTER_SHARE: f32 = 0.3;
/// Weight of a file's uses of its own definitions.
const OWN_USE: f32 = 0.5;
/// Weight of a use resolved without an import (by the name's rarity).
const UNSCOPED_USE: f32 = 0.05;
/// Weight of a definition in a test file when the request is not about tests.
const TEST_DEFINITION: f32 = 0.1;

/// Files and lines of one language.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageCount {
    /// Language name.
    pub language: String,
    /// Number of files.
    pub files: usize,
    /// Number of lines.
    pub lines: usize,
}

/// A top-level module / directory.
#[derive(Debug, Clone, Serialize)]
pub struct DirCount {
    /// Directory (first two components).
    pub dir: String,
    /// Files under it.
    pub files: usize,
    /// Definitions under it.
    pub symbols: usize,
}

/// A definition with its location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SymbolInfo {
    /// Name.
    pub name: String,
    /// Enclosing definition's name, if any.
    pub parent: Option<String>,
    /// Kind.
    pub kind: SymbolKind,
    /// File.
    pub path: String,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Declaration header.
    pub signature: String,
    /// Doc comment.
    pub doc: String,
}

/// A central symbol with its PageRank-derived score.
#[derive(Debug, Clone, Serialize)]
pub struct CentralSymbol {
    /// The symbol.
    #[serde(flatten)]
    pub symbol: SymbolInfo,
    /// Centrality score.
    pub score: f32,
}

/// The whole repository in brief.
#[derive(Debug, Clone, Serialize)]
pub struct CodebaseSummary {
    /// Commit id, for git sources.
    pub commit: Option<String>,
    /// Files analysed.
    pub files: usize,
    /// Definitions found.
    pub symbols: usize,
    /// Imports resolved to files of the repository.
    pub import_edges: usize,
    /// File → file reference edges.
    pub reference_edges: usize,
    /// Languages by file count.
    pub languages: Vec<LanguageCount>,
    /// Largest top-level modules.
    pub top_dirs: Vec<DirCount>,
    /// Entry points (`main.rs`, `main.go`, `__main__.py`, `index.ts`, ...).
    pub entry_points: Vec<String>,
    /// Most central definitions (PageRank over the reference graph).
    pub central_symbols: Vec<CentralSymbol>,
    /// Skipped files by reason.
    pub skipped: BTreeMap<String, usize>,
}

/// One file in brief.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// Path.
    pub path: String,
    /// Language.
    pub language: String,
    /// Lines.
    pub lines: u32,
    /// Definitions.
    pub symbols: Vec<SymbolInfo>,
    /// Imports as written.
    pub imports: Vec<String>,
    /// Imported repository files.
    pub imports_files: Vec<String>,
    /// Files importing this one.
    pub imported_by: Vec<String>,
}

/// A place a symbol is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// File.
    pub path: String,
    /// Line.
    pub line: u32,
    /// Enclosing definition.
    pub in_symbol: Option<String>,
}

/// A symbol in depth.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolSummary {
    /// Definitions with this name (several when overloaded or ambiguous).
    pub definitions: Vec<SymbolInfo>,
    /// What the definitions reference (resolved).
    pub dependencies: Vec<SymbolInfo>,
    /// Call sites and other uses, `path:line`.
    pub usages: Vec<Usage>,
}

impl CodeMap {
    /// Describes a definition.
    pub fn symbol_info(&self, (f, s): SymbolId) -> SymbolInfo {
        let file = &self.files[f as usize];
        let d: &SymbolDef = &file.analysis.symbols[s as usize];
        SymbolInfo {
            name: d.name.clone(),
            parent: d
                .parent
                .map(|p| file.analysis.symbols[p as usize].name.clone()),
            kind: d.kind,
            path: file.path.clone(),
            start_line: d.start_line,
            end_line: d.end_line,
            signature: d.signature.clone(),
            doc: d.doc.clone(),
        }
    }

    /// Symbol centrality: each file's PageRank shared among the definitions its
    /// references resolve to (aider's repo-map ranking).
    pub fn symbol_centrality(&self) -> HashMap<SymbolId, f32> {
        let ranks = self.file_centrality();
        let mut out: HashMap<SymbolId, u64> = HashMap::new();
        let mut targets = Vec::new();
        for (fi, f) in self.files.iter().enumerate() {
            for &(name, count) in &f.names.refs {
                self.resolve_id(idx(fi), name, &mut targets);
                targets.retain(|(g, _)| *g as usize != fi);
                if targets.is_empty() {
                    continue;
                }
                let share = ranks[fi] * (count as f32).sqrt() / targets.len() as f32;
                for t in &targets {
                    *out.entry(*t).or_default() += fixed(share * 1e6);
                }
            }
        }
        out.into_iter()
            .map(|(k, v)| (k, unfixed(v) / 1e6))
            .collect()
    }

    /// Summary of the whole repository.
    pub fn summary(&self) -> CodebaseSummary {
        let mut s = self.summary_head();
        let mut central: Vec<(SymbolId, f32)> = self.symbol_centrality().into_iter().collect();
        central.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        central.truncate(TOP_SYMBOLS);
        s.central_symbols = central
            .into_iter()
            .map(|(id, score)| CentralSymbol {
                symbol: self.symbol_info(id),
                score,
            })
            .collect();
        s
    }

    /// The prompt's overview for a request whose ranked files are `ranked`:
    /// the repository in brief, then the definitions central to the ranked
    /// files' neighbourhood ([`CodeMap::central_to`]) rather than to the whole
    /// repository (which, in a large one, says nothing about the request).
    /// Without ranked files, the repository's central definitions.
    pub fn overview_text(&self, ranked: &[RankedFile]) -> String {
        let seeds: Vec<(u32, f32)> = ranked
            .iter()
            .filter_map(|r| Some((self.find_file(&r.path)?, r.score)))
            .collect();
        if seeds.is_empty() {
            return self.summary_text().to_owned();
        }
        let mut s = self
            .overview_head
            .get_or_init(|| self.summary_head().to_text())
            .clone();
        let central = self.central_to(&seeds, OVERVIEW_SYMBOLS);
        if !central.is_empty() {
            let _ = writeln!(s, "Central definitions around the ranked files:");
            for c in &central {
                let _ = writeln!(
                    s,
                    "  {}:{} {}",
                    c.symbol.path, c.symbol.start_line, c.symbol.signature
                );
            }
        }
        s
    }

    /// Definitions central to the neighbourhood of `seeds` (file, weight):
    /// the seeds and the files they reference or are imported by get a
    /// relevance (a seed its normalised weight, a neighbour a damped share
    /// of it, one step of personalised PageRank); every definition their
    /// references resolve to scores the referencing file's relevance (as
    /// [`CodeMap::symbol_centrality`] shares a file's rank), times the
    /// relevance of the file defining it, so that what the neighbourhood
    /// merely calls into (`re.compile` from a JSON decoder) stays below the
    /// neighbourhood's own definitions.
    pub fn central_to(&self, seeds: &[(u32, f32)], limit: usize) -> Vec<CentralSymbol> {
        let total: f32 = seeds.iter().map(|(_, w)| w.max(0.0)).sum();
        let weight = |i: usize, w: f32| {
            if total > 0.0 {
                w.max(0.0) / total
            } else {
                1.0 / (i + 1) as f32
            }
        };
        let mut rel: BTreeMap<u32, f32> = BTreeMap::new();
        for (i, &(f, w)) in seeds.iter().enumerate() {
            let w = weight(i, w);
            if f as usize >= self.files.len() || w <= 0.0 {
                continue;
            }
            *rel.entry(f).or_default() += w;
            let mut out: Vec<(u32, f32)> = self.graph[f as usize].clone();
            out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            out.truncate(NEIGHBOURS_PER_SEED);
            let out_w: f32 = out.iter().map(|e| e.1).sum();
            for (g, ew) in out {
                if out_w > 0.0 {
                    *rel.entry(g).or_default() += NEIGHBOUR_SHARE * w * ew / out_w;
                }
            }
            let importers = self.importers_of(f);
            for &h in importers.iter().take(NEIGHBOURS_PER_SEED) {
                *rel.entry(h).or_default() +=
                    IMPORTER_SHARE * w / importers.len().min(NEIGHBOURS_PER_SEED) as f32;
            }
        }
        // Test scaffolding (`PyTest`, fixtures) is central to the tests, not
        // to the code the request is about, unless the request is about tests.
        let tests_down = seeds
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .is_some_and(|(f, _)| !crate::query::is_test_path(&self.files[*f as usize].path));
        // Fixed-point sums, as in `symbol_centrality`: the order of the
        // additions must not decide ties.
        let mut score: BTreeMap<SymbolId, u64> = BTreeMap::new();
        let mut targets = Vec::new();
        for (&h, &r) in &rel {
            for &(name, count) in &self.files[h as usize].names.refs {
                self.resolve_id(h, name, &mut targets);
                if targets.is_empty() {
                    continue;
                }
                let share = r * (count as f32).sqrt() / targets.len() as f32;
                for &t in &targets {
                    let Some(&def_rel) = rel.get(&t.0) else {
                        continue;
                    };
                    // A file's own uses count less than another's, and a use
                    // linked only by its name being rare (not imported: a
                    // Python `str()` reaching `locale.str`) far less.
                    let how = if t.0 == h {
                        OWN_USE
                    } else if self.in_scope(h, t.0) {
                        1.0
                    } else {
                        UNSCOPED_USE
                    };
                    let test = if tests_down
                        && crate::query::is_test_path(&self.files[t.0 as usize].path)
                    {
                        TEST_DEFINITION
                    } else {
                        1.0
                    };
                    *score.entry(t).or_default() += fixed(how * test * share * def_rel * 1e6);
                }
            }
        }
        let mut central: Vec<(SymbolId, f32)> = score
            .into_iter()
            .filter(|((f, s), _)| {
                self.files[*f as usize].analysis.symbols[*s as usize].kind != SymbolKind::Impl
            })
            .map(|(id, v)| (id, unfixed(v) / 1e6))
            .collect();
        central.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        central.truncate(limit);
        central
            .into_iter()
            .map(|(id, score)| CentralSymbol {
                symbol: self.symbol_info(id),
                score,
            })
            .collect()
    }

    /// [`CodeMap::summary`] without its central definitions.
    fn summary_head(&self) -> CodebaseSummary {
        let mut langs: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut dirs: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut entry_points = Vec::new();
        for f in &self.files {
            let e = langs.entry(f.language.name()).or_default();
            e.0 += 1;
            e.1 += f.analysis.lines as usize;
            let comps: Vec<&str> = parent_dir(&f.path)
                .split('/')
                .filter(|c| !c.is_empty())
                .take(2)
                .collect();
            let d = dirs
                .entry(if comps.is_empty() {
                    ".".to_owned()
                } else {
                    comps.join("/")
                })
                .or_default();
            d.0 += 1;
            d.1 += f.analysis.symbols.len();
            if is_entry_point(&f.path, &f.content) {
                entry_points.push(f.path.clone());
            }
        }
        let mut languages: Vec<LanguageCount> = langs
            .into_iter()
            .map(|(l, (files, lines))| LanguageCount {
                language: l.to_owned(),
                files,
                lines,
            })
            .collect();
        languages.sort_by(|a, b| b.files.cmp(&a.files).then(a.language.cmp(&b.language)));
        let mut top_dirs: Vec<DirCount> = dirs
            .into_iter()
            .map(|(dir, (files, symbols))| DirCount {
                dir,
                files,
                symbols,
            })
            .collect();
        top_dirs.sort_by(|a, b| b.files.cmp(&a.files).then(a.dir.cmp(&b.dir)));
        top_dirs.truncate(TOP_DIRS);
        CodebaseSummary {
            commit: self.commit.clone(),
            files: self.files.len(),
            symbols: self.files.iter().map(|f| f.analysis.symbols.len()).sum(),
            import_edges: self.imports.iter().map(Vec::len).sum(),
            reference_edges: self.graph.iter().map(Vec::len).sum(),
            languages,
            top_dirs,
            entry_points,
            central_symbols: Vec::new(),
            skipped: self.skipped.clone(),
        }
    }

    /// Summary of one file (exact path or unique suffix).
    pub fn file_summary(&self, path: &str) -> Option<FileSummary> {
        let fi = self.find_file(path)?;
        let f = &self.files[fi as usize];
        let names = |v: &[u32]| {
            v.iter()
                .map(|i| self.files[*i as usize].path.clone())
                .collect()
        };
        Some(FileSummary {
            path: f.path.clone(),
            language: f.language.name().to_owned(),
            lines: f.analysis.lines,
            symbols: (0..f.analysis.symbols.len())
                .map(|s| self.symbol_info((fi, idx(s))))
                .collect(),
            imports: f
                .analysis
                .imports
                .iter()
                .map(|i| i.target.clone())
                .collect(),
            imports_files: names(self.imports_of(fi)),
            imported_by: names(self.importers_of(fi)),
        })
    }

    /// Definitions named `name` (`Type.method` / `Type::method` narrow by container).
    pub fn find_symbols(&self, name: &str) -> Vec<SymbolId> {
        let (container, base) = match name.rsplit_once("::").or_else(|| name.rsplit_once('.')) {
            Some((c, b)) => (Some(c.rsplit(['.', ':']).next().unwrap_or(c)), b),
            None => (None, name),
        };
        let Some(defs) = self
            .names
            .get(base)
            .and_then(|id| self.defs_by_name.get(id as usize))
        else {
            return Vec::new();
        };
        defs.ids
            .iter()
            .copied()
            .filter(|id| {
                container.is_none_or(|c| self.symbol_info(*id).parent.as_deref() == Some(c))
            })
            .collect()
    }

    /// Summary of a symbol: definitions, what they use, and where they are used.
    pub fn symbol_summary(&self, name: &str) -> Option<SymbolSummary> {
        let defs = self.find_symbols(name);
        if defs.is_empty() {
            return None;
        }
        let mut deps: Vec<SymbolId> = Vec::new();
        let mut targets = Vec::new();
        for &(f, s) in &defs {
            let file = &self.files[f as usize];
            let a = &file.analysis;
            for (r, _) in file
                .names
                .sites()
                .filter(|(r, _)| r.in_symbol != u32::MAX && is_within(a, r.in_symbol, s))
            {
                self.resolve_id(f, r.name, &mut targets);
                for &t in &targets {
                    if !deps.contains(&t) && !defs.contains(&t) {
                        deps.push(t);
                    }
                }
            }
        }
        deps.sort_unstable();
        let base = self.files[defs[0].0 as usize].analysis.symbols[defs[0].1 as usize]
            .name
            .clone();
        let mut usages = Vec::new();
        let Some(base_id) = self.names.get(&base) else {
            return Some(SymbolSummary {
                definitions: defs.iter().map(|d| self.symbol_info(*d)).collect(),
                dependencies: deps.into_iter().map(|d| self.symbol_info(d)).collect(),
                usages,
            });
        };
        'files: for (fi, f) in self.files.iter().enumerate() {
            for (r, lines) in f.names.sites().filter(|(r, _)| r.name == base_id) {
                self.resolve_id(idx(fi), base_id, &mut targets);
                if !targets.iter().any(|t| defs.contains(t)) {
                    continue 'files;
                }
                for line in lines.iter() {
                    usages.push(Usage {
                        path: f.path.clone(),
                        line,
                        in_symbol: f
                            .analysis
                            .symbols
                            .get(r.in_symbol as usize)
                            .map(|s| s.name.clone()),
                    });
                }
                if usages.len() >= MAX_USAGES {
                    break 'files;
                }
            }
        }
        Some(SymbolSummary {
            definitions: defs.iter().map(|d| self.symbol_info(*d)).collect(),
            dependencies: deps.into_iter().map(|d| self.symbol_info(d)).collect(),
            usages,
        })
    }
}

/// Whether definition `inner` is `outer` or nested in it.
fn is_within(a: &crate::parse::FileAnalysis, inner: u32, outer: u32) -> bool {
    let mut cur = Some(inner);
    while let Some(c) = cur {
        if c == outer {
            return true;
        }
        cur = a.symbols.get(c as usize).and_then(|s| s.parent);
    }
    false
}

fn is_entry_point(path: &str, content: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(
        name,
        "main.rs"
            | "main.go"
            | "__main__.py"
            | "manage.py"
            | "index.ts"
            | "index.js"
            | "main.ts"
            | "main.py"
            | "cli.py"
    ) || path.contains("/bin/") && name.ends_with(".rs")
        || (name.ends_with(".py") && content.contains("if __name__ == \"__main__\""))
        || (name.ends_with(".java") && content.contains("public static void main("))
}

impl CodebaseSummary {
    /// Compact text for prompts and terminals.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let langs: Vec<String> = self
            .languages
            .iter()
            .map(|l| format!("{} ({} files)", l.language, l.files))
            .collect();
        let _ = writeln!(
            s,
            "Repository: {} files, {} definitions; languages: {}",
            self.files,
            self.symbols,
            langs.join(", ")
        );
        let dirs: Vec<String> = self
            .top_dirs
            .iter()
            .take(8)
            .map(|d| format!("{} ({})", d.dir, d.files))
            .collect();
        let _ = writeln!(s, "Main directories: {}", dirs.join(", "));
        if !self.entry_points.is_empty() {
            let _ = writeln!(
                s,
                "Entry points: {}",
                self.entry_points
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !self.central_symbols.is_empty() {
            let _ = writeln!(s, "Central definitions:");
            for c in self.central_symbols.iter().take(12) {
                let _ = writeln!(
                    s,
                    "  {}:{} {}",
                    c.symbol.path, c.symbol.start_line, c.symbol.signature
                );
            }
        }
        s
    }
}
