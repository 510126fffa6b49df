//! The prompt's overview lists the definitions central to the request's
//! files, not the repository's globally central ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use contexten_codemap::{CodeMap, Query, RepoSource};

use crate::helpers::{analyse, engine, write_repo};

/// The "Central definitions…" lines of an overview, as `path:line signature`.
fn central_lines(overview: &str, header: &str) -> Vec<String> {
    overview
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn prompt_overview(map: &CodeMap, request: &str) -> String {
    let ranked = map.query(&Query::new(request, 10));
    assert!(!ranked.is_empty(), "nothing ranked for {request:?}");
    let prompt = map.assemble_prompt(request, &ranked, 8000, "gpt-4o");
    let overview = prompt
        .text
        .split("\n# ")
        .next()
        .expect("prompt text")
        .to_owned();
    assert!(
        overview.starts_with("# Repository overview"),
        "{}",
        prompt.text
    );
    overview
}

/// A helper package every module calls dominates the global PageRank; a
/// request about the JSON decoder must still get the decoder's neighbourhood.
#[test]
fn overview_lists_definitions_around_the_ranked_files() {
    let mut files: Vec<(String, String)> = vec![
        (
            "util/text.py".into(),
            "def normalize(s):\n    \"\"\"Lower-cases and strips s.\"\"\"\n    return s.strip().lower()\n\n\ndef split_words(s):\n    return normalize(s).split()\n".into(),
        ),
        (
            "email/header.py".into(),
            r#"from util.text import normalize


class Header:
    def append(self, s, charset=None):
        self._chunks.append(normalize(s))

    def encode(self):
        return ''.join(self._chunks)
"#
                .into(),
        ),
        (
            "json/__init__.py".into(),
            r#"from .decoder import JSONDecoder, JSONDecodeError
from .encoder import JSONEncoder

_default_decoder = JSONDecoder()


def loads(s, cls=None):
    """Deserialize s to a Python object."""
    if cls is None:
        return _default_decoder.decode(s)
    return cls().decode(s)


def dumps(obj):
    return JSONEncoder().encode(obj)
"#
                .into(),
        ),
        (
            "json/scanner.py".into(),
            r#"import re

NUMBER_RE = re.compile(r'(-?(?:0|[1-9]\d*))')


def py_make_scanner(context):
    parse_object = context.parse_object
    parse_string = context.parse_string

    def scan_once(string, idx):
        if string[idx] == '{':
            return parse_object((string, idx + 1), scan_once)
        return parse_string(string, idx + 1)
    return scan_once


make_scanner = py_make_scanner
"#
                .into(),
        ),
        (
            "json/decoder.py".into(),
            r#""""Implementation of JSONDecoder."""
from json import scanner


class JSONDecodeError(ValueError):
    """Subclass of ValueError with the position of the error."""

    def __init__(self, msg, doc, pos):
        ValueError.__init__(self, f'{msg}: char {pos}')
        self.pos = pos


def py_scanstring(s, end, strict=True):
    """Scan the string s for a JSON string."""
    if end >= len(s):
        raise JSONDecodeError('Unterminated string', s, end)
    return s[end:], end


scanstring = py_scanstring


def JSONObject(s_and_end, scan_once):
    s, end = s_and_end
    if s[end] == ',':
        raise JSONDecodeError('Illegal trailing comma before end of object', s, end)
    return scan_once(s, end)


class JSONDecoder(object):
    """Simple JSON decoder."""

    def __init__(self, strict=True):
        self.parse_object = JSONObject
        self.parse_string = scanstring
        self.scan_once = scanner.make_scanner(self)

    def decode(self, s):
        obj, end = self.raw_decode(s)
        return obj

    def raw_decode(self, s, idx=0):
        try:
            return self.scan_once(s, idx)
        except StopIteration as err:
            raise JSONDecodeError('Expecting value', s, err.value) from None
"#
                .into(),
        ),
        (
            "json/encoder.py".into(),
            "class JSONEncoder(object):\n    def encode(self, o):\n        return str(o)\n".into(),
        ),
    ];
    // Thirty modules that all use the helpers (and the email header): they
    // make `normalize` and `Header.append` the globally central definitions.
    for i in 0..30 {
        files.push((
            format!("app/mod{i:02}.py"),
            format!(
                "from util.text import normalize, split_words\nfrom email.header import Header\n\n\ndef handle{i}(s):\n    h = Header()\n    h.append(normalize(s))\n    h.append(normalize(s[::-1]))\n    return split_words(h.encode())\n"
            ),
        ));
    }
    let pairs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let dir = write_repo(&pairs);
    let map = analyse(&dir);

    // The problem: globally, the helpers are what is central.
    let global = central_lines(map.summary_text(), "Central definitions:");
    assert!(!global.is_empty(), "{}", map.summary_text());
    assert!(
        global.iter().take(3).all(|l| !l.starts_with("json/")),
        "{global:?}"
    );

    let overview = prompt_overview(&map, "JSON decoder raises on a trailing comma in an object");
    let local = central_lines(&overview, "Central definitions around the ranked files:");
    assert!(local.len() >= 3, "{overview}");
    assert!(
        local.iter().all(|l| l.starts_with("json/")),
        "every listed definition in json/: {local:?}"
    );
    // What the decoder's neighbourhood is built on is there.
    for name in ["JSONDecoder", "JSONDecodeError"] {
        assert!(
            local.iter().any(|l| l.contains(&format!("class {name}"))),
            "{name} in {local:?}"
        );
    }
    // The overview's other lines are the repository's, as before.
    assert!(overview.contains("Repository: 36 files"), "{overview}");

    // Another request, another neighbourhood.
    let overview = prompt_overview(&map, "Header.append drops the charset of email headers");
    let local = central_lines(&overview, "Central definitions around the ranked files:");
    assert!(
        local.first().is_some_and(|l| !l.starts_with("json/")),
        "{local:?}"
    );
    assert!(local.iter().all(|l| !l.starts_with("json/")), "{local:?}");
}

/// The Python standard library of the python3 on this machine (every machine
/// of this kind has one; its absence is a failure, not a skip).
fn python_stdlib() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, os; print(os.path.dirname(os.path.dirname(json.__file__)))",
        ])
        .output()
        .expect("python3 runs (the stdlib overview test needs it)");
    assert!(out.status.success(), "python3 failed: {out:?}");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(p.join("json/decoder.py").is_file(), "{}", p.display());
    p
}

