//! The whole-repository map: files, definitions by name, resolved imports, the
//! file-level reference graph and the lexical index.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::bm25::{LexicalIndex, TermTable};
use crate::graph::{self, Adjacency};
use crate::lang::Language;
use crate::parse::{FileAnalysis, RefLike, SymbolKind};
use crate::redact::RedactionCounts;
use crate::tokens;

/// Field weights of the lexical index (BM25F folded into term frequencies).
const W_PATH: f32 = 4.0;
const W_SYMBOL: f32 = 3.0;
const W_DOC: f32 = 1.0;
const W_CONTENT: f32 = 1.0;
/// A name defined in more files than this is too ambiguous to link without an import.
const MAX_AMBIGUOUS_DEFS: usize = 6;
const W_IMPORT_EDGE: f32 = 2.0;

/// One analysed file.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Repository-relative path.
    pub path: String,
    /// Language.
    pub language: Language,
    /// Git blob id of the original bytes.
    pub blob_id: String,
    /// Content with secrets redacted (line numbers preserved).
    pub content: Arc<str>,
    /// Secrets removed from this file, by kind.
    pub redactions: Arc<RedactionCounts>,
    /// Parse results.
    pub analysis: Arc<FileAnalysis>,
    /// Weighted lexical terms (symbols, docs, content) as ids of the engine's table.
    pub(crate) lexical: Arc<Vec<(u32, f32)>>,
    /// Definition and reference names as ids of the engine's name table.
    pub(crate) names: Arc<NameIds>,
}

/// A file's identifiers as interned ids (computed once per blob).
#[derive(Debug, Default)]
pub(crate) struct NameIds {
    /// (name id, symbol index), sorted; `Impl` blocks left out.
    pub defs: Vec<(u32, u32)>,
    /// (name id, total uses), sorted by id.
    pub refs: Vec<(u32, u32)>,
    /// Ids of names starting with `_` (private by convention), sorted.
    pub private: Vec<u32>,
    /// The analysis's reference sites, grouped by name in the order of
    /// `refs` (a name's in the analysis's order), without their names (the
    /// map keeps these instead of [`FileAnalysis::refs`]: a third of the
    /// memory for a typical file's thousands of references).
    pub sites: Sites,
    /// The sites' lines, back to back in site order, [`Site::lines`] each.
    pub site_lines: SiteLines,
}

/// A [`crate::RefSite`] with its name interned and its lines in
/// [`NameIds::site_lines`] (kept as [`Sites`]: a file has thousands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    pub name: u32,
    /// Enclosing definition, or `u32::MAX`.
    pub in_symbol: u32,
    /// Uses, shifted past the number of lines kept (at most
    /// [`MAX_SITE_LINES`]).
    packed: u32,
}

/// Lines a site keeps (the analysis keeps six).
pub(crate) const MAX_SITE_LINES: usize = 7;
const LINE_BITS: u32 = 3;

impl Site {
    fn new(name: u32, in_symbol: u32, count: u32, lines: usize) -> Self {
        // A file of at most `max_file_bytes` has far fewer than 2^29 uses
        // of one name; saturating keeps a larger one from spilling over.
        let count = count.min(u32::MAX >> LINE_BITS);
        let lines = u32::try_from(lines.min(MAX_SITE_LINES)).unwrap_or(0);
        Self {
            name,
            in_symbol,
            packed: count << LINE_BITS | lines,
        }
    }

    /// Number of uses.
    pub(crate) fn count(&self) -> u32 {
        self.packed >> LINE_BITS
    }

    /// Number of lines kept.
    pub(crate) fn lines(&self) -> usize {
        (self.packed & ((1 << LINE_BITS) - 1)) as usize
    }
}

/// A file's sites without their names, and how many each name of
/// [`NameIds::refs`] has: 4 bytes a site and 2 a name when the file's
/// definitions and counts are small enough (nearly always: fewer than 65535
/// definitions, fewer than 8192 uses of a name in one of them), else 8 and 4.
#[derive(Debug)]
pub(crate) enum Sites {
    /// Enclosing definition << 16 (`0xffff`: none) | count << 3 | lines.
    Narrow {
        sites: Box<[u32]>,
        groups: Box<[u16]>,
    },
    /// (enclosing definition, count << 3 | lines).
    Wide {
        sites: Box<[(u32, u32)]>,
        groups: Box<[u32]>,
    },
}

impl Default for Sites {
    fn default() -> Self {
        Self::Narrow {
            sites: Box::default(),
            groups: Box::default(),
        }
    }
}

const NARROW_NONE: u32 = 0xffff;
const NARROW_MAX_COUNT: u32 = (1 << (16 - LINE_BITS)) - 1;

impl Sites {
    /// `sites` grouped by name (ascending, as `refs`), `groups` the number
    /// of sites of each name.
    fn new(sites: &[Site], groups: Vec<u32>) -> Self {
        let narrow = sites.iter().all(|s| {
            (s.in_symbol < NARROW_NONE || s.in_symbol == u32::MAX) && s.count() <= NARROW_MAX_COUNT
        }) && groups.iter().all(|g| *g <= u32::from(u16::MAX));
        if !narrow {
            return Self::Wide {
                sites: sites.iter().map(|s| (s.in_symbol, s.packed)).collect(),
                groups: groups.into_boxed_slice(),
            };
        }
        Self::Narrow {
            sites: sites
                .iter()
                .map(|s| {
                    let sym = if s.in_symbol == u32::MAX {
                        NARROW_NONE
                    } else {
                        s.in_symbol
                    };
                    sym << 16 | (s.packed & 0xffff)
                })
                .collect(),
            groups: groups
                .iter()
                .map(|g| u16::try_from(*g).unwrap_or(u16::MAX))
                .collect(),
        }
    }

