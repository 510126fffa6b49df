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
use crate::parse::{ANALYSER_VERSION, FileAnalysis};
use crate::redact::{REDACTION_VERSION, RedactionCounts};

/// Bumped whenever [`StoredMap`] changes shape.
const MAP_FORMAT: u32 = 1;
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

/// A map as stored (owned, for reading). No commit id: several commits can share
/// a tree, and the reader knows which one it asked for.
#[derive(Debug, Deserialize)]
pub(crate) struct StoredMap {
    pub skipped: BTreeMap<String, usize>,
    /// Every lexical term of the map, once.
    pub terms: Vec<String>,
    pub files: Vec<StoredFile>,
}

/// One file of a [`StoredMap`].
#[derive(Debug, Deserialize)]
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

/// The same layout, borrowing from a live map (for writing).
#[derive(Serialize)]
struct StoredMapRef<'a> {
    skipped: &'a BTreeMap<String, usize>,
    terms: Vec<&'a str>,
    files: Vec<StoredFileRef<'a>>,
}

#[derive(Serialize)]
struct StoredFileRef<'a> {
    path: &'a str,
    language: Language,
    blob_id: &'a str,
    redactions: &'a RedactionCounts,
    analysis: &'a FileAnalysis,
    lexical: Vec<(u32, f32)>,
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
    let stored = StoredMapRef {
        skipped: &map.skipped,
        terms: spelled.iter().map(|t| &**t).collect(),
        files: map
            .files
            .iter()
            .map(|f| StoredFileRef {
                path: &f.path,
                language: f.language,
                blob_id: &f.blob_id,
                redactions: &f.redactions,
                analysis: &f.analysis,
                // Global ids are sorted, and local ids keep their order.
                lexical: f
                    .lexical
                    .iter()
                    .map(|(t, w)| (local.get(t).copied().unwrap_or(u32::MAX), *w))
                    .collect(),
            })
            .collect(),
    };
    let raw = postcard::to_stdvec(&stored).map_err(|e| CodemapError::Cache(e.to_string()))?;
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
    let map: StoredMap =
        postcard::from_bytes(&raw).map_err(|e| CodemapError::Cache(e.to_string()))?;
    let n = map.terms.len();
    if map
        .files
        .iter()
        .any(|f| f.lexical.iter().any(|(t, _)| *t as usize >= n))
    {
        return Err(CodemapError::Cache("stored map has unknown term".into()));
    }
    Ok(map)
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
