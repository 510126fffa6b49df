//! Keeps disk caches under a size budget, least recently used first.
//!
//! A budget covers entries of two kinds: every file under a directory (a
//! cached answer, a per-file analysis: a cache hit refreshes its modification
//! time) and every directory directly inside another (a fetched repository,
//! refreshed by each fetch, removed as a whole). When their total is over the
//! budget, entries go least recently used first until the total is at
//! [`LOW_WATER`] of the budget, so a prune is not needed again right after the
//! next task. Entries used in the last `keep_recent` are never removed: a fetch
//! or a read may be using them. A removed entry only costs a parse, a fetch or
//! a generation the next time.

use contexten_config::{ConfigError, Env};
use contexten_store::CancellationToken;
use contexten_telemetry::metric;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A prune stops once the entries are at this share of the budget.
pub const LOW_WATER: f64 = 0.8;
/// Default budget of a worker's disk cache: 3 GiB, inside the chart's 4 GiB
/// cache volumes (an emptyDir over its size limit gets the pod evicted).
pub const DEFAULT_MAX_BYTES: u64 = 3 << 30;
/// How often a worker measures its disk cache against the budget.
pub const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// Entries used this recently are never pruned: a fetch or a read may be
/// using them.
pub const IN_USE_WINDOW: Duration = Duration::from_secs(600);

/// A worker's budget setting `var` (64 MiB–16 TiB, default [`DEFAULT_MAX_BYTES`]).
pub fn max_bytes_from_env(env: &Env, var: &str) -> Result<u64, ConfigError> {
    env.ranged(var, DEFAULT_MAX_BYTES, 64 << 20, 16 << 40)
}

/// What one prune found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Size of the entries before the prune, in bytes.
    pub bytes_before: u64,
    /// Size after it.
    pub bytes_after: u64,
    /// Single files removed.
    pub files_removed: u64,
    /// Whole directories (fetched repositories) removed.
    pub dirs_removed: u64,
}

impl PruneReport {
    /// Bytes freed.
    pub fn freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// The entries a budget covers and its limits.
#[derive(Debug, Clone)]
pub struct DiskBudget {
    max_bytes: u64,
    keep_recent: Duration,
    file_roots: Vec<PathBuf>,
    dir_roots: Vec<PathBuf>,
}

/// One removable unit: a file, or a whole directory.
struct Entry {
    path: PathBuf,
    bytes: u64,
    last_used: SystemTime,
    dir: bool,
}

impl DiskBudget {
    /// A budget of `max_bytes` that spares entries used within `keep_recent`.
    pub fn new(max_bytes: u64, keep_recent: Duration) -> Self {
        DiskBudget {
            max_bytes,
            keep_recent,
            file_roots: Vec::new(),
            dir_roots: Vec::new(),
        }
    }

    /// Every file under `dir` (at any depth) is one entry.
    pub fn files_under(mut self, dir: impl Into<PathBuf>) -> Self {
        self.file_roots.push(dir.into());
        self
    }

    /// Every directory directly inside `dir` is one entry, removed whole.
    pub fn dirs_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir_roots.push(dir.into());
        self
    }

    /// Brings the entries under the budget (see the module docs). Missing
    /// directories hold nothing.
    pub fn prune(&self) -> std::io::Result<PruneReport> {
        let mut entries = Vec::new();
        for root in &self.file_roots {
            for (path, meta) in files_under(root)? {
                entries.push(Entry {
                    path,
                    bytes: meta.len(),
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    dir: false,
                });
            }
        }
        for root in &self.dir_roots {
            for dir in child_dirs(root)? {
                let files = files_under(&dir)?;
                entries.push(Entry {
                    bytes: files.iter().map(|(_, m)| m.len()).sum(),
                    last_used: files
                        .iter()
                        .filter_map(|(_, m)| m.modified().ok())
                        .max()
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    path: dir,
                    dir: true,
                });
            }
        }
        let before: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut report = PruneReport {
            bytes_before: before,
            bytes_after: before,
            ..PruneReport::default()
        };
        if before <= self.max_bytes {
            return Ok(report);
        }
        let target = (self.max_bytes as f64 * LOW_WATER) as u64;
        let recent = SystemTime::now()
            .checked_sub(self.keep_recent)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        entries.sort_by_key(|e| e.last_used);
        for entry in entries.iter().filter(|e| e.last_used < recent) {
            if report.bytes_after <= target {
                break;
            }
            let removed = if entry.dir {
                std::fs::remove_dir_all(&entry.path)
            } else {
                std::fs::remove_file(&entry.path)
            };
            match removed {
                Ok(()) => {
                    report.bytes_after -= entry.bytes;
                    if entry.dir {
                        report.dirs_removed += 1;
                    } else {
                        report.files_removed += 1;
                    }
                }
                // Another replica sharing the volume removed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.bytes_after -= entry.bytes;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Prunes now, then every `every` until `stop`, on the blocking pool; logs
    /// what it freed and counts it in `contexten_cache_pruned_bytes_total`
    /// under `cache`. A failed prune is logged and tried again next time.
    pub async fn keep_pruned(self, cache: &'static str, every: Duration, stop: CancellationToken) {
        loop {
            let budget = self.clone();
            match tokio::task::spawn_blocking(move || budget.prune()).await {
                Ok(Ok(report)) if report.freed() > 0 => {
                    tracing::info!(
                        cache,
                        freed_bytes = report.freed(),
                        bytes = report.bytes_after,
                        max_bytes = self.max_bytes,
                        files = report.files_removed,
                        dirs = report.dirs_removed,
                        "disk cache pruned"
                    );
                    metric::cache_pruned(cache, report.freed());
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(cache, %error, "disk cache prune failed"),
                Err(error) => tracing::warn!(cache, %error, "disk cache prune stopped"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// Every regular file under `dir` with its metadata (none if `dir` is missing).
fn files_under(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for item in listing {
            let item = item?;
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
fn child_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(listing) => Ok(listing
            .filter_map(Result::ok)
            .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
            .map(|e| e.path())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