    /// Number of sites of the `k`th name.
    fn group(&self, k: usize) -> usize {
        match self {
            Self::Narrow { groups, .. } => groups.get(k).map_or(0, |g| usize::from(*g)),
            Self::Wide { groups, .. } => groups.get(k).map_or(0, |g| *g as usize),
        }
    }

    /// The `i`th site, named `name`.
    fn get(&self, i: usize, name: u32) -> Option<Site> {
        match self {
            Self::Narrow { sites, .. } => sites.get(i).map(|&packed| {
                let sym = packed >> 16;
                Site {
                    name,
                    in_symbol: if sym == NARROW_NONE { u32::MAX } else { sym },
                    packed: packed & 0xffff,
                }
            }),
            Self::Wide { sites, .. } => sites.get(i).map(|&(in_symbol, packed)| Site {
                name,
                in_symbol,
                packed,
            }),
        }
    }
}

/// Line numbers, as `u16` when the file is short enough (nearly all are).
#[derive(Debug)]
pub(crate) enum SiteLines {
    Short(Box<[u16]>),
    Long(Box<[u32]>),
}

impl Default for SiteLines {
    fn default() -> Self {
        Self::Short(Box::default())
    }
}

/// One site's lines.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineSpan<'a> {
    Short(&'a [u16]),
    Long(&'a [u32]),
}

impl<'a> LineSpan<'a> {
    pub(crate) fn iter(self) -> impl Iterator<Item = u32> + 'a {
        let (short, long) = match self {
            Self::Short(s) => (s, &[][..]),
            Self::Long(l) => (&[][..], l),
        };
        short
            .iter()
            .map(|l| u32::from(*l))
            .chain(long.iter().copied())
    }
}

impl SiteLines {
    fn len(&self) -> usize {
        match self {
            Self::Short(s) => s.len(),
            Self::Long(l) => l.len(),
        }
    }

    fn span(&self, start: usize, end: usize) -> LineSpan<'_> {
        match self {
            Self::Short(s) => LineSpan::Short(s.get(start..end).unwrap_or(&[])),
            Self::Long(l) => LineSpan::Long(l.get(start..end).unwrap_or(&[])),
        }
    }
}

impl NameIds {
    /// The reference sites, each with its lines.
    /// The reference sites, each with its lines: grouped by name (names in
    /// id order, a name's sites in the analysis's order).
    pub(crate) fn sites(&self) -> impl Iterator<Item = (Site, LineSpan<'_>)> {
        let mut start = 0usize;
        let mut i = 0usize;
        self.refs
            .iter()
            .enumerate()
            .flat_map(move |(k, &(name, _))| {
                let first = i;
                i += self.sites.group(k);
                (first..i).map(move |j| (j, name))
            })
            .filter_map(move |(j, name)| {
                let s = self.sites.get(j, name)?;
                let end = (start + s.lines()).min(self.site_lines.len());
                let lines = self.site_lines.span(start, end);
                start = end;
                Some((s, lines))
            })
    }
}

impl NameIds {
    /// Interns the names of an analysis.
    pub(crate) fn new(a: &FileAnalysis, names: &TermTable) -> Self {
        Self::with_refs(a, &a.refs, names)
    }

    /// Interns the names of an analysis's definitions and of `site_refs`
    /// (its references, owned or drafts).
    pub(crate) fn with_refs<R: RefLike>(
        a: &FileAnalysis,
        site_refs: &[R],
        names: &TermTable,
    ) -> Self {
        let def_ids = names.intern_each(a.symbols.iter().map(|s| s.name.as_str()));
        let mut defs: Vec<(u32, u32)> = def_ids
            .into_iter()
            .zip(0u32..)
            .filter(|(_, i)| a.symbols[*i as usize].kind != SymbolKind::Impl)
            .collect();
        defs.sort_unstable();
        let ref_ids = names.intern_each(site_refs.iter().map(RefLike::name));
        let mut refs: Vec<(u32, u32)> = ref_ids
            .iter()
            .zip(site_refs)
            .map(|(id, r)| (*id, r.count()))
            .collect();
        crate::bm25::sum_repeated(&mut refs);
        let mut private: Vec<u32> = ref_ids
            .iter()
            .zip(site_refs)
            .filter(|(_, r)| r.name().starts_with('_'))
            .map(|(id, _)| *id)
            .collect();
        private.sort_unstable();
        private.dedup();
        // Grouped by name (stable: a name's sites keep their order), so a
        // site need not hold its name: the groups follow `refs`.
        let mut order: Vec<usize> = (0..site_refs.len()).collect();
        order.sort_by_key(|i| ref_ids[*i]);
        let mut groups: Vec<u32> = Vec::with_capacity(refs.len());
        for w in order.chunk_by(|x, y| ref_ids[*x] == ref_ids[*y]) {
            groups.push(u32::try_from(w.len()).unwrap_or(u32::MAX));
        }
        debug_assert_eq!(groups.len(), refs.len());
        let kept = |r: &R| r.lines().len().min(MAX_SITE_LINES);
        let all = || {
            order.iter().flat_map(|i| {
                site_refs[*i].lines()[..kept(&site_refs[*i])]
                    .iter()
                    .copied()
            })
        };
        let site_lines = if all().all(|l| l <= u32::from(u16::MAX)) {
            SiteLines::Short(
                all()
                    .map(|l| u16::try_from(l).unwrap_or(u16::MAX))
                    .collect(),
            )
        } else {
            SiteLines::Long(all().collect())
        };
        let sites: Vec<Site> = order
            .iter()
            .map(|i| {
                let r = &site_refs[*i];
                Site::new(
                    ref_ids[*i],
                    r.in_symbol().unwrap_or(u32::MAX),
                    r.count(),
                    kept(r),
                )
            })
            .collect();
        let sites = Sites::new(&sites, groups);
        defs.shrink_to_fit();
        refs.shrink_to_fit();
        private.shrink_to_fit();
        Self {
            defs,
            refs,
            private,
            sites,
            site_lines,
        }
    }
}

