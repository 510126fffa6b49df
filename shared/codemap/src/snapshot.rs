//! A finished whole-repository map as one stored value, keyed by git tree id, so
//! every replica after the first that analyses the same tree reads it from the
//! shared store instead of parsing.
//!
//! Layout: `b"CXM1"`, then zstd-compressed postcard of [`StoredMap`]. File contents
//! are not stored (they would make a 2,000-file map several times larger): the
//! replica has the blobs in its fetched clone, since it fetched the ref to learn
//! the tree id, and a file without redactions is its blob verbatim. Term ids are
//! per process, so lexical terms are spelled once in a map-wide dictionary.

use std::collections::BTreeMap;
use std::io::Read;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::bm25::TermTable;
use crate::codemap::CodeMap;
use crate::error::CodemapError;
use crate::lang::Language;
use crate::parse::{ANALYSER_VERSION, FileAnalysis, ImportRef, RefSite, SymbolDef};
use crate::redact::{REDACTION_VERSION, RedactionCounts};

/// Bumped whenever [`StoredMap`] changes shape.
const MAP_FORMAT: u32 = 3;
const MAGIC: &[u8; 4] = b"CXM1";
/// Level 3 compresses a map at a few hundred MB/s; higher levels gain ~10 % for
/// several times the CPU.
const ZSTD_LEVEL: i32 = 3;
/// A stored map never decodes to more than this (a corrupt value cannot exhaust memory).
const MAX_DECODED_BYTES: u64 = 1 << 30;

/// The store key of a tree's map: everything the stored value depends on.
pub(crate) fn key(tree: &str, max_file_bytes: u64) -> String {
    format!("map-{tree}-a{ANALYSER_VERSION}-r{REDACTION_VERSION}-f{MAP_FORMAT}-m{max_file_bytes}")
}

/// A map as read back: per-file analyses with lexical terms as indices into the
/// map's term dictionary. No commit id: several commits can share a tree, and
/// the reader knows which one it asked for.
#[derive(Debug)]
pub(crate) struct StoredMap {
    pub skipped: BTreeMap<String, usize>,
    /// [`CodeMap::memory_estimate`] of the map written: what rebuilding it
    /// reserves of a memory budget before any blob is read.
    pub memory_estimate: u64,
    /// Every lexical term of the map, once.
    pub terms: Vec<String>,
    pub files: Vec<StoredFile>,
}

/// One file of a [`StoredMap`].
#[derive(Debug)]
pub(crate) struct StoredFile {
    pub path: String,
    pub language: Language,
    pub blob_id: String,
    pub redactions: RedactionCounts,
    /// With `terms` empty (they are in `lexical`).
    pub analysis: FileAnalysis,
    /// (index into [`StoredMap::terms`], weight).
    pub lexical: Vec<(u32, f32)>,
}

// The wire form. Compact where the bulk is (measured on the Python stdlib):
// reference names through a map-wide dictionary, reference lines and term
// indices as deltas, whole-number term weights as integers. `S`, `I` and `V`
// are owned when reading and borrowed when writing.

#[derive(Serialize, Deserialize)]
struct Wire<T, F> {
    skipped: BTreeMap<String, usize>,
    memory_estimate: u64,
    terms: Vec<T>,
    /// Names of references, once.
    names: Vec<T>,
    files: Vec<F>,
}

#[derive(Serialize, Deserialize)]
struct WireFile<T, S, I> {
    path: T,
    language: Language,
    blob_id: T,
    redactions: RedactionCounts,
    lines: u32,
    has_errors: bool,
    symbols: S,
    imports: I,
    refs: Vec<WireRef>,
    /// Term indices, each as the difference to the previous one.
    term_deltas: Vec<u32>,
    weights: Weights,
}

