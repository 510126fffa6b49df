//! Whole-repository maps in the shared store: written after a git tree is built,
//! read by a replica that has not built that tree before it lists or parses anything.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{CachedFile, Engine, Tables, file_key, store_failed};
use crate::codemap::{CodeMap, FileEntry, NameIds};
use crate::error::CodemapError;
use crate::redact::{self, RedactionCounts};
use crate::snapshot::{self, StoredFile, StoredMap};
use crate::source::GitRevision;

/// A file of a stored map and where its analysis comes from: this engine's memory,
/// or the stored value plus the blob's bytes.
type Pending = (StoredFile, String, Result<Arc<CachedFile>, Vec<u8>>);

impl Engine {
    /// Writes a tree's finished map to the shared store (best effort).
    pub(super) fn store_map(&self, tree: &str, map: &CodeMap) {
        let Some(store) = &self.config.shared_store else {
            return;
        };
        let t = std::time::Instant::now();
        let bytes = match snapshot::encode(map, map.bm25.terms()) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "map not stored"),
        };
        if bytes.len() > self.config.max_stored_map_bytes {
            return tracing::info!(
                tree,
                bytes = bytes.len(),
                limit = self.config.max_stored_map_bytes,
                "map too large for the shared store; replicas rebuild it from per-file entries"
            );
        }
        match store.put_map(&snapshot::key(tree, self.config.max_file_bytes), &bytes) {
            Ok(()) => {
                self.maps_stored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    tree,
                    bytes = bytes.len(),
                    encode_ms = t.elapsed().as_secs_f64() * 1e3,
                    "map stored"
                );
            }
            Err(e) => store_failed(&e, "write map"),
        }
    }

    /// A tree's map from the shared store, rebuilt around this engine's
    /// caches; with a memory budget, only when it fits in it: the estimate
    /// the writer stored is reserved before any blob is read.
    pub(super) fn load_map(
        &self,
        rev: &GitRevision,
        tables: &Tables,
    ) -> Result<Option<Arc<CodeMap>>, CodemapError> {
        let Some(store) = self.config.shared_store.as_ref() else {
            return Ok(None);
        };
        let bytes = match store.get(&snapshot::key(&rev.tree, self.config.max_file_bytes)) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => {
                store_failed(&e, "read map");
                return Ok(None);
            }
        };
        let t = std::time::Instant::now();
        let stored = match snapshot::decode(&bytes) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "discarding unusable stored map");
                return Ok(None);
            }
        };
        let reservation = match &self.pool {
            Some(pool) if stored.memory_estimate > pool.budget() => {
                tracing::info!(
                    tree = %rev.tree,
                    estimate = stored.memory_estimate,
                    "stored map over the memory budget; analysing in part"
                );
                return Ok(None);
            }
            Some(pool) => Some(self.reserve(pool, stored.memory_estimate)?),
            None => None,
        };
        match self.rebuild(rev, stored, tables) {
            Ok(mut map) => {
                map.reservation = reservation;
                tracing::debug!(
                    tree = %rev.tree,
                    bytes = bytes.len(),
                    load_ms = t.elapsed().as_secs_f64() * 1e3,
                    "map loaded from the shared store"
                );
                Ok(Some(Arc::new(map)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "discarding unusable stored map");
                Ok(None)
            }
        }
    }

    /// Turns a stored map back into a [`CodeMap`]: analyses come from the stored
    /// value (or memory), contents from the blobs of the fetched clone.
    fn rebuild(
        &self,
        rev: &GitRevision,
        stored: StoredMap,
        tables: &Tables,
    ) -> Result<CodeMap, CodemapError> {
        // Another replica may run with larger caps: its map is not read past ours.
        if stored.files.len() > self.config.max_files {
            return Err(CodemapError::Cache(
                "stored map has more files than max_files".into(),
            ));
        }
        let term_ids = tables
            .terms
            .intern_each(stored.terms.iter().map(String::as_str));
        let cached: Vec<(String, Option<Arc<CachedFile>>)> = stored
            .files
            .iter()
            .map(|f| {
                let key = file_key(&f.blob_id, f.language);
                let c = self.cached(&key, tables.generation);
                (key, c)
            })
            .collect();
        let missing = stored
            .files
            .iter()
            .zip(&cached)
            .filter(|(_, (_, c))| c.is_none())
            .map(|(f, _)| f.blob_id.as_str());
        let mut blobs = rev
            .repo
            .read_blobs(missing, &self.limits())?
            .into_iter()
            .map(|blob| match blob {
                contexten_git::Blob::Data(bytes) => Ok(bytes),
                _ => Err(CodemapError::Cache(
                    "a stored map's blob is missing or over the size cap".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let pending: Vec<Pending> = stored
            .files
            .into_iter()
            .zip(cached)
            .map(|(f, (key, c))| {
                let c = c.ok_or_else(|| blobs.next().unwrap_or_default());
                (f, key, c)
            })
            .collect();
        let files: Vec<FileEntry> = pending
            .into_par_iter()
            .map(|(mut f, key, c)| {
                let cached = match c {
                    Ok(c) => {
                        self.reused_memory.fetch_add(1, Ordering::Relaxed);
                        c
                    }
                    Err(blob) => {
                        let c = Arc::new(restore_file(&mut f, blob, &term_ids, tables)?);
                        self.keep(key, &c);
                        c
                    }
                };
                Ok(cached.entry(f.path, f.language, f.blob_id))
            })
            .collect::<Result<_, CodemapError>>()?;
        // The tree is shared; the commit is this request's (another commit, a fork
        // or an empty commit can have the same tree).
        Ok(CodeMap::build(
            files,
            Some(rev.commit.clone()),
            stored.skipped,
            tables.terms.clone(),
            tables.names.clone(),
        ))
    }
}

/// One file of a stored map, with its content from the blob (takes its analysis).
fn restore_file(
    f: &mut StoredFile,
    blob: Vec<u8>,
    term_ids: &[u32],
    tables: &Tables,
) -> Result<CachedFile, CodemapError> {
    let text = String::from_utf8(blob)
        .map_err(|_| CodemapError::Cache(format!("blob {} is not the stored file", f.blob_id)))?;
    // Same blob, same rules (the key carries their version): a file that had
    // nothing to redact is its blob as is.
    let content: Arc<str> = if f.redactions.is_empty() {
        Arc::from(text)
    } else {
        Arc::from(redact::redact_string(text, &mut RedactionCounts::new()))
    };
    let mut lexical: Vec<(u32, f32)> = f
        .lexical
        .iter()
        .map(|(t, w)| (term_ids[*t as usize], *w))
        .collect();
    lexical.sort_unstable_by_key(|(t, _)| *t);
    let names = Arc::new(NameIds::new(&f.analysis, &tables.names));
    let mut analysis = std::mem::take(&mut f.analysis);
    super::compact(&mut analysis);
    Ok(CachedFile {
        names,
        lexical: Arc::new(lexical),
        analysis: Arc::new(analysis),
        content,
        redactions: Arc::new(f.redactions.clone()),
        generation: tables.generation,
    })
}
