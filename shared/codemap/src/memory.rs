//! The memory budget of an engine ([`crate::EngineConfig::memory_budget`]):
//! what one analysis is estimated to hold, which files are kept when the whole
//! repository does not fit, and the pool every analysis and every map the
//! engine keeps draws from, so together they never go over the budget.
//!
//! The estimate is an upper bound measured on the benchmark trees (README
//! "Context worker memory"): a map holds a file's redacted content plus its
//! analysis (definitions, references, lexical terms), several times the file's
//! bytes, and the parse of a file needs transient room per thread.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lang::Language;

/// Bytes of memory an analysed file is estimated to take per byte of source:
/// content, definitions, references, lexical terms and its share of the map's
/// indices. Peak resident above the process's baseline measured 2.2–2.4× the
/// source bytes on the benchmark trees (the Python stdlib, the cargo registry;
/// README "Context worker memory"); rounded up for allocator slack, languages
/// denser in identifiers and the analyses in flight.
pub const ESTIMATE_PER_SOURCE_BYTE: u64 = 4;
/// Bytes per file regardless of its size: path, blob id, entry, small vectors.
pub const ESTIMATE_PER_FILE: u64 = 4 << 10;
/// Room an analysis needs besides its files: tree-sitter's tree of the largest
/// file on each parsing thread, the interners' growth and the index build.
pub const ESTIMATE_FIXED: u64 = 64 << 20;

/// Estimated memory of analysing one file of `size` bytes.
pub fn file_estimate(size: u64) -> u64 {
    size.saturating_mul(ESTIMATE_PER_SOURCE_BYTE)
        .saturating_add(ESTIMATE_PER_FILE)
}

/// Value class of a file when the budget leaves some out (smaller is kept
/// first): source of a parsed language, then its tests, then other text
/// (docs, configuration). Vendored and generated files never get here
/// ([`crate::filter::skip_by_path`]). Within a class smaller files come first,
/// so a budget covers as many files as it can; then path order.
pub(crate) fn value_class(path: &str) -> u8 {
    if !Language::from_path(path).is_parsed() {
        return 2;
    }
    let lower = path.to_ascii_lowercase();
    let is_test = lower.split('/').any(|part| {
        matches!(
            part,
            "test" | "tests" | "testing" | "__tests__" | "spec" | "benches" | "testdata"
        )
    }) || {
        let name = lower.rsplit('/').next().unwrap_or(&lower);
        name.starts_with("test_")
            || name.contains("_test.")
            || name.contains(".test.")
            || name.contains(".spec.")
            || name.contains("_spec.")
    };
    u8::from(is_test)
}

/// Keeps the most valuable of `items` (path, size, item) whose estimates fit
/// in `budget` (after [`ESTIMATE_FIXED`]); returns them in their given order
/// and how many were left out.
pub(crate) fn select<T>(items: Vec<(String, u64, T)>, budget: u64) -> (Vec<T>, usize) {
    let room = budget.saturating_sub(ESTIMATE_FIXED);
    let total: u64 = items.iter().map(|(_, size, _)| file_estimate(*size)).sum();
    if total <= room {
        return (items.into_iter().map(|(_, _, item)| item).collect(), 0);
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| {
        let (pa, sa, _) = &items[*a];
        let (pb, sb, _) = &items[*b];
        (value_class(pa), sa, pa).cmp(&(value_class(pb), sb, pb))
    });
    let mut keep = vec![false; items.len()];
    let mut used = 0u64;
    let mut left_out = 0;
    for i in order {
        let e = file_estimate(items[i].1);
        // A file that does not fit is left out; smaller ones after it may still fit.
        if used + e > room {
            left_out += 1;
            continue;
        }
        used += e;
        keep[i] = true;
    }
    let kept = items
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|((_, _, item), _)| item)
        .collect();
    (kept, left_out)
}

/// The bytes every analysis in flight and every map the engine keeps have
/// reserved, out of the budget.
#[derive(Debug)]
pub(crate) struct MemoryPool {
    budget: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl MemoryPool {
    pub(crate) fn new(budget: u64) -> Arc<Self> {
        Arc::new(Self {
            budget,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        *self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `bytes` (at most the budget), calling `make_room` (drop cached
    /// maps) when they do not fit, then waiting for other analyses to end;
    /// `None` after `wait`.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        wait: Duration,
        make_room: impl Fn(),
    ) -> Option<Reservation> {
        let bytes = bytes.min(self.budget);
        let deadline = Instant::now() + wait;
        let mut tried_room = false;
        loop {
            {
                let mut used = self
                    .used
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *used + bytes <= self.budget {
                    *used += bytes;
                    return Some(Reservation {
                        pool: self.clone(),
                        bytes,
                    });
                }
                if tried_room {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    // Woken when a reservation is released, or checked again
                    // after a while (a cached map may have been evicted meanwhile).
                    let step = (deadline - now).min(Duration::from_millis(200));
                    drop(
                        self.freed
                            .wait_timeout(used, step)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    );
                    continue;
                }
            }
            make_room();
            tried_room = true;
        }
    }

    fn release(&self, bytes: u64) {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }
}

/// Bytes held out of a [`MemoryPool`] until dropped (a map holds the
/// reservation of its analysis for as long as it lives).
#[derive(Debug)]
pub(crate) struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Reservation {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_comes_before_tests_and_other_text() {
        assert_eq!(value_class("src/lib.rs"), 0);
        assert_eq!(value_class("tests/it/main.rs"), 1);
        assert_eq!(value_class("pkg/server_test.go"), 1);
        assert_eq!(value_class("Lib/test/test_json.py"), 1);
        assert_eq!(value_class("README.md"), 2);
    }

    #[test]
    fn a_budget_keeps_the_most_valuable_files_that_fit() {
        let items: Vec<(String, u64, &str)> = vec![
            ("README.md".into(), 10, "readme"),
            ("src/big.rs".into(), 1000, "big"),
            ("src/small.rs".into(), 10, "small"),
            ("tests/t.rs".into(), 10, "test"),
        ];
        let room = file_estimate(10) * 2 + 100;
        let (kept, left_out) = select(items.clone(), ESTIMATE_FIXED + room);
        // big.rs does not fit; the smaller source, then the test, do.
        assert_eq!(kept, vec!["small", "test"]);
        assert_eq!(left_out, 2);
        let (all, none) = select(items, u64::MAX);
        assert_eq!((all.len(), none), (4, 0));
    }

    #[test]
    fn reservations_never_exceed_the_budget_and_are_released_on_drop() {
        let pool = MemoryPool::new(100);
        let a = pool.reserve(60, Duration::ZERO, || {}).expect("fits");
        assert!(
            pool.reserve(60, Duration::from_millis(10), || {}).is_none(),
            "a second 60 does not fit in 100"
        );
        assert_eq!(pool.used(), 60);
        drop(a);
        let b = pool.reserve(500, Duration::ZERO, || {}).expect("capped");
        assert_eq!(b.bytes(), 100, "a reservation is at most the budget");
    }
}
