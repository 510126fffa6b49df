//! Which files of a tree are read, decided from sizes alone (`ls-tree -l`)
//! before any content is: one cap per blob, one on the number of files, one on
//! their total size. What does not fit is counted, never read.
//!
//! Order of value: the caller ranks each file (for codemap, parsed source
//! languages before other text); within a rank, path order. The best
//! `max_files` are kept (a bounded heap, so a tree of millions of entries costs
//! `max_files` entries of memory), then taken in that order while the total
//! fits: a file that would overflow it is skipped and smaller ones after it
//! may still fit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Default of [`Limits::max_files`].
pub const DEFAULT_MAX_FILES: usize = 50_000;
/// Default of [`Limits::max_total_bytes`] (256 MiB).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;
/// Default of [`Limits::max_blob_bytes`] (1 MiB).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1 << 20;

/// Caps on what is read from one tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files read at most.
    pub max_files: usize,
    /// Bytes read at most, all files together.
    pub max_total_bytes: u64,
    /// A larger blob is skipped (`oversize`).
    pub max_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: DEFAULT_MAX_FILES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
        }
    }
}

/// Files left out by the caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Over [`Limits::max_blob_bytes`].
    pub oversize: usize,
    /// Beyond [`Limits::max_files`].
    pub too_many_files: usize,
    /// Would have gone over [`Limits::max_total_bytes`].
    pub total_size_cap: usize,
}

impl Skipped {
    /// `(reason, count)` with the reasons' stable names.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        [
            ("oversize", self.oversize),
            ("too_many_files", self.too_many_files),
            ("total_size_cap", self.total_size_cap),
        ]
    }

    /// Whether the file or total cap left files out (the snapshot is partial).
    pub fn is_partial(&self) -> bool {
        self.too_many_files > 0 || self.total_size_cap > 0
    }
}

/// Collects candidates and keeps the best within [`Limits`].
#[derive(Debug)]
pub struct Selector<K: Ord, T> {
    limits: Limits,
    /// Max-heap: the worst kept candidate on top, to be displaced.
    heap: BinaryHeap<Ranked<K, T>>,
    skipped: Skipped,
}

impl<K: Ord, T> Selector<K, T> {
    /// An empty selection under `limits`.
    pub fn new(limits: Limits) -> Self {
        Selector {
            limits,
            heap: BinaryHeap::new(),
            skipped: Skipped::default(),
        }
    }

    /// Offers a file of `size` bytes; a smaller `key` is more valuable (include
    /// a tie-break such as the path for a stable result).
    pub fn offer(&mut self, key: K, size: u64, item: T) {
        if size > self.limits.max_blob_bytes {
            self.skipped.oversize += 1;
            return;
        }
        let candidate = Ranked { key, size, item };
        if self.heap.len() < self.limits.max_files {
            self.heap.push(candidate);
            return;
        }
        self.skipped.too_many_files += 1;
        if let Some(mut worst) = self.heap.peek_mut()
            && candidate < *worst
        {
            *worst = candidate;
        }
    }

    /// The kept items, most valuable first, and what was skipped.
    pub fn finish(mut self) -> (Vec<T>, Skipped) {
        let mut total = 0u64;
        let mut kept = Vec::with_capacity(self.heap.len());
        for c in self.heap.into_sorted_vec() {
            if total + c.size > self.limits.max_total_bytes {
                self.skipped.total_size_cap += 1;
                continue;
            }
            total += c.size;
            kept.push(c.item);
        }
        (kept, self.skipped)
    }
}

#[derive(Debug)]
struct Ranked<K, T> {
    key: K,
    size: u64,
    item: T,
}

impl<K: Ord, T> PartialEq for Ranked<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Ord, T> Eq for Ranked<K, T> {}

impl<K: Ord, T> PartialOrd for Ranked<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> Ord for Ranked<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_files: usize, max_total_bytes: u64, max_blob_bytes: u64) -> Limits {
        Limits {
            max_files,
            max_total_bytes,
            max_blob_bytes,
        }
    }

    #[test]
    fn the_most_valuable_files_are_kept_within_the_file_cap() {
        let mut s = Selector::new(limits(3, u64::MAX, 100));
        for (rank, name) in [(1, "d"), (0, "c"), (1, "a"), (0, "b"), (2, "e")] {
            s.offer((rank, name), 10, name);
        }
        s.offer((0, "huge"), 101, "huge");
        let (kept, skipped) = s.finish();
        assert_eq!(kept, ["b", "c", "a"]);
        assert_eq!(
            skipped,
            Skipped {
                oversize: 1,
                too_many_files: 2,
                total_size_cap: 0
            }
        );
        assert!(skipped.is_partial());
    }

    #[test]
    fn the_total_cap_skips_what_does_not_fit_and_keeps_smaller_later_files() {
        let mut s = Selector::new(limits(10, 25, 100));
        for (name, size) in [("a", 10), ("b", 20), ("c", 10), ("d", 5)] {
            s.offer(name, size, name);
        }
        let (kept, skipped) = s.finish();
        assert_eq!(kept, ["a", "c", "d"]);
        assert_eq!(skipped.total_size_cap, 1);
    }

    #[test]
    fn nothing_over_the_caps_means_not_partial() {
        let mut s = Selector::new(Limits::default());
        s.offer("a", 1, ());
        let (kept, skipped) = s.finish();
        assert_eq!(kept.len(), 1);
        assert!(!skipped.is_partial());
        assert_eq!(skipped.counts()[0], ("oversize", 0));
    }
}
