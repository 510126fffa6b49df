//! A small BM25 index over weighted term frequencies (BM25F-style field weights
//! are folded into the term frequencies before indexing).

use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Inverted index: term → (document, weighted tf).
#[derive(Debug, Default)]
pub struct Bm25Index {
    postings: HashMap<String, Vec<(u32, f32)>>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

impl Bm25Index {
    /// Builds the index from per-document weighted term lists (documents in order).
    pub fn build(docs: Vec<HashMap<String, f32>>) -> Self {
        let mut postings: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (i, doc) in docs.into_iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            doc_len.push(doc.values().sum());
            for (term, tf) in doc {
                postings.entry(term).or_default().push((id, tf));
            }
        }
        let avg_len = if doc_len.is_empty() {
            1.0
        } else {
            (doc_len.iter().sum::<f32>() / doc_len.len() as f32).max(1.0)
        };
        Self {
            postings,
            doc_len,
            avg_len,
        }
    }

    /// Inverse document frequency of a term (0 when absent).
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.doc_len.len() as f32;
        let df = self.postings.get(term).map_or(0, Vec::len) as f32;
        if df == 0.0 {
            return 0.0;
        }
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// Document frequency of a term.
    #[cfg(test)]
    pub fn df(&self, term: &str) -> usize {
        self.postings.get(term).map_or(0, Vec::len)
    }

    /// Dense scores for `(term, query weight)` pairs.
    pub fn score(&self, query: &[(String, f32)]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.doc_len.len()];
        for (term, qw) in query {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
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
        let doc =
            |pairs: &[(&str, f32)]| pairs.iter().map(|(t, w)| ((*t).to_owned(), *w)).collect();
        let idx = Bm25Index::build(vec![
            doc(&[("session", 1.0), ("common", 1.0)]),
            doc(&[("redirect", 3.0), ("common", 1.0)]),
            doc(&[("common", 2.0)]),
        ]);
        let s = idx.score(&weigh_query(&["redirect".into(), "common".into()]));
        assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
        assert_eq!(idx.df("common"), 3);
    }
}
