//! Code-aware tokenisation: identifiers split on camelCase, snake_case and paths,
//! lower-cased and lightly stemmed so `parseHeaders`, `parse_header` and
//! "parsing headers" meet on the same terms.

/// Calls `emit` with every term of `text`: each identifier whole, then its parts.
///
/// Buffers are reused across words: this runs over every byte of every file.
pub fn code_terms(text: &str, mut emit: impl FnMut(&str)) {
    let mut whole = String::new();
    let mut part = String::new();
    let mut parts: Vec<&str> = Vec::new();
    for word in words(text) {
        if word.len() > 48 || word.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            continue;
        }
        // Most words are plain lower case: their own single part, no splitting.
        if word.bytes().all(|b| b.is_ascii_lowercase()) {
            if word.len() >= 2 {
                part.clear();
                part.push_str(word);
                stem_in_place(&mut part);
                emit(&part);
            }
            continue;
        }
        parts.clear();
        split_identifier_into(word, &mut parts);
        if parts.len() > 1 {
            whole.clear();
            for p in &parts {
                whole.push_str(p);
            }
            whole.make_ascii_lowercase();
            emit(&whole);
        }
        for p in &parts {
            if p.len() < 2 || p.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            part.clear();
            part.push_str(p);
            part.make_ascii_lowercase();
            stem_in_place(&mut part);
            emit(&part);
        }
    }
}

/// Plain word terms (no identifier splitting) for the BM25 baseline.
pub fn plain_terms(text: &str, mut emit: impl FnMut(&str)) {
    for word in words(text) {
        if word.len() < 2 || word.len() > 48 {
            continue;
        }
        emit(&stem(&word.to_ascii_lowercase()));
    }
}

/// Query terms: code terms minus stop words.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    code_terms(text, |t| {
        if !is_stop_word(t) {
            out.push(t.to_owned());
        }
    });
    out
}

/// Maximal runs of `[A-Za-z0-9_]`.
///
/// Scans bytes, not chars: every byte of a multi-byte UTF-8 character is >= 0x80,
/// so it ends a run exactly as the character would, without decoding it.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !is_word_byte(bytes[i]) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        // Both ends sit next to ASCII bytes (or the ends of the text), so they
        // are char boundaries.
        (start < i).then(|| &text[start..i])
    })
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Splits `parseHTTPHeaders_now` into `parse`, `HTTP`, `Headers`, `now`.
#[cfg(test)]
pub fn split_identifier(word: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    split_identifier_into(word, &mut parts);
    parts
}

fn split_identifier_into<'a>(word: &'a str, parts: &mut Vec<&'a str>) {
    for chunk in word.split('_').filter(|c| !c.is_empty()) {
        let b = chunk.as_bytes();
        let mut start = 0;
        for i in 1..b.len() {
            let (prev, cur) = (b[i - 1], b[i]);
            let next_lower = b.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            let boundary = (prev.is_ascii_lowercase() && cur.is_ascii_uppercase())
                || (prev.is_ascii_uppercase() && cur.is_ascii_uppercase() && next_lower)
                || (prev.is_ascii_digit() && cur.is_ascii_alphabetic() && i - start > 1);
            if boundary {
                parts.push(&chunk[start..i]);
                start = i;
            }
        }
        parts.push(&chunk[start..]);
    }
}

/// A deliberately small suffix stripper; both sides of a match go through it.
pub fn stem(w: &str) -> String {
    let mut s = w.to_owned();
    stem_in_place(&mut s);
    s
}

fn stem_in_place(s: &mut String) {
    if s.len() > 4 && s.ends_with("ies") {
        s.truncate(s.len() - 3);
        s.push('y');
    } else if s.len() > 3
        && s.ends_with('s')
        && !s.ends_with("ss")
        && !s.ends_with("us")
        && !s.ends_with("is")
    {
        s.pop();
    }
    if s.len() > 5 && s.ends_with("ing") {
        s.truncate(s.len() - 3);
    } else if s.len() > 4 && s.ends_with("ed") {
        s.truncate(s.len() - 2);
    }
    if s.len() > 4 && s.ends_with('e') {
        s.pop();
    }
}

/// English and commit-message noise that carries no signal about code location.
pub fn is_stop_word(t: &str) -> bool {
    const STOP: &[&str] = &[
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "is",
        "it",
        "be",
        "as",
        "at",
        "by",
        "this",
        "that",
        "from",
        "are",
        "was",
        "wer",
        "not",
        "no",
        "but",
        "if",
        "when",
        "so",
        "we",
        "can",
        "do",
        "doe",
        "don",
        "into",
        "also",
        "now",
        "than",
        "then",
        "should",
        "would",
        "could",
        "will",
        "there",
        "their",
        "they",
        "them",
        "which",
        "what",
        "where",
        "who",
        "how",
        "why",
        "all",
        "any",
        "some",
        "more",
        "most",
        "other",
        "only",
        "just",
        "onc",
        "ha",
        "have",
        "had",
        "been",
        "being",
        "its",
        "our",
        "you",
        "your",
        "my",
        "me",
        "us",
        "use",
        "usag",
        "fix",
        "add",
        "updat",
        "remov",
        "chang",
        "mak",
        "make",
        "allow",
        "support",
        "issu",
        "bug",
        "pr",
        "merg",
        "pull",
        "request",
        "commit",
        "sign",
        "off",
        "by",
        "co",
        "author",
        "closes",
        "clos",
        "fixe",
        "see",
        "via",
        "new",
        "instead",
        "about",
        "after",
        "before",
        "e",
        "g",
        "ie",
        "eg",
        "etc",
        "https",
        "http",
        "www",
        "com",
        "github",
        "org",
        "one",
        "two",
        "get",
        "set",
        "tri",
        "try",
        "need",
        "want",
        "sure",
        "ensur",
        "properly",
        "correctly",
        "work",
        "doesn",
        "isn",
        "didn",
        "wasn",
        "it",
        "way",
        "like",
        "same",
        "each",
        "may",
        "might",
        "still",
        "already",
        "those",
        "these",
        "such",
        "what",
        "here",
        "while",
        "been",
        "both",
        "either",
        "whether",
        "over",
        "under",
        "too",
    ];
    t.len() < 2 || STOP.contains(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn words_match_a_char_split(text in "(\\PC|[a-zA-Z0-9_ .]){0,40}") {
            let by_chars: Vec<&str> = text
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            proptest::prop_assert_eq!(words(&text).collect::<Vec<_>>(), by_chars);
        }
    }

    fn terms(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        code_terms(s, |t| v.push(t.to_owned()));
        v
    }

    #[test]
    fn identifiers_split_on_case_and_underscores() {
        assert_eq!(
            split_identifier("parseHTTPHeaders"),
            ["parse", "HTTP", "Headers"]
        );
        assert_eq!(
            split_identifier("max_retry_count"),
            ["max", "retry", "count"]
        );
        assert_eq!(terms("getUserName"), ["getusername", "get", "user", "name"]);
    }

    #[test]
    fn inflections_meet_on_one_stem() {
        assert_eq!(stem("parsing"), stem("parse"));
        assert_eq!(stem("parsed"), stem("parses"));
        assert_eq!(stem("redirects"), "redirect");
        assert_eq!(stem("proxies"), "proxy");
    }

    #[test]
    fn query_terms_drop_stop_words() {
        assert_eq!(
            query_terms("Fix the timeout in the session"),
            ["timeout", "session"]
        );
    }
}
