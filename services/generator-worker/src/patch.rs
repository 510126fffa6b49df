//! Unified diffs: parsing (tolerant of the hunk-header counts and line numbers
//! models get wrong), applying against file contents (strict on content: every
//! context and removed line must match), and rendering back with correct headers
//! so the result applies with `git apply`.

use std::collections::BTreeMap;

/// A parsed diff: one entry per file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub files: Vec<FileDiff>,
}

/// The changes to one file. `old_path` is `None` for a new file, `new_path`
/// `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub old_path: Option<String>,
    pub new_path: Option<String>,
    pub hunks: Vec<Hunk>,
}

impl FileDiff {
    /// The path the change is about (new path, else old).
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }
}

/// One hunk: its stated old start line (1-based, a hint only) and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    pub old_start: usize,
    pub lines: Vec<HunkLine>,
}

/// A line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HunkLine {
    Context(String),
    Removed(String),
    Added(String),
}

/// Why a diff does not parse or apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the diff has no file headers (`--- a/path` then `+++ b/path`)")]
    NoFiles,
    #[error("the diff for `{0}` has no hunks")]
    NoHunks(String),
    #[error("bad hunk header `{0}`")]
    BadHunkHeader(String),
    #[error("`{0}` is not in the repository")]
    MissingFile(String),
    #[error("`{0}` already exists in the repository, it cannot be created")]
    AlreadyExists(String),
    #[error("unsafe path `{0}`")]
    UnsafePath(String),
    #[error(
        "hunk {hunk} of `{path}` does not apply: these lines are not in the file as written: {lines}"
    )]
    Mismatch {
        path: String,
        hunk: usize,
        lines: String,
    },
}

fn strip_prefix(path: &str) -> Option<String> {
    let path = path.split('\t').next().unwrap_or(path).trim();
    if path == "/dev/null" {
        return None;
    }
    let path = path
        .strip_prefix("a/")
        .or_else(|| path.strip_prefix("b/"))
        .unwrap_or(path);
    Some(path.to_owned())
}

/// Whether hunk lines follow the blank lines at the start of `rest`.
fn continues_hunk(rest: &[&str]) -> bool {
    let mut rest = rest.iter().skip_while(|l| l.is_empty());
    match (rest.next(), rest.next()) {
        (Some(line), next) => {
            let next_file = line.starts_with("--- ") && next.is_some_and(|n| n.starts_with("+++ "));
            !next_file && (line.starts_with([' ', '+', '-', '\\']))
        }
        (None, _) => false,
    }
}

fn parse_old_start(header: &str) -> Result<usize, PatchError> {
    // "@@ -12,7 +12,8 @@ optional section"
    let bad = || PatchError::BadHunkHeader(header.to_owned());
    let old = header
        .strip_prefix("@@")
        .and_then(|rest| rest.trim_start().strip_prefix('-'))
        .ok_or_else(bad)?;
    let number: String = old.chars().take_while(|c| c.is_ascii_digit()).collect();
    number.parse().map_err(|_| bad())
}

impl Diff {
    /// Parses a unified diff. Hunk bodies run until the next header; the counts
    /// in `@@` headers are ignored (recomputed on rendering).
    pub fn parse(text: &str) -> Result<Diff, PatchError> {
        let lines: Vec<&str> = text.lines().collect();
        let mut files: Vec<FileDiff> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if line.starts_with("--- ")
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("+++ "))
            {
                files.push(FileDiff {
                    old_path: strip_prefix(&line[4..]),
                    new_path: strip_prefix(&lines[i + 1][4..]),
                    hunks: Vec::new(),
                });
                i += 2;
                continue;
            }
            if line.starts_with("@@") {
                let file = files.last_mut().ok_or(PatchError::NoFiles)?;
                let mut hunk = Hunk {
                    old_start: parse_old_start(line)?,
                    lines: Vec::new(),
                };
                i += 1;
                while i < lines.len() {
                    let body = lines[i];
                    let next_file = body.starts_with("--- ")
                        && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "));
                    if body.starts_with("@@") || body.starts_with("diff --git") || next_file {
                        break;
                    }
                    match body.chars().next() {
                        Some('+') => hunk.lines.push(HunkLine::Added(body[1..].to_owned())),
                        Some('-') => hunk.lines.push(HunkLine::Removed(body[1..].to_owned())),
                        Some(' ') => hunk.lines.push(HunkLine::Context(body[1..].to_owned())),
                        // Models (and some editors) drop the space of empty context
                        // lines; blank lines followed by no more hunk lines end it.
                        None if continues_hunk(&lines[i + 1..]) => {
                            hunk.lines.push(HunkLine::Context(String::new()))
                        }
                        None => break,
                        Some('\\') => {}
                        Some(_) => break,
                    }
                    i += 1;
                }
                file.hunks.push(hunk);
                continue;
            }
            i += 1;
        }
        if files.is_empty() {
            return Err(PatchError::NoFiles);
        }
        for file in &files {
            if file.hunks.is_empty() {
                return Err(PatchError::NoHunks(file.path().to_owned()));
            }
            for path in [&file.old_path, &file.new_path].into_iter().flatten() {
                if !crate::repo::is_safe_relative(path) {
                    return Err(PatchError::UnsafePath(path.clone()));
                }
            }
        }
        Ok(Diff { files })
    }

    /// The paths whose current content applying needs.
    pub fn sources(&self) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|f| f.old_path.clone())
            .collect()
    }
}