#[derive(Serialize, Deserialize)]
struct WireRef {
    name: u32,
    in_symbol: Option<u32>,
    count: u32,
    /// Lines, each as the difference to the previous one.
    line_deltas: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
enum Weights {
    /// Every weight is a whole number (the default field weights are).
    Whole(Vec<u32>),
    Fraction(Vec<f32>),
}

type WireOut<'a> = Wire<&'a str, WireFile<&'a str, &'a Vec<SymbolDef>, &'a Vec<ImportRef>>>;
type WireIn = Wire<String, WireFile<String, Vec<SymbolDef>, Vec<ImportRef>>>;

fn deltas(values: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut prev = 0u32;
    values
        .map(|v| {
            let d = v.wrapping_sub(prev);
            prev = v;
            d
        })
        .collect()
}

fn undeltas(deltas: &[u32]) -> Vec<u32> {
    let mut acc = 0u32;
    deltas
        .iter()
        .map(|d| {
            acc = acc.wrapping_add(*d);
            acc
        })
        .collect()
}

/// Serialises and compresses a map whose term ids come from `terms`.
pub(crate) fn encode(map: &CodeMap, terms: &TermTable) -> Result<Vec<u8>, CodemapError> {
    let mut used: Vec<u32> = map
        .files
        .iter()
        .flat_map(|f| f.lexical.iter().map(|(t, _)| *t))
        .collect();
    used.sort_unstable();
    used.dedup();
    let local: HashMap<u32, u32> = used.iter().zip(0u32..).map(|(g, l)| (*g, l)).collect();
    let spelled = terms.spell(&used);
    // Reference names by the map's name ids, renumbered in order of first use.
    let mut name_order: Vec<u32> = Vec::new();
    let mut name_ids: HashMap<u32, u32> = HashMap::default();
    let mut files = Vec::with_capacity(map.files.len());
    for f in &map.files {
        let a = &*f.analysis;
        let refs = f
            .names
            .sites()
            .map(|(r, lines)| {
                let name = *name_ids.entry(r.name).or_insert_with(|| {
                    name_order.push(r.name);
                    u32::try_from(name_order.len() - 1).unwrap_or(u32::MAX)
                });
                WireRef {
                    name,
                    in_symbol: (r.in_symbol != u32::MAX).then_some(r.in_symbol),
                    count: r.count(),
                    line_deltas: deltas(lines.iter()),
                }
            })
            .collect();
        // Global ids are sorted and local ids keep their order: small deltas.
        let ids = f
            .lexical
            .iter()
            .map(|(t, _)| local.get(t).copied().unwrap_or(u32::MAX));
        let whole = f
            .lexical
            .iter()
            .all(|(_, w)| w.fract() == 0.0 && (0.0..=f32::from(u16::MAX)).contains(w));
        let weights = if whole {
            Weights::Whole(f.lexical.iter().map(|(_, w)| *w as u32).collect())
        } else {
            Weights::Fraction(f.lexical.iter().map(|(_, w)| *w).collect())
        };
        files.push(WireFile {
            path: f.path.as_str(),
            language: f.language,
            blob_id: f.blob_id.as_str(),
            redactions: (*f.redactions).clone(),
            lines: a.lines,
            has_errors: a.has_errors,
            symbols: &a.symbols,
            imports: &a.imports,
            refs,
            term_deltas: deltas(ids),
            weights,
        });
    }
    let names = map.names.spell(&name_order);
    let wire: WireOut<'_> = Wire {
        skipped: map.skipped.clone(),
        memory_estimate: map.memory_estimate(),
        terms: spelled.iter().map(|t| &**t).collect(),
        names: names.iter().map(|n| &**n).collect(),
        files,
    };
    let raw = postcard::to_stdvec(&wire).map_err(|e| CodemapError::Cache(e.to_string()))?;
    let mut out = MAGIC.to_vec();
    zstd::stream::copy_encode(raw.as_slice(), &mut out, ZSTD_LEVEL)
        .map_err(|e| CodemapError::Cache(format!("compressing a map: {e}")))?;
    Ok(out)
}

/// Decompresses and deserialises a stored map.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredMap, CodemapError> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| CodemapError::Cache("not a stored map".into()))?;
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(|e| CodemapError::Cache(e.to_string()))?
        .take(MAX_DECODED_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| CodemapError::Cache(format!("decompressing a map: {e}")))?;
    let wire: WireIn =
        postcard::from_bytes(&raw).map_err(|e| CodemapError::Cache(e.to_string()))?;
    let bad = |what: &str| CodemapError::Cache(format!("stored map has {what}"));
    let files = wire
        .files
        .into_iter()
        .map(|f| {
            let ids = undeltas(&f.term_deltas);
            let weights: Vec<f32> = match f.weights {
                Weights::Whole(w) => w.into_iter().map(|w| w as f32).collect(),
                Weights::Fraction(w) => w,
            };
            if weights.len() != ids.len() || ids.iter().any(|t| *t as usize >= wire.terms.len()) {
                return Err(bad("an unknown term"));
            }
            let refs = f
                .refs
                .into_iter()
                .map(|r| {
                    let name = wire
                        .names
                        .get(r.name as usize)
                        .ok_or_else(|| bad("an unknown name"))?;
                    Ok(RefSite {
                        name: name.clone(),
                        in_symbol: r.in_symbol,
                        count: r.count,
                        lines: undeltas(&r.line_deltas),
                    })
                })
                .collect::<Result<_, CodemapError>>()?;
            Ok(StoredFile {
                path: f.path,
                language: f.language,
                blob_id: f.blob_id,
                redactions: f.redactions,
                analysis: FileAnalysis {
                    lines: f.lines,
                    symbols: f.symbols,
                    imports: f.imports,
                    refs,
                    terms: Vec::new(),
                    has_errors: f.has_errors,
                },
                lexical: ids.into_iter().zip(weights).collect(),
            })
        })
        .collect::<Result<_, CodemapError>>()?;
    Ok(StoredMap {
        skipped: wire.skipped,
        memory_estimate: wire.memory_estimate,
        terms: wire.terms,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_every_version_the_value_depends_on() {
        let k = key("abc", 1024);
        assert_eq!(
            k,
            format!("map-abc-a{ANALYSER_VERSION}-r{REDACTION_VERSION}-f{MAP_FORMAT}-m1024")
        );
    }

    #[test]
    fn foreign_or_corrupt_values_are_rejected() {
        assert!(decode(b"{}").is_err());
        assert!(decode(b"CXM1 not zstd").is_err());
        let mut truncated = MAGIC.to_vec();
        zstd::stream::copy_encode(&[1u8, 2, 3][..], &mut truncated, 1).expect("encode");
        assert!(decode(&truncated).is_err());
    }
}