/// The issue's case on the real standard library: a request about the JSON
/// decoder gets an overview whose listed definitions are in `json/`.
#[test]
fn stdlib_json_request_gets_a_json_overview() {
    let stdlib = python_stdlib();
    // A copy without site-packages (installed packages, not the stdlib) and
    // byte-code caches.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(&stdlib, copy.path());
    let root = copy.path().to_path_buf();
    let t = Instant::now();
    let map = engine()
        .analyse(&RepoSource::Local(root.clone()))
        .expect("analyse the stdlib");
    let analysed = t.elapsed();
    assert!(
        map.len() > 1000,
        "{} files in {}",
        map.len(),
        root.display()
    );
    let overview = prompt_overview(&map, "json decoder raises on trailing comma");
    let local = central_lines(&overview, "Central definitions around the ranked files:");
    eprintln!(
        "stdlib: {} files analysed in {analysed:?}\n{overview}",
        map.len()
    );
    assert!(local.len() >= 5, "{overview}");
    assert!(
        local.iter().all(|l| l.starts_with("json/")),
        "every listed definition in json/: {local:?}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = e.file_name();
        if matches!(name.to_str(), Some("site-packages" | "__pycache__")) {
            continue;
        }
        let Ok(kind) = e.file_type() else { continue };
        let dest = to.join(&name);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&e.path(), &dest);
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}
