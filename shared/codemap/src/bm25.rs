//! A small BM25 index over weighted term frequencies (BM25F-style field weights
//! are folded into the term frequencies before indexing).

use std::sync::{Arc, RwLock};

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Interned terms, shared by every map an engine builds: per-file term lists are
/// kept as ids so (re)building an index is appending to vectors, not hashing strings.
#[derive(Debug, Default)]
pub struct TermTable {
    inner: RwLock<Interned>,
}

/// The strings in one buffer, found by hash: a term costs its bytes plus
/// about 11 (an end offset and a slot of an open-addressing table; a
/// `HashMap<u64, u32>` with chained ids cost about 30, a `HashMap<Arc<str>,
/// u32>` with a `Vec<Arc<str>>` about 75, a tenth of a large repository's map).
#[derive(Debug, Default)]
pub(crate) struct Interned {
    /// Every string, back to back.
    text: String,
    /// Id → end of its string in `text` (start: the previous id's end).
    ends: Vec<u32>,
    /// Open addressing, linear probing: ids, [`EMPTY`] where none; a power of
    /// two long, at most [`MAX_LOAD`] full.
    slots: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;
/// Fullest the slots get, in eighths (the mean probe stays short).
const MAX_LOAD: usize = 6;

impl Interned {
    fn hash(t: &str) -> u32 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(t.as_bytes());
        // Fx's high bits are its best mixed.
        (h.finish() >> 32) as u32
    }