/// A definition's global id: (file index, symbol index within the file).
pub type SymbolId = (u32, u32);

/// Every definition of one name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameDefs<'a> {
    pub ids: &'a [SymbolId],
    /// Number of distinct files defining the name.
    pub files: usize,
}

/// Definitions by name id, in compressed-row form: one flat array instead of
/// a vector per name (a repository has tens of thousands of names, and a
/// small vector costs its 24 bytes plus an allocation).
#[derive(Debug, Default)]
pub(crate) struct DefsByName {
    /// Name id → start of its definitions in `ids` (end: the next one's).
    starts: Vec<u32>,
    /// In file order, then symbol order.
    ids: Vec<SymbolId>,
    /// Name id → number of distinct files defining it.
    files: Vec<u32>,
}

impl DefsByName {
    /// Indexes the definitions of `files` (`NameIds::defs` sorted by name).
    fn new(files: &[FileEntry]) -> Self {
        let n = files
            .iter()
            .filter_map(|f| f.names.defs.last().map(|d| d.0 as usize + 1))
            .max()
            .unwrap_or(0);
        let mut starts = vec![0u32; n + 1];
        let mut file_counts = vec![0u32; n];
        for f in files {
            let mut last = u32::MAX;
            for &(name, _) in &f.names.defs {
                starts[name as usize + 1] += 1;
                if last != name {
                    file_counts[name as usize] += 1;
                    last = name;
                }
            }
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut fill: Vec<u32> = starts[..n].to_vec();
        let mut ids = vec![(0u32, 0u32); starts[n] as usize];
        for (fi, f) in files.iter().enumerate() {
            for &(name, si) in &f.names.defs {
                let slot = &mut fill[name as usize];
                ids[*slot as usize] = (idx(fi), si);
                *slot += 1;
            }
        }
        Self {
            starts,
            ids,
            files: file_counts,
        }
    }

    /// The definitions of name id `name`.
    pub(crate) fn get(&self, name: usize) -> Option<NameDefs<'_>> {
        let (start, end) = (*self.starts.get(name)?, *self.starts.get(name + 1)?);
        Some(NameDefs {
            ids: self.ids.get(start as usize..end as usize)?,
            files: self.files.get(name).copied().unwrap_or(0) as usize,
        })
    }
}

/// The analysed repository. Cheap to query; build it with [`crate::Engine::analyse`].
#[derive(Debug)]
pub struct CodeMap {
    pub(crate) commit: Option<String>,
    pub(crate) files: Vec<FileEntry>,
    pub(crate) by_path: HashMap<String, u32>,
    /// Definitions by name id.
    pub(crate) defs_by_name: DefsByName,
    pub(crate) names: Arc<TermTable>,
    /// Go / Java package directories → their files.
    pub(crate) packages: HashMap<String, Vec<u32>>,
    pub(crate) imports: Vec<Vec<u32>>,
    pub(crate) imported_by: Vec<Vec<u32>>,
    /// referencer → definer (and importer → imported) weighted edges.
    pub(crate) graph: Adjacency,
    pub(crate) bm25: LexicalIndex,
    pub(crate) skipped: BTreeMap<String, usize>,
    pub(crate) centrality: OnceLock<Vec<f32>>,
    pub(crate) ppr_graph: OnceLock<Adjacency>,
    pub(crate) summary_text: OnceLock<String>,
    /// The overview's request-independent part (no central definitions).
    pub(crate) overview_head: OnceLock<String>,
    pub(crate) companions: OnceLock<Vec<(u32, u32)>>,
    pub(crate) test_files: OnceLock<Vec<bool>>,
    /// The engine's memory budget held while the map lives.
    pub(crate) reservation: Option<crate::memory::Reservation>,
}

