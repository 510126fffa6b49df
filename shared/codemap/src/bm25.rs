//! A small BM25 index over weighted term frequencies (BM25F-style field weights
//! are folded into the term frequencies before indexing).

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap as HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Interned terms, shared by every map an engine builds: per-file term lists are
/// kept as ids so (re)building an index is appending to vectors, not hashing strings.
#[derive(Debug, Default)]
pub struct TermTable {
    inner: RwLock<Interned>,
}

/// The strings in one buffer, found by hash: a term costs its bytes plus
/// about 20 (a `HashMap<Arc<str>, u32>` and a `Vec<Arc<str>>` cost about 75,
/// a tenth of a large repository's map).
#[derive(Debug, Default)]
struct Interned {
    /// Every string, back to back.
    text: String,
    /// Id → end of its string in `text` (start: the previous id's end).
    ends: Vec<u32>,
    /// Hash of a string → the last id interned with that hash.
    by_hash: HashMap<u64, u32>,
    /// Id → the previous id with the same hash, or `u32::MAX`.
    next: Vec<u32>,
}

impl Interned {
    fn hash(t: &str) -> u64 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(t.as_bytes());
        h.finish()
    }

    fn string(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    fn get(&self, t: &str) -> Option<u32> {
        let mut id = *self.by_hash.get(&Self::hash(t))?;
        while id != u32::MAX {
            if self.string(id) == Some(t) {
                return Some(id);
            }
            id = self.next[id as usize];
        }
        None
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn intern(&mut self, t: &str) -> u32 {
        if let Some(id) = self.get(t) {
            return id;
        }
        let id = u32::try_from(self.ends.len()).unwrap_or(u32::MAX);
        self.text.push_str(t);
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        let previous = self.by_hash.insert(Self::hash(t), id);
        self.next.push(previous.unwrap_or(u32::MAX));
        id
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
        out.sort_unstable_by_key(|(id, _)| *id);
        out.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
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
        let mut offsets: Vec<u32> = Vec::new();
        for i in 0..n {
            for (term, _) in doc(i) {
                let slot = term as usize + 1;
                if slot >= offsets.len() {
                    offsets.resize(slot + 1, 0);
                }
                offsets[slot] += 1;
            }
        }
        if offsets.is_empty() {
            offsets.push(0);
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut fill = offsets.clone();
        let mut postings = vec![(0u32, 0.0f32); offsets.last().copied().unwrap_or(0) as usize];
        let mut doc_len = Vec::with_capacity(n);
        for i in 0..n {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let mut len = 0.0f32;
            for (term, tf) in doc(i) {
                len += tf;
                let slot = &mut fill[term as usize];
                postings[*slot as usize] = (id, tf);
                *slot += 1;
            }
            doc_len.push(len);
        }
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

    /// The table this index's term ids are of.
    pub(crate) fn terms(&self) -> &TermTable {
        &self.terms
    }

    /// The id of a term in this index's table.
    pub fn term_id(&self, term: &str) -> Option<u32> {
        self.terms.get(term)
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
}