/// The outcome of applying a diff: new contents by path (`None` = deleted) and
/// the diff re-rendered with exact hunk headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub files: BTreeMap<String, Option<String>>,
    pub rendered: String,
}

/// Applies `diff` to `sources` (path → current content, `None` = absent).
pub fn apply(
    diff: &Diff,
    sources: &BTreeMap<String, Option<String>>,
) -> Result<Applied, PatchError> {
    let mut files = BTreeMap::new();
    let mut rendered = String::new();
    for file in &diff.files {
        let original = match &file.old_path {
            Some(path) => match sources.get(path) {
                Some(Some(content)) => content.clone(),
                _ => return Err(PatchError::MissingFile(path.clone())),
            },
            None => {
                let path = file.path().to_owned();
                if matches!(sources.get(&path), Some(Some(_))) {
                    return Err(PatchError::AlreadyExists(path));
                }
                String::new()
            }
        };
        let (content, hunks) = apply_file(file, &original)?;
        rendered.push_str(&format!(
            "--- {}\n+++ {}\n",
            file.old_path
                .as_ref()
                .map_or("/dev/null".into(), |p| format!("a/{p}")),
            file.new_path
                .as_ref()
                .map_or("/dev/null".into(), |p| format!("b/{p}")),
        ));
        rendered.push_str(&hunks);
        match &file.new_path {
            Some(path) => files.insert(path.clone(), Some(content)),
            None => files.insert(file.path().to_owned(), None),
        };
    }
    Ok(Applied { files, rendered })
}

/// Applies one file's hunks in order; returns the new content and its hunks
/// rendered with exact positions and counts.
fn apply_file(file: &FileDiff, original: &str) -> Result<(String, String), PatchError> {
    let ends_with_newline = original.is_empty() || original.ends_with('\n');
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mut cursor = 0usize;
    let mut rendered = String::new();
    for (index, hunk) in file.hunks.iter().enumerate() {
        let old: Vec<&str> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Removed(s) => Some(s.as_str()),
                HunkLine::Added(_) => None,
            })
            .collect();
        let new: Vec<String> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Added(s) => Some(s.clone()),
                HunkLine::Removed(_) => None,
            })
            .collect();
        let at = if old.is_empty() {
            // A pure insertion: trust the stated position (the line after which to insert).
            hunk.old_start.min(lines.len()).max(cursor)
        } else {
            find(&lines, &old, cursor, hunk.old_start.saturating_sub(1)).ok_or_else(|| {
                PatchError::Mismatch {
                    path: file.path().to_owned(),
                    hunk: index + 1,
                    lines: first_missing(&lines[cursor.min(lines.len())..], &old),
                }
            })?
        };
        rendered.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            if old.is_empty() { at } else { at + 1 },
            old.len(),
            if new.is_empty() { at } else { at + 1 },
            new.len()
        ));
        // Context and removed lines keep the file's exact text (the match may
        // have ignored trailing whitespace); added lines are the model's.
        let mut originals = lines[at..at + old.len()].iter();
        let mut context_kept = Vec::with_capacity(new.len());
        for line in &hunk.lines {
            match line {
                HunkLine::Context(_) => {
                    let actual = originals.next().cloned().unwrap_or_default();
                    rendered.push_str(&format!(" {actual}\n"));
                    context_kept.push(actual);
                }
                HunkLine::Removed(_) => {
                    let actual = originals.next().map(String::as_str).unwrap_or("");
                    rendered.push_str(&format!("-{actual}\n"));
                }
                HunkLine::Added(added) => {
                    rendered.push_str(&format!("+{added}\n"));
                    context_kept.push(added.clone());
                }
            }
        }
        let inserted = context_kept.len();
        lines.splice(at..at + old.len(), context_kept);
        cursor = at + inserted;
    }
    let mut content = lines.join("\n");
    if !lines.is_empty() && ends_with_newline {
        content.push('\n');
    }
    Ok((content, rendered))
}

