//! Keeps an engine's disk cache (`cache_dir`) under a size budget.
//!
//! Two kinds of entries live there: per-file analyses (`analysis/`, one small
//! file each, whose modification time a cache hit refreshes) and shallow
//! fetches (`git/<hash>.git`, one bare repository each, refreshed by every
//! fetch). When the whole directory is over the budget, entries are removed
//! least recently used first until it is at [`LOW_WATER`] of the budget, so a
//! prune is not needed again right after the next analysis. Entries used in the
//! last `keep_recent` are never removed: a fetch or an analysis may be using
//! them. Removing an entry only costs a parse or a fetch the next time.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::CodemapError;

/// A prune stops once the cache is at this share of its budget.
pub const LOW_WATER: f64 = 0.8;

/// What one prune found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Size of the cache before the prune, in bytes.
    pub bytes_before: u64,
    /// Size after it.
    pub bytes_after: u64,
    /// Per-file analyses (and leftover temporary files) removed.
    pub files_removed: u64,
    /// Fetched repositories removed.
    pub repositories_removed: u64,
}

impl PruneReport {
    /// Bytes freed.
    pub fn freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// One removable unit: a file, or a whole fetched repository.
struct Entry {
    path: PathBuf,
    bytes: u64,
    last_used: SystemTime,
    repository: bool,
}

/// Brings `cache_dir` under `max_bytes` (see the module docs). A missing
/// directory is an empty cache.
pub fn prune_cache(
    cache_dir: &Path,
    max_bytes: u64,
    keep_recent: Duration,
) -> Result<PruneReport, CodemapError> {
    let mut entries = Vec::new();
    let analysis = cache_dir.join("analysis");
    for file in files_under(&analysis)? {
        let meta = file.1;
        entries.push(Entry {
            path: file.0,
            bytes: meta.len(),
            last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            repository: false,
        });
    }
    let git = cache_dir.join("git");
    for repo in child_dirs(&git)? {
        let files = files_under(&repo)?;
        entries.push(Entry {
            bytes: files.iter().map(|(_, m)| m.len()).sum(),
            last_used: files
                .iter()
                .filter_map(|(_, m)| m.modified().ok())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH),
            path: repo,
            repository: true,
        });
    }
    let before: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut report = PruneReport {
        bytes_before: before,
        bytes_after: before,
        ..PruneReport::default()
    };
    if before <= max_bytes {
        return Ok(report);
    }
    let target = (max_bytes as f64 * LOW_WATER) as u64;
    let recent = SystemTime::now()
        .checked_sub(keep_recent)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    entries.sort_by_key(|e| e.last_used);
    for entry in entries.iter().filter(|e| e.last_used < recent) {
        if report.bytes_after <= target {
            break;
        }
        let removed = if entry.repository {
            std::fs::remove_dir_all(&entry.path)
        } else {
            std::fs::remove_file(&entry.path)
        };
        match removed {
            Ok(()) => {
                report.bytes_after -= entry.bytes;
                if entry.repository {
                    report.repositories_removed += 1;
                } else {
                    report.files_removed += 1;
                }
            }
            // Another replica sharing the volume removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.bytes_after -= entry.bytes;
            }
            Err(e) => return Err(CodemapError::io(&entry.path, e)),
        }
    }
    Ok(report)
}

/// Every regular file under `dir` with its metadata (none if `dir` is missing).
fn files_under(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, CodemapError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CodemapError::io(&dir, e)),
        };
        for item in listing {
            let item = item.map_err(|e| CodemapError::io(&dir, e))?;
            // Not following links: a link's target is not the cache's to delete.
            let Ok(meta) = item.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(item.path());
            } else if meta.is_file() {
                out.push((item.path(), meta));
            }
        }
    }
    Ok(out)
}

/// The directories directly inside `dir` (none if `dir` is missing).
fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CodemapError> {
    match std::fs::read_dir(dir) {
        Ok(listing) => Ok(listing
            .filter_map(Result::ok)
            .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
            .map(|e| e.path())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CodemapError::io(dir, e)),
    }
}