    pub(crate) fn string(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    /// The id of `t` (hash `h`), or the empty slot where it would go.
    fn find(&self, t: &str, h: u32) -> Result<u32, usize> {
        let mask = self.slots.len().wrapping_sub(1);
        let (text, want) = (self.text.as_bytes(), t.as_bytes());
        let mut i = h as usize & mask;
        loop {
            let id = self.slots[i];
            if id == EMPTY {
                return Err(i);
            }
            // A different string mostly differs in length: one look at `ends`.
            let k = id as usize;
            let end = self.ends[k] as usize;
            let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
            if end.wrapping_sub(start) == want.len() && text.get(start..end) == Some(want) {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, t: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.find(t, Self::hash(t)).ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empty, its buffers kept for reuse.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.slots.fill(EMPTY);
    }

    pub(crate) fn intern(&mut self, t: &str) -> u32 {
        let h = Self::hash(t);
        if (self.len() + 1) * 8 > self.slots.len() * MAX_LOAD {
            self.grow_slots();
        }
        let slot = match self.find(t, h) {
            Ok(id) => return id,
            Err(slot) => slot,
        };
        let id = u32::try_from(self.ends.len()).unwrap_or(u32::MAX);
        reserve_gently(&mut self.text, t.len());
        self.text.push_str(t);
        reserve_gently(&mut self.ends, 1);
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        self.slots[slot] = id;
        id
    }

    /// Doubles the slots and puts every id back.
    fn grow_slots(&mut self) {
        let n = (self.slots.len() * 2).max(64);
        let mut slots = vec![EMPTY; n];
        let mask = n - 1;
        for id in 0..u32::try_from(self.len()).unwrap_or(u32::MAX) {
            let h = Self::hash(self.string(id).unwrap_or(""));
            let mut i = h as usize & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = id;
        }
        self.slots = slots;
    }
}

/// Room for `more` in a growing buffer, by an eighth of its length rather
/// than the doubling `push` does: these grow for the whole analysis and are
/// kept, and a doubled buffer holds up to half its bytes unused.
fn reserve_gently<T: Growable>(v: &mut T, more: usize) {
    let (len, cap) = v.len_cap();
    if len + more > cap {
        v.reserve_exact_more((len / 8).max(more).max(1024));
    }
}

trait Growable {
    fn len_cap(&self) -> (usize, usize);
    fn reserve_exact_more(&mut self, n: usize);
}

impl Growable for String {
    fn len_cap(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn reserve_exact_more(&mut self, n: usize) {
        self.reserve_exact(n);
    }
}

impl<T> Growable for Vec<T> {
    fn len_cap(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn reserve_exact_more(&mut self, n: usize) {
        self.reserve_exact(n);
    }
}

impl TermTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Interned> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Interned> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids of `terms` (interning new ones), summing weights of repeated terms;
    /// sorted by id.
    pub fn intern_all<'a>(
        &self,
        terms: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> Vec<(u32, f32)> {
        let terms: Vec<(&str, f32)> = terms.into_iter().collect();
        let mut out = Vec::with_capacity(terms.len());
        let mut missing = Vec::new();
        {
            let table = self.read();
            for (t, w) in &terms {
                match table.get(t) {
                    Some(id) => out.push((id, *w)),
                    None => missing.push((*t, *w)),
                }
            }
        }
        if !missing.is_empty() {
            let mut table = self.write();
            for (t, w) in missing {
                out.push((table.intern(t), w));
            }
        }
        sum_repeated(&mut out);
        out
    }

    /// Ids of `terms` in order (interning new ones).
    pub fn intern_each<'a>(&self, terms: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let terms: Vec<&str> = terms.into_iter().collect();
        let mut out = vec![u32::MAX; terms.len()];
        let mut missing = Vec::new();
        {
            let table = self.read();
            for (i, t) in terms.iter().enumerate() {
                match table.get(t) {
                    Some(id) => out[i] = id,
                    None => missing.push(i),
                }
            }
        }
        if !missing.is_empty() {
            let mut table = self.write();
            for i in missing {
                out[i] = table.intern(terms[i]);
            }
        }
        out
    }

    /// Strings interned.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// The id of a known term.
    pub fn get(&self, term: &str) -> Option<u32> {
        self.read().get(term)
    }

    /// The terms of `ids`, in order (an unknown id gives an empty term).
    pub fn spell(&self, ids: &[u32]) -> Vec<String> {
        let table = self.read();
        ids.iter()
            .map(|id| table.string(*id).unwrap_or("").to_owned())
            .collect()
    }
}

/// Inverted index: term id → (document, weighted tf), in compressed-row form
/// (one flat postings array and per-term offsets) so a rebuild allocates twice.
#[derive(Debug, Default)]
pub struct Bm25Index {
    terms: Arc<TermTable>,
    offsets: Vec<u32>,
    postings: Vec<(u32, f32)>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

impl Bm25Index {
    /// Builds the index from per-document (term id, weighted tf) lists, in order.
    pub fn build(docs: &[&[(u32, f32)]], terms: Arc<TermTable>) -> Self {
        Self::build_with(docs.len(), |i| docs[i].iter().copied(), terms)
    }

    /// [`build`](Self::build) from `n` documents that `doc` lists on demand
    /// (twice each), so a caller need not hold them all as vectors at once.
    pub fn build_with<I: Iterator<Item = (u32, f32)>>(
        n: usize,
        doc: impl Fn(usize) -> I,
        terms: Arc<TermTable>,
    ) -> Self {
        // Sized once for every term the table holds (a document's ids are
        // of this table), not doubled up term by term.
        let mut offsets: Vec<u32> = vec![0; terms.len() + 2];
        for i in 0..n {
            for (term, _) in doc(i) {
                let slot = term as usize + 2;
                if slot >= offsets.len() {
                    offsets.resize(slot + 1, 0);
                }
                offsets[slot] += 1;
            }
        }
        // Counts sit two ahead of their term: summed, `offsets[t + 1]` is
        // where term `t` starts, the cursor it fills from; filled, it is
        // where `t` ends, so the cursors become the offsets without a copy.
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut postings = vec![(0u32, 0.0f32); offsets.last().copied().unwrap_or(0) as usize];
        let mut doc_len = Vec::with_capacity(n);
        for i in 0..n {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let mut len = 0.0f32;
            for (term, tf) in doc(i) {
                len += tf;
                let slot = &mut offsets[term as usize + 1];
                postings[*slot as usize] = (id, tf);
                *slot += 1;
            }
            doc_len.push(len);
        }
        offsets.pop();
        let avg_len = if doc_len.is_empty() {
            1.0
        } else {
            (doc_len.iter().sum::<f32>() / doc_len.len() as f32).max(1.0)
        };
        Self {
            terms,
            offsets,
            postings,
            doc_len,
            avg_len,
        }
    }

    fn list(&self, term: &str) -> &[(u32, f32)] {
        let Some(id) = self.terms.get(term) else {
            return &[];
        };
        let (Some(start), Some(end)) = (
            self.offsets.get(id as usize),
            self.offsets.get(id as usize + 1),
        ) else {
            return &[];
        };
        &self.postings[*start as usize..*end as usize]
    }

    /// Inverse document frequency of a term (0 when absent).
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.doc_len.len() as f32;
        let df = self.list(term).len() as f32;
        if df == 0.0 {
            return 0.0;
        }
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// Document frequency of a term.
    #[cfg(test)]
    pub fn df(&self, term: &str) -> usize {
        self.list(term).len()
    }

    /// Dense scores for `(term, query weight)` pairs.
    pub fn score(&self, query: &[(String, f32)]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.doc_len.len()];
        for (term, qw) in query {
            let list = self.list(term);
            if list.is_empty() {
                continue;
            }
            let idf = self.idf(term);
            for &(doc, tf) in list {
                let len = self.doc_len[doc as usize];
                let norm = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / self.avg_len));
                scores[doc as usize] += qw * idf * norm;
            }
        }
        scores
    }
}

/// A map's lexical index: BM25 over each file's own sorted term list (the
/// map keeps those anyway) and its path's terms, without an inverted copy.
/// An inverted index held every (term, file) pair a second time, as much
/// memory as the term lists (README "Context worker memory"); scoring a
/// term instead looks it up in each file's list, a binary search, which
/// keeps a query within milliseconds on tens of thousands of files. Scores
/// are the same as [`Bm25Index`]'s over the merged lists, to the bit: each
/// file's terms and sums are taken in the same order.
#[derive(Debug, Default)]
pub struct LexicalIndex {
    terms: Arc<TermTable>,
    /// Per file: (term id, weighted tf), sorted by id.
    docs: Vec<Arc<Vec<(u32, f32)>>>,
    /// Per file, back to back: its path's terms, sorted by id.
    paths: Vec<(u32, f32)>,
    /// File → end of its path terms in `paths`.
    path_ends: Vec<u32>,
    /// Term id → number of files it occurs in; [`DF_COUNT`] for as many or
    /// more (counted when asked).
    df: Vec<u16>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

impl LexicalIndex {
    /// Indexes files by their term lists and their paths' terms (both
    /// sorted by id, ids of `terms`); a term of both counts as their sum.
    pub(crate) fn build(
        docs: Vec<Arc<Vec<(u32, f32)>>>,
        path_terms: &[Vec<(u32, f32)>],
        terms: Arc<TermTable>,
    ) -> Self {
        let mut paths = Vec::with_capacity(path_terms.iter().map(Vec::len).sum());
        let mut path_ends = Vec::with_capacity(docs.len());
        for p in path_terms.iter().take(docs.len()) {
            paths.extend_from_slice(p);
            path_ends.push(u32::try_from(paths.len()).unwrap_or(u32::MAX));
        }
        path_ends.resize(docs.len(), u32::try_from(paths.len()).unwrap_or(u32::MAX));
        let mut index = Self {
            df: Vec::new(),
            terms,
            docs,
            paths,
            path_ends,
            doc_len: Vec::new(),
            avg_len: 1.0,
        };
        let mut df: Vec<u16> = vec![0; index.terms.len()];
        let mut doc_len = Vec::with_capacity(index.docs.len());
        for i in 0..index.docs.len() {
            let mut len = 0.0f32;
            for (term, tf) in merge_sorted(&index.docs[i], index.path(i)) {
                len += tf;
                let slot = term as usize;
                if slot >= df.len() {
                    df.resize(slot + 1, 0);
                }
                if df[slot] < DF_COUNT {
                    df[slot] += 1;
                }
            }
            doc_len.push(len);
        }
        index.df = df;
        index.avg_len = if doc_len.is_empty() {
            1.0
        } else {
            (doc_len.iter().sum::<f32>() / doc_len.len() as f32).max(1.0)
        };
        index.doc_len = doc_len;
        index
    }