/// The first position ≥ `from` where `needle` matches, nearest to `hint`:
/// exact first, then ignoring trailing whitespace.
fn find(lines: &[String], needle: &[&str], from: usize, hint: usize) -> Option<usize> {
    if needle.len() > lines.len() {
        return None;
    }
    let last = lines.len() - needle.len();
    if from > last {
        return None;
    }
    let matches_at = |at: usize, loose: bool| {
        needle.iter().enumerate().all(|(k, want)| {
            let have = lines[at + k].as_str();
            if loose {
                have.trim_end() == want.trim_end()
            } else {
                have == *want
            }
        })
    };
    for loose in [false, true] {
        let mut best: Option<usize> = None;
        for at in from..=last {
            if matches_at(at, loose) && best.is_none_or(|b| at.abs_diff(hint) < b.abs_diff(hint)) {
                best = Some(at);
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

/// Names the first hunk line absent from the file, for the repair prompt.
fn first_missing(lines: &[String], needle: &[&str]) -> String {
    let missing = needle
        .iter()
        .find(|want| !lines.iter().any(|have| have.trim_end() == want.trim_end()))
        .copied()
        .unwrap_or_else(|| needle.first().copied().unwrap_or(""));
    format!(
        "`{}` (context and removed lines must be consecutive and exact)",
        missing.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "def a():\n    return 1\n\n\ndef b():\n    return 2\n";

    fn sources(path: &str, content: &str) -> BTreeMap<String, Option<String>> {
        BTreeMap::from([(path.to_owned(), Some(content.to_owned()))])
    }

    #[test]
    fn a_diff_with_wrong_counts_and_lines_applies_and_is_rendered_exactly() {
        let diff =
            "--- a/m.py\n+++ b/m.py\n@@ -40,2 +40,9 @@\n def b():\n-    return 2\n+    return 3\n";
        let parsed = Diff::parse(diff).unwrap();
        assert_eq!(parsed.sources(), vec!["m.py".to_owned()]);
        let applied = apply(&parsed, &sources("m.py", FILE)).unwrap();
        assert_eq!(
            applied.files["m.py"].as_deref(),
            Some("def a():\n    return 1\n\n\ndef b():\n    return 3\n")
        );
        assert_eq!(
            applied.rendered,
            "--- a/m.py\n+++ b/m.py\n@@ -5,2 +5,2 @@\n def b():\n-    return 2\n+    return 3\n"
        );
    }

    #[test]
    fn context_that_is_not_in_the_file_is_refused_with_the_line() {
        let diff =
            "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def c():\n-    return 2\n+    return 3\n";
        let err = apply(&Diff::parse(diff).unwrap(), &sources("m.py", FILE)).unwrap_err();
        assert!(err.to_string().contains("def c():"), "{err}");
    }

    #[test]
    fn new_and_missing_files_and_unsafe_paths() {
        let create = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+def n():\n+    pass\n";
        let applied = apply(&Diff::parse(create).unwrap(), &BTreeMap::new()).unwrap();
        assert_eq!(
            applied.files["new.py"].as_deref(),
            Some("def n():\n    pass\n")
        );
        let err = apply(&Diff::parse(create).unwrap(), &sources("new.py", "x")).unwrap_err();
        assert_eq!(err, PatchError::AlreadyExists("new.py".into()));
        let change = "--- a/gone.py\n+++ b/gone.py\n@@ -1 +1 @@\n-x\n+y\n";
        let err = apply(&Diff::parse(change).unwrap(), &BTreeMap::new()).unwrap_err();
        assert_eq!(err, PatchError::MissingFile("gone.py".into()));
        let escape = "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-x\n+y\n";
        assert!(matches!(
            Diff::parse(escape),
            Err(PatchError::UnsafePath(_))
        ));
        assert_eq!(Diff::parse("just prose"), Err(PatchError::NoFiles));
    }

    #[test]
    fn two_hunks_and_two_files_apply_in_order() {
        let diff = "diff --git a/m.py b/m.py\nindex 1..2 100644\n--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def a():\n-    return 1\n+    return 10\n@@ -5,2 +5,2 @@\n def b():\n-    return 2\n+    return 20\n--- a/n.py\n+++ b/n.py\n@@ -1 +1,2 @@\n x = 1\n+y = 2\n";
        let mut src = sources("m.py", FILE);
        src.insert("n.py".into(), Some("x = 1\n".into()));
        let applied = apply(&Diff::parse(diff).unwrap(), &src).unwrap();
        assert!(
            applied.files["m.py"]
                .as_deref()
                .unwrap()
                .contains("return 20")
        );
        assert!(
            applied.files["m.py"]
                .as_deref()
                .unwrap()
                .contains("return 10")
        );
        assert_eq!(applied.files["n.py"].as_deref(), Some("x = 1\ny = 2\n"));
    }
}