impl CodeMap {
    /// Builds the map from analysed files (any order).
    pub(crate) fn build(
        mut files: Vec<FileEntry>,
        commit: Option<String>,
        skipped: BTreeMap<String, usize>,
        terms: Arc<TermTable>,
        names: Arc<TermTable>,
    ) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let by_path: HashMap<String, u32> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.clone(), idx(i)))
            .collect();
        let defs_by_name = DefsByName::new(&files);
        let mut packages: HashMap<String, Vec<u32>> = HashMap::default();
        for (fi, f) in files.iter().enumerate() {
            if matches!(f.language, Language::Go | Language::Java) {
                packages
                    .entry(parent_dir(&f.path).to_owned())
                    .or_default()
                    .push(idx(fi));
            }
        }
        let t0 = std::time::Instant::now();
        let modules = ModuleIndex::new(&files);
        let imports: Vec<Vec<u32>> = files
            .par_iter()
            .enumerate()
            .map(|(fi, f)| modules.resolve_all(fi, f, &files))
            .collect();
        let mut imported_by = vec![Vec::new(); files.len()];
        for (fi, targets) in imports.iter().enumerate() {
            for t in targets {
                imported_by[*t as usize].push(idx(fi));
            }
        }
        let t1 = std::time::Instant::now();
        // Each document is its lexical terms merged with its path's: the path
        // terms are kept apart (a few per file) rather than a merged copy of
        // every file's terms (as large as the index itself).
        let path_terms: Vec<Vec<(u32, f32)>> =
            files.par_iter().map(|f| path_terms(f, &terms)).collect();
        let bm25 = LexicalIndex::build(
            files.iter().map(|f| f.lexical.clone()).collect(),
            &path_terms,
            terms,
        );
        drop(path_terms);
        let mut map = Self {
            commit,
            files,
            by_path,
            defs_by_name,
            names,
            packages,
            imports,
            imported_by,
            graph: Vec::new(),
            bm25,
            skipped,
            centrality: OnceLock::new(),
            ppr_graph: OnceLock::new(),
            summary_text: OnceLock::new(),
            overview_head: OnceLock::new(),
            companions: OnceLock::new(),
            test_files: OnceLock::new(),
            reservation: None,
        };
        let t2 = std::time::Instant::now();
        map.graph = (0..map.files.len())
            .into_par_iter()
            .map(|fi| map.file_edges(fi))
            .collect();
        tracing::debug!(
            files = map.files.len(),
            imports_ms = (t1 - t0).as_secs_f64() * 1e3,
            lexical_ms = (t2 - t1).as_secs_f64() * 1e3,
            graph_ms = t2.elapsed().as_secs_f64() * 1e3,
            "code map built"
        );
        map
    }

    /// Number of files in the map.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the map has no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Commit id, for git sources.
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// All files, in path order.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Skipped files by reason.
    pub fn skipped(&self) -> &BTreeMap<String, usize> {
        &self.skipped
    }

    /// The memory this map's analysis was estimated to need
    /// ([`crate::file_estimate`] of each file plus [`crate::ESTIMATE_FIXED`]).
    pub fn memory_estimate(&self) -> u64 {
        crate::memory::ESTIMATE_FIXED
            + self
                .files
                .iter()
                .map(|f| crate::memory::file_estimate(f.content.len() as u64))
                .sum::<u64>()
    }

    /// Bytes of the engine's memory budget this map holds (0 without a budget).
    pub fn memory_reserved(&self) -> u64 {
        self.reservation.as_ref().map_or(0, |r| r.bytes())
    }

    /// A file by exact path, or by unique path suffix (`lib.rs` → `src/lib.rs`).
    pub fn find_file(&self, path: &str) -> Option<u32> {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        if let Some(i) = self.by_path.get(path) {
            return Some(*i);
        }
        // Absolute or foreign prefixes (`/srv/app/shop/cart.py`): drop leading
        // components until a suffix of a repository path matches.
        let mut rest = path;
        loop {
            let suffix = format!("/{rest}");
            let mut hits = self
                .files
                .iter()
                .enumerate()
                .filter(|(_, f)| f.path.ends_with(&suffix) || f.path == rest);
            if let Some(first) = hits.next() {
                // Prefer the shortest path when several end the same way; ties by path order.
                let best = hits.fold(first, |b, h| {
                    if h.1.path.len() < b.1.path.len() {
                        h
                    } else {
                        b
                    }
                });
                return Some(idx(best.0));
            }
            rest = rest.split_once('/')?.1;
        }
    }

    /// Files a file imports (resolved inside the repository).
    pub fn imports_of(&self, file: u32) -> &[u32] {
        self.imports.get(file as usize).map_or(&[], Vec::as_slice)
    }

    /// Files that import a file.
    pub fn importers_of(&self, file: u32) -> &[u32] {
        self.imported_by
            .get(file as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Global PageRank of files over the reference graph (computed once).
    pub fn file_centrality(&self) -> &[f32] {
        self.centrality
            .get_or_init(|| graph::pagerank(&self.graph, &vec![0.0; self.files.len()]))
    }

    /// The innermost definition of `file` spanning `line`.
    pub fn symbol_at(&self, file: u32, line: u32) -> Option<u32> {
        let syms = &self.files.get(file as usize)?.analysis.symbols;
        syms.iter()
            .enumerate()
            .filter(|(_, s)| {
                s.start_line <= line && line <= s.end_line && s.kind != SymbolKind::Impl
            })
            .min_by_key(|(i, s)| (s.end_line - s.start_line, std::cmp::Reverse(*i)))
            .map(|(i, _)| idx(i))
    }

    /// Definitions a use of `name` in `file` refers to: those in imported files (or the
    /// same package) first, then the file itself, then unambiguous ones elsewhere.
    pub fn resolve(&self, file: u32, name: &str) -> Vec<SymbolId> {
        let mut out = Vec::new();
        if let Some(id) = self.names.get(name) {
            self.resolve_id(file, id, &mut out);
        }
        out
    }

    /// [`CodeMap::resolve`] by name id, into a reused buffer.
    pub(crate) fn resolve_id(&self, file: u32, name: u32, out: &mut Vec<SymbolId>) {
        out.clear();
        let Some(defs) = self.defs_by_name.get(name as usize) else {
            return;
        };
        let cands = defs.ids;
        if cands.is_empty() {
            return;
        }
        // Few candidates: filter them; many (`new`, `get`): look only in the scope.
        if cands.len() <= 16 {
            out.extend(
                cands
                    .iter()
                    .copied()
                    .filter(|(f, _)| self.in_scope(file, *f)),
            );
        } else {
            for &g in self.imports_of(file) {
                self.defs_in(g, name, out);
            }
            if let Some(pkg) = self.package_of(file) {
                for &g in pkg.iter().filter(|g| **g != file) {
                    self.defs_in(g, name, out);
                }
            }
            out.sort_unstable();
            out.dedup();
        }
        if !out.is_empty() {
            return;
        }
        self.defs_in(file, name, out);
        if !out.is_empty() {
            return;
        }
        if defs.files <= MAX_AMBIGUOUS_DEFS {
            out.extend_from_slice(cands);
        }
    }

    /// Definitions with name id `name` in one file.
    fn defs_in(&self, file: u32, name: u32, out: &mut Vec<SymbolId>) {
        let defs = &self.files[file as usize].names.defs;
        let start = defs.partition_point(|(n, _)| *n < name);
        out.extend(
            defs[start..]
                .iter()
                .take_while(|(n, _)| *n == name)
                .map(|(_, s)| (file, *s)),
        );
    }

    /// The other files of a Go or Java package (same directory, same language).
    fn package_of(&self, file: u32) -> Option<&Vec<u32>> {
        let f = &self.files[file as usize];
        if !matches!(f.language, Language::Go | Language::Java) {
            return None;
        }
        self.packages.get(parent_dir(&f.path))
    }

    /// Whether names of `other` are visible in `file` without qualification: it is
    /// imported, or (Go, Java) in the same package directory.
    pub(crate) fn in_scope(&self, file: u32, other: u32) -> bool {
        if file == other {
            return false;
        }
        if self.imports_of(file).binary_search(&other).is_ok() {
            return true;
        }
        let (f, g) = (&self.files[file as usize], &self.files[other as usize]);
        matches!(f.language, Language::Go | Language::Java)
            && g.language == f.language
            && parent_dir(&f.path) == parent_dir(&g.path)
    }

    fn file_edges(&self, fi: usize) -> Vec<(u32, f32)> {
        let file = idx(fi);
        // Fixed-point sums: name ids depend on interning order, and float addition in a
        // different order could change ranks by an ulp and flip ties.
        let mut w: BTreeMap<u32, u64> = BTreeMap::new();
        for t in self.imports_of(file) {
            *w.entry(*t).or_default() += fixed(W_IMPORT_EDGE);
        }
        let names = &self.files[fi].names;
        let mut targets = Vec::new();
        let mut files: Vec<u32> = Vec::new();
        for &(name, count) in &names.refs {
            self.resolve_id(file, name, &mut targets);
            files.clear();
            files.extend(targets.iter().map(|(f, _)| *f).filter(|f| *f != file));
            files.sort_unstable();
            files.dedup();
            if files.is_empty() {
                continue;
            }
            let private = if names.private.binary_search(&name).is_ok() {
                0.1
            } else {
                1.0
            };
            let each = private * (count as f32).sqrt() / files.len() as f32;
            for f in &files {
                *w.entry(*f).or_default() += fixed(each);
            }
        }
        w.into_iter().map(|(f, v)| (f, unfixed(v))).collect()
    }
}

const FIXED_ONE: f64 = (1u64 << 32) as f64;

/// A non-negative weight as an exact, order-independent summand.
pub(crate) fn fixed(x: f32) -> u64 {
    (f64::from(x.max(0.0)) * FIXED_ONE).round() as u64
}

/// Back from [`fixed`].
pub(crate) fn unfixed(v: u64) -> f32 {
    (v as f64 / FIXED_ONE) as f32
}

pub(crate) fn idx(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

pub(crate) fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The terms of the file's path (weighted as a field), sorted by id.
fn path_terms(f: &FileEntry, terms: &TermTable) -> Vec<(u32, f32)> {
    let mut path: Vec<String> = Vec::new();
    tokens::code_terms(&f.path, |t| path.push(t.to_owned()));
    terms.intern_all(path.iter().map(|t| (t.as_str(), W_PATH)))
}

/// Weighted terms of one analysed file except its path: computed once per blob
/// from its definitions and its content terms with their counts (`a.terms`,
/// or [`crate::parse::with_content_terms`]'s).
pub(crate) fn lexical_terms<'a>(
    a: &FileAnalysis,
    content: impl Iterator<Item = (&'a str, u32)>,
    terms: &TermTable,
) -> Vec<(u32, f32)> {
    // Symbol and doc terms go into one buffer (end offset, weight) rather than a
    // string each: a file has thousands of them.
    // Sized once: whole identifiers plus their parts are about twice the names'
    // and docs' length, a term every few bytes.
    let chars: usize = a.symbols.iter().map(|s| s.name.len() + s.doc.len()).sum();
    let mut text = String::with_capacity(chars * 2);
    let mut extra: Vec<(usize, f32)> = Vec::with_capacity(chars / 3);
    for s in &a.symbols {
        tokens::code_terms(&s.name, |t| {
            text.push_str(t);
            extra.push((text.len(), W_SYMBOL));
        });
        if !s.doc.is_empty() {
            tokens::code_terms(&s.doc, |t| {
                text.push_str(t);
                extra.push((text.len(), W_DOC));
            });
        }
    }
    let starts = std::iter::once(0).chain(extra.iter().map(|(end, _)| *end));
    terms.intern_all(
        content
            .map(|(t, c)| (t, W_CONTENT * c as f32))
            .chain(starts.zip(&extra).map(|(s, (e, w))| (&text[s..*e], *w))),
    )
}

/// Maps import specifiers to files: exact module paths for relative imports, and
/// path suffixes (up to three components) for absolute ones.
struct ModuleIndex {
    exact: HashMap<String, Vec<u32>>,
    suffix: HashMap<String, Vec<u32>>,
    dirs: HashMap<String, Vec<u32>>,
    /// Whole-path suffixes (extension kept, up to [`MAX_PATH_SUFFIX`]
    /// components) of C, C++, Ruby and PHP files: includes and requires name
    /// files, relative to the including file or to an include / load path.
    paths: HashMap<String, Vec<u32>>,
    /// C# and PHP namespaces (nested ones joined) → the files declaring them.
    namespaces: HashMap<String, Vec<u32>>,
}

/// Components of a path suffix indexed for includes and requires.
const MAX_PATH_SUFFIX: usize = 4;

impl ModuleIndex {
    fn new(files: &[FileEntry]) -> Self {
        let mut m = Self {
            exact: HashMap::default(),
            suffix: HashMap::default(),
            dirs: HashMap::default(),
            paths: HashMap::default(),
            namespaces: HashMap::default(),
        };
        for (i, f) in files.iter().enumerate() {
            if !f.language.is_parsed() {
                continue;
            }
            if matches!(
                f.language,
                Language::C | Language::Cpp | Language::Ruby | Language::Php
            ) {
                let comps: Vec<&str> = f.path.split('/').collect();
                for k in 1..=comps.len().min(MAX_PATH_SUFFIX) {
                    let key = comps[comps.len() - k..].join("/");
                    m.paths.entry(key).or_default().push(idx(i));
                }
            }
            if matches!(f.language, Language::CSharp | Language::Php) {
                for ns in namespaces_of(&f.analysis.symbols, f.language) {
                    let v = m.namespaces.entry(ns).or_default();
                    if v.last() != Some(&idx(i)) {
                        v.push(idx(i));
                    }
                }
            }
            let module = module_path(&f.path);
            m.exact.entry(module.clone()).or_default().push(idx(i));
            let comps: Vec<&str> = module.split('/').collect();
            for k in 1..=comps.len().min(3) {
                let key = comps[comps.len() - k..].join("/");
                m.suffix.entry(key).or_default().push(idx(i));
            }
            let dir: Vec<&str> = parent_dir(&f.path)
                .split('/')
                .filter(|c| !c.is_empty())
                .collect();
            for k in 1..=dir.len().min(3) {
                let key = dir[dir.len() - k..].join("/");
                m.dirs.entry(key).or_default().push(idx(i));
            }
        }
        m
    }

    fn resolve_all(&self, fi: usize, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for imp in &f.analysis.imports {
            let hits = match f.language {
                Language::C | Language::Cpp => self.include(&imp.target, f, files),
                Language::Ruby => self.ruby_require(&imp.target, f, files),
                Language::Php => self.php_import(&imp.target, f, files),
                Language::CSharp => self.csharp_using(&imp.target, f, files),
                _ => self.resolve(&imp.target, f, files),
            };
            for t in hits {
                if t as usize != fi && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Files whose path is `path` or ends with `/path`.
    fn by_path_suffix(&self, path: &str, files: &[FileEntry]) -> Vec<u32> {
        let comps: Vec<&str> = path.split('/').collect();
        let key = comps[comps.len().saturating_sub(MAX_PATH_SUFFIX)..].join("/");
        let Some(v) = self.paths.get(&key) else {
            return Vec::new();
        };
        // Longer than the indexed suffix: the rest must match too.
        let tail = format!("/{path}");
        v.iter()
            .copied()
            .filter(|i| {
                let p = &files[*i as usize].path;
                comps.len() <= MAX_PATH_SUFFIX || p == path || p.ends_with(&tail)
            })
            .collect()
    }

    /// The file at exactly `path`, if it is indexed.
    fn at_path(&self, path: &str, files: &[FileEntry]) -> Option<u32> {
        self.by_path_suffix(path, files)
            .into_iter()
            .find(|i| files[*i as usize].path == path)
    }

    /// `#include "x.h"`: next to the including file first, then on an include
    /// path (any file ending with the path, the nearest to the includer when
    /// several do). `<x.h>` is the system's unless it names a directory
    /// (`<geo/shape.hpp>`), as a project's own include directory is written.
    fn include(&self, target: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let system = target.starts_with('<');
        let t = target.trim_start_matches('<').trim_end_matches('>');
        if !system {
            let here = normalize(&format!("{}/{t}", parent_dir(&f.path)));
            if let Some(i) = self.at_path(&here, files) {
                return vec![i];
            }
        }
        let t = normalize(t);
        if t.is_empty() || (system && !t.contains('/')) {
            return Vec::new();
        }
        let hits: Vec<u32> = self
            .by_path_suffix(&t, files)
            .into_iter()
            .filter(|i| matches!(files[*i as usize].language, Language::C | Language::Cpp))
            .collect();
        nearest(hits, f, files)
    }

    /// `require_relative 'item'` next to the file; `require 'shop/cart'` on the
    /// load path (`lib/`, the root, or any directory ending with the path).
    fn ruby_require(&self, target: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let t = target.strip_suffix(".rb").unwrap_or(target);
        let here = normalize(&format!("{}/{t}.rb", parent_dir(&f.path)));
        if let Some(i) = self.at_path(&here, files) {
            return vec![i];
        }
        let t = normalize(t);
        if t.is_empty() {
            return Vec::new();
        }
        for root in ["lib", "app", ""] {
            let p = if root.is_empty() {
                format!("{t}.rb")
            } else {
                format!("{root}/{t}.rb")
            };
            if let Some(i) = self.at_path(&p, files) {
                return vec![i];
            }
        }
        // A gem's own `lib/` inside a larger repository; a bare name (`json`)
        // only under a `lib/` directory, else it is most likely a gem.
        let hits = self.by_path_suffix(&format!("lib/{t}.rb"), files);
        if !hits.is_empty() || !t.contains('/') {
            return nearest(hits, f, files);
        }
        nearest(self.by_path_suffix(&format!("{t}.rb"), files), f, files)
    }

    /// `use App\Models\User`: the files of namespace `App\Models` declaring
    /// `User`, else the PSR-4 path (`…/Models/User.php`); `use App\Models`:
    /// its files declaring a type this file names. `require 'x.php'`: next to
    /// the file, else any file ending with the path.
    fn php_import(&self, target: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let t = target.trim_start_matches('\\');
        let is_path = t.contains('/') || t.ends_with(".php") || t.ends_with(".inc");
        if is_path {
            let t = t.trim_start_matches('/');
            let here = normalize(&format!("{}/{t}", parent_dir(&f.path)));
            if let Some(i) = self.at_path(&here, files) {
                return vec![i];
            }
            return nearest(self.by_path_suffix(&normalize(t), files), f, files);
        }
        let hits = self.qualified_type(t, '\\', files);
        if !hits.is_empty() {
            return hits;
        }
        let hits = self.namespace_types(t, f, files);
        if !hits.is_empty() {
            return hits;
        }
        // PSR-4: a vendor prefix maps to a directory, the rest is the path.
        let segs: Vec<&str> = t.split('\\').filter(|s| !s.is_empty()).collect();
        for k in (1..=segs.len()).rev() {
            let p = format!("{}.php", segs[segs.len() - k..].join("/"));
            let hits: Vec<u32> = self
                .by_path_suffix(&p, files)
                .into_iter()
                .filter(|i| files[*i as usize].language == Language::Php)
                .collect();
            if !hits.is_empty() && (k > 1 || hits.len() == 1) {
                return nearest(hits, f, files);
            }
        }
        Vec::new()
    }

    /// `using Shop.Models;`: the namespace's files declaring a type this file
    /// names (not every file of a namespace is used); `using static
    /// Shop.Util.Strings;`: the file declaring that type.
    fn csharp_using(&self, target: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let t = target.trim_start_matches("global::");
        let hits = self.namespace_types(t, f, files);
        if !hits.is_empty() {
            return hits;
        }
        self.qualified_type(t, '.', files)
    }

    /// Files of namespace `ns` that declare a type `f` refers to.
    fn namespace_types(&self, ns: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let Some(v) = self.namespaces.get(ns) else {
            return Vec::new();
        };
        v.iter()
            .copied()
            .filter(|g| {
                let g = &files[*g as usize];
                g.names.defs.iter().any(|&(name, si)| {
                    is_type(g.analysis.symbols[si as usize].kind)
                        && f.names.refs.binary_search_by_key(&name, |r| r.0).is_ok()
                })
            })
            .collect()
    }

    /// `Ns<sep>Type`: the files of namespace `Ns` declaring type `Type`.
    fn qualified_type(&self, t: &str, sep: char, files: &[FileEntry]) -> Vec<u32> {
        let Some((ns, name)) = t.rsplit_once(sep) else {
            return Vec::new();
        };
        let Some(v) = self.namespaces.get(ns) else {
            return Vec::new();
        };
        v.iter()
            .copied()
            .filter(|g| {
                files[*g as usize]
                    .analysis
                    .symbols
                    .iter()
                    .any(|s| is_type(s.kind) && s.name == name)
            })
            .collect()
    }

    fn resolve(&self, target: &str, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
        let dir = parent_dir(&f.path);
        let same_lang = |v: &Vec<u32>| -> Vec<u32> {
            v.iter()
                .copied()
                .filter(|i| compatible(files[*i as usize].language, f.language))
                .collect()
        };
        match f.language {
            Language::JavaScript | Language::TypeScript | Language::Tsx
                if target.starts_with('.') =>
            {
                let joined = normalize(&format!("{dir}/{target}"));
                let key = module_path(&joined);
                self.exact.get(&key).map(same_lang).unwrap_or_default()
            }
            Language::Python if target.starts_with('.') => {
                let dots = target.chars().take_while(|c| *c == '.').count();
                let mut base: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
                for _ in 1..dots {
                    base.pop();
                }
                let rest = target[dots..].replace('.', "/");
                let key = if rest.is_empty() {
                    base.join("/")
                } else if base.is_empty() {
                    rest
                } else {
                    format!("{}/{rest}", base.join("/"))
                };
                self.exact.get(&key).map(same_lang).unwrap_or_default()
            }
            Language::Rust if !target.contains("::") => {
                // `mod foo;` next to the declaring file.
                let stem = f
                    .path
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(".rs");
                let base = if ["lib", "main", "mod"].contains(&stem) {
                    dir.to_owned()
                } else {
                    format!("{dir}/{stem}")
                };
                let key = normalize(&format!("{base}/{target}"));
                self.exact.get(&key).map(same_lang).unwrap_or_default()
            }
            Language::Go => {
                let segs: Vec<&str> = target.split('/').collect();
                for k in (1..=segs.len().min(3)).rev() {
                    if let Some(v) = self.dirs.get(&segs[segs.len() - k..].join("/")) {
                        let hits = same_lang(v);
                        // One trailing component is enough when it names a single directory.
                        let one_dir = hits.windows(2).all(|w| {
                            parent_dir(&files[w[0] as usize].path)
                                == parent_dir(&files[w[1] as usize].path)
                        });
                        if !hits.is_empty() && (k > 1 || one_dir) {
                            return hits;
                        }
                    }
                }
                Vec::new()
            }
            _ => {
                let segs: Vec<&str> = target
                    .split([':', '.', '/'])
                    .filter(|s| !s.is_empty() && !["crate", "self", "super", "@", "~"].contains(s))
                    .collect();
                for k in (1..=segs.len()).rev() {
                    let head = &segs[..k];
                    let key = head[head.len().saturating_sub(3)..].join("/");
                    if let Some(v) = self.suffix.get(&key) {
                        let hits = same_lang(v);
                        // A bare single-segment name matches too much unless it is unique.
                        if !hits.is_empty() && (key.contains('/') || hits.len() == 1) {
                            return hits;
                        }
                    }
                    if f.language == Language::Java {
                        if let Some(v) = self.dirs.get(&key) {
                            let hits = same_lang(v);
                            if !hits.is_empty() && key.contains('/') {
                                return hits;
                            }
                        }
                    }
                }
                Vec::new()
            }
        }
    }
}

/// A type-level definition (what a `using` or `use` brings into scope).
fn is_type(k: SymbolKind) -> bool {
    matches!(
        k,
        SymbolKind::Class
            | SymbolKind::Struct
            | SymbolKind::Interface
            | SymbolKind::Enum
            | SymbolKind::Trait
            | SymbolKind::Type
    )
}

/// The namespaces a C# or PHP file declares, nested ones joined
/// (`namespace Shop { namespace Models {} }` → `Shop`, `Shop.Models`).
fn namespaces_of(symbols: &[crate::parse::SymbolDef], lang: Language) -> Vec<String> {
    let sep = if lang == Language::Php { "\\" } else { "." };
    symbols
        .iter()
        .filter(|s| s.kind == SymbolKind::Module)
        .map(|s| {
            let mut parts = vec![s.name.as_str()];
            let mut p = s.parent;
            while let Some(i) = p {
                let outer = &symbols[i as usize];
                if outer.kind == SymbolKind::Module {
                    parts.push(outer.name.as_str());
                }
                p = outer.parent;
            }
            parts.reverse();
            parts.join(sep).trim_start_matches('\\').to_owned()
        })
        .collect()
}

/// Of several files an include or require could name, those nearest to the
/// includer (longest shared directory prefix); one file stays as it is.
fn nearest(hits: Vec<u32>, f: &FileEntry, files: &[FileEntry]) -> Vec<u32> {
    if hits.len() <= 1 {
        return hits;
    }
    let shared = |i: &u32| {
        parent_dir(&files[*i as usize].path)
            .split('/')
            .zip(parent_dir(&f.path).split('/'))
            .take_while(|(a, b)| a == b)
            .count()
    };
    let best = hits.iter().map(shared).max().unwrap_or(0);
    hits.into_iter().filter(|i| shared(i) == best).collect()
}

fn compatible(a: Language, b: Language) -> bool {
    let web = |l| {
        matches!(
            l,
            Language::JavaScript | Language::TypeScript | Language::Tsx
        )
    };
    let c = |l| matches!(l, Language::C | Language::Cpp);
    a == b || (web(a) && web(b)) || (c(a) && c(b))
}

/// `src/a/mod.rs` → `src/a`, `pkg/__init__.py` → `pkg`, `web/index.ts` → `web`,
/// `src/a/b.rs` → `src/a/b`.
fn module_path(path: &str) -> String {
    let no_ext = match path.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => stem,
        _ => path,
    };
    for special in ["/mod", "/__init__", "/index", "/lib", "/main"] {
        if let Some(dir) = no_ext.strip_suffix(special) {
            if special == "/lib" || special == "/main" {
                return no_ext.to_owned();
            }
            return dir.to_owned();
        }
    }
    if ["mod", "__init__", "index"].contains(&no_ext) {
        return String::new();
    }
    no_ext.to_owned()
}

/// Resolves `.` and `..` components.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(c),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_drop_index_files() {
        assert_eq!(module_path("src/net/mod.rs"), "src/net");
        assert_eq!(module_path("pkg/__init__.py"), "pkg");
        assert_eq!(module_path("web/index.ts"), "web");
        assert_eq!(module_path("src/a/b.rs"), "src/a/b");
        assert_eq!(normalize("web/./x/../y"), "web/y");
    }

    #[test]
    fn sites_keep_their_counts_and_lines() {
        let site = |name: &str, in_symbol, count, lines: Vec<u32>| crate::RefSite {
            name: name.into(),
            in_symbol,
            count,
            lines,
        };
        let names = TermTable::default();
        // Narrow, then wide (a count past 13 bits; a definition past 16).
        for (count, sym) in [(8191, 65534), (8192, 1), (3, 70_000), (1 << 30, 2)] {
            for last_line in [9, 70_000] {
                let a = FileAnalysis {
                    refs: vec![
                        site("a", Some(0), 3, vec![1, 2, last_line]),
                        site("b", None, 1, Vec::new()),
                        site("a", Some(sym), count, vec![4]),
                    ],
                    ..FileAnalysis::default()
                };
                let ids = NameIds::new(&a, &names);
                let got: Vec<(u32, u32, u32, Vec<u32>)> = ids
                    .sites()
                    .map(|(s, lines)| (s.name, s.in_symbol, s.count(), lines.iter().collect()))
                    .collect();
                // Saturated: more uses than a file of `max_file_bytes` holds.
                let kept = count.min(u32::MAX >> 3);
                assert_eq!(
                    got,
                    // Grouped by name, each name's in the analysis's order.
                    [
                        (0, 0, 3, vec![1, 2, last_line]),
                        (0, sym, kept, vec![4]),
                        (1, u32::MAX, 1, vec![]),
                    ]
                );
            }
        }
    }

    #[test]
    fn drafts_and_owned_references_give_the_same_names() {
        let src = "class Cart:\n    def total(self, items):\n        return sum(i.price for i in items) + tax(items) + tax(items)\n\ndef tax(items):\n    return _rate(items)\n";
        let names = TermTable::default();
        let owned = crate::parse::analyse(src, Language::Python);
        let (lean, drafts) = crate::parse::analyse_lean(src, Language::Python);
        assert!(lean.refs.is_empty() && lean.terms.is_empty() && !drafts.is_empty());
        let a = NameIds::new(&owned, &names);
        let b = NameIds::with_refs(&lean, &drafts, &names);
        let sites = |n: &NameIds| -> Vec<(Site, Vec<u32>)> {
            n.sites().map(|(s, l)| (s, l.iter().collect())).collect()
        };
        assert_eq!(sites(&a), sites(&b));
        assert_eq!(
            (&a.defs, &a.refs, &a.private),
            (&b.defs, &b.refs, &b.private)
        );
        assert!(!a.private.is_empty());
    }
}