    fn path(&self, doc: usize) -> &[(u32, f32)] {
        let end = self.path_ends.get(doc).copied().unwrap_or(0) as usize;
        let start = match doc {
            0 => 0,
            _ => self.path_ends.get(doc - 1).copied().unwrap_or(0) as usize,
        };
        self.paths.get(start..end).unwrap_or(&[])
    }

    /// The weighted tf of term `id` in file `doc`, as the merged list has it.
    fn tf(&self, doc: usize, id: u32) -> Option<f32> {
        let find = |list: &[(u32, f32)]| {
            list.binary_search_by_key(&id, |(t, _)| *t)
                .ok()
                .map(|i| list[i].1)
        };
        match (find(&self.docs[doc]), find(self.path(doc))) {
            (Some(x), Some(y)) => Some(x + y),
            (x, None) => x,
            (None, y) => y,
        }
    }

    /// The table this index's term ids are of.
    pub(crate) fn terms(&self) -> &TermTable {
        &self.terms
    }

    /// The id of a term in this index's table.
    pub fn term_id(&self, term: &str) -> Option<u32> {
        self.terms.get(term)
    }

    fn df_of(&self, term: &str) -> u32 {
        self.terms.get(term).map_or(0, |id| self.df_of_id(id))
    }

    fn df_of_id(&self, id: u32) -> u32 {
        match self.df.get(id as usize).copied() {
            None => 0,
            Some(DF_COUNT) => {
                let n = (0..self.docs.len())
                    .filter(|d| self.tf(*d, id).is_some())
                    .count();
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            Some(d) => u32::from(d),
        }
    }

    fn idf_of(&self, df: u32) -> f32 {
        let n = self.doc_len.len() as f32;
        let df = df as f32;
        if df == 0.0 {
            return 0.0;
        }
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// Inverse document frequency of a term (0 when absent).
    pub fn idf(&self, term: &str) -> f32 {
        self.idf_of(self.df_of(term))
    }

    /// Document frequency of a term.
    #[cfg(test)]
    pub fn df(&self, term: &str) -> usize {
        self.df_of(term) as usize
    }

    /// Dense scores for `(term, query weight)` pairs.
    pub fn score(&self, query: &[(String, f32)]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.doc_len.len()];
        for (term, qw) in query {
            let Some(id) = self.terms.get(term) else {
                continue;
            };
            let df = self.df_of_id(id);
            if df == 0 {
                continue;
            }
            let idf = self.idf_of(df);
            let mut left = df;
            for (doc, score) in scores.iter_mut().enumerate() {
                let Some(tf) = self.tf(doc, id) else {
                    continue;
                };
                let len = self.doc_len[doc];
                let norm = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / self.avg_len));
                *score += qw * idf * norm;
                // Every file holding the term is scored.
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        scores
    }
}

/// Two id-sorted term lists as one, weights of a shared id summed.
pub(crate) fn merge_sorted<'a>(
    a: &'a [(u32, f32)],
    b: &'a [(u32, f32)],
) -> impl Iterator<Item = (u32, f32)> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (a.get(i), b.get(j)) {
        (Some(x), Some(y)) if x.0 == y.0 => {
            i += 1;
            j += 1;
            Some((x.0, x.1 + y.1))
        }
        (Some(x), Some(y)) if x.0 < y.0 => {
            i += 1;
            Some(*x)
        }
        (Some(x), None) => {
            i += 1;
            Some(*x)
        }
        (_, Some(y)) => {
            j += 1;
            Some(*y)
        }
        (None, None) => None,
    })
}

/// [`LexicalIndex`]'s document frequency of a term in this many files or
/// more: counted when asked (a `u16` per term, not a `u32`, holds the rest).
/// (Three in tests, so that they count.)
const DF_COUNT: u16 = if cfg!(test) { 3 } else { u16::MAX };

/// Sorts `(id, weight)` pairs by id and sums the weights of repeated ids.
pub(crate) fn sum_repeated<W: Copy + std::ops::AddAssign>(pairs: &mut Vec<(u32, W)>) {
    pairs.sort_unstable_by_key(|(id, _)| *id);
    pairs.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
}

/// Collapses repeated query terms into (term, count) pairs in first-seen order.
pub fn weigh_query(terms: &[String]) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    for t in terms {
        if let Some(e) = out.iter_mut().find(|(x, _)| x == t) {
            e.1 += 1.0;
        } else {
            out.push((t.clone(), 1.0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarer_matching_terms_score_higher() {
        let terms = Arc::new(TermTable::default());
        let docs = [
            terms.intern_all([("session", 1.0), ("common", 1.0)]),
            terms.intern_all([("redirect", 3.0), ("common", 1.0), ("redirect", 1.0)]),
            terms.intern_all([("common", 2.0)]),
        ];
        assert_eq!(docs[1].len(), 2, "repeated terms are merged");
        let refs: Vec<&[(u32, f32)]> = docs.iter().map(Vec::as_slice).collect();
        let idx = Bm25Index::build(&refs, terms);
        let s = idx.score(&weigh_query(&["redirect".into(), "common".into()]));
        assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
        assert_eq!(idx.df("common"), 3);
    }

    #[test]
    fn interned_ids_are_stable_through_growth() {
        let table = TermTable::default();
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let ids = table.intern_each(words.iter().map(String::as_str));
        assert_eq!(ids, (0..5000).collect::<Vec<u32>>());
        let again = table.intern_each(words.iter().rev().map(String::as_str));
        assert_eq!(again, (0..5000).rev().collect::<Vec<u32>>());
        assert_eq!(table.get("w4321"), Some(4321));
        assert_eq!(table.get("w5000"), None);
        assert_eq!(table.get(""), None);
        assert_eq!(table.spell(&[0, 4999]), ["w0", "w4999"]);
        assert_eq!(table.intern_each([""]), [5000]);
        assert_eq!(table.get(""), Some(5000));
    }

    #[test]
    fn the_lexical_index_scores_as_an_inverted_index_of_the_merged_lists() {
        let terms = Arc::new(TermTable::default());
        let words = [
            "parse", "header", "session", "redirect", "pool", "retry", "json",
        ];
        let docs: Vec<Vec<(u32, f32)>> = (0..40u32)
            .map(|d| {
                let picked = words
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (d as usize * 7 + i * 3) % 5 < 2)
                    .map(|(i, w)| (*w, (d + i as u32) as f32 % 4.0 + 0.5));
                terms.intern_all(picked)
            })
            .collect();
        let paths: Vec<Vec<(u32, f32)>> = (0..40u32)
            .map(|d| terms.intern_all([(words[d as usize % words.len()], 4.0), ("src", 4.0)]))
            .collect();
        let merged: Vec<Vec<(u32, f32)>> = docs
            .iter()
            .zip(&paths)
            .map(|(a, b)| merge_sorted(a, b).collect())
            .collect();
        let refs: Vec<&[(u32, f32)]> = merged.iter().map(Vec::as_slice).collect();
        let inverted = Bm25Index::build(&refs, terms.clone());
        let lexical = LexicalIndex::build(docs.into_iter().map(Arc::new).collect(), &paths, terms);
        let query = weigh_query(&[
            "redirect".into(),
            "src".into(),
            "json".into(),
            "nope".into(),
        ]);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(lexical.score(&query)), bits(inverted.score(&query)));
        for w in words.iter().chain(&["src", "nope"]) {
            assert_eq!(lexical.idf(w).to_bits(), inverted.idf(w).to_bits(), "{w}");
            assert_eq!(lexical.df(w), inverted.df(w), "{w}");
        }
    }
}
