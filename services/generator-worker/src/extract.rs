//! Getting the code out of an answer, in autogenlib's order: the whole text, else
//! the fenced blocks, else a diff. The candidate must also pass the syntax check
//! (or, for diffs, parse); the error of the best candidate feeds the repair round.

use crate::patch::{Diff, HunkLine};
use crate::syntax::{self, Language};

/// Why an answer is unusable, in words fit for the repair prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A fenced block: its info string and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub info: String,
    pub body: String,
}

/// Every fenced block (``` or ~~~, three or more); an unclosed last block
/// (a truncated answer) runs to the end.
pub fn fenced_blocks(text: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, String, Vec<&str>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match (&mut open, fence_char) {
            (None, Some(c)) if run >= 3 => {
                let info = trimmed[run..].trim().to_owned();
                open = Some((c, run, info, Vec::new()));
            }
            (Some((c, n, _, _)), Some(fc))
                if fc == *c && run >= *n && trimmed[run..].trim().is_empty() =>
            {
                if let Some((_, _, info, body)) = open.take() {
                    blocks.push(Fenced {
                        info,
                        body: join(&body),
                    });
                }
            }
            (Some((_, _, _, body)), _) => body.push(line),
            (None, _) => {}
        }
    }
    if let Some((_, _, info, body)) = open {
        blocks.push(Fenced {
            info,
            body: join(&body),
        });
    }
    blocks
}

fn join(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn info_tag(info: &str) -> String {
    info.split(|c: char| c.is_whitespace() || c == ',' || c == '{')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn check(code: &str, language: Option<Language>) -> Result<(), Invalid> {
    match language {
        Some(language) => syntax::check(code, language).map_err(|e| Invalid(e.to_string())),
        None if code.trim().is_empty() => Err(Invalid("the code is empty".into())),
        None => Ok(()),
    }
}

/// New code from `answer`, checked as `language` (any non-empty code when unknown).
pub fn code(answer: &str, language: Option<Language>) -> Result<String, Invalid> {
    let whole = answer.trim();
    if whole.is_empty() {
        return Err(Invalid("the answer is empty".into()));
    }
    let has_fences = whole.contains("```") || whole.contains("~~~");
    if !has_fences && check(whole, language).is_ok() {
        return Ok(format!("{whole}\n"));
    }
    let blocks: Vec<Fenced> = fenced_blocks(answer)
        .into_iter()
        .filter(|b| !matches!(info_tag(&b.info).as_str(), "diff" | "patch"))
        .collect();
    let tagged: Vec<&Fenced> = match language {
        Some(lang) => {
            let tagged: Vec<&Fenced> = blocks
                .iter()
                .filter(|b| {
                    let tag = info_tag(&b.info);
                    tag.is_empty() || lang.fence_tags().contains(&tag.as_str())
                })
                .collect();
            if tagged.is_empty() {
                blocks.iter().collect()
            } else {
                tagged
            }
        }
        None => blocks.iter().collect(),
    };
    let mut first_error = None;
    if !tagged.is_empty() {
        let joined: String = tagged
            .iter()
            .map(|b| b.body.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        match check(&joined, language) {
            Ok(()) => return Ok(joined),
            Err(e) => first_error = Some(e),
        }
        let mut by_size = tagged.clone();
        by_size.sort_by_key(|b| std::cmp::Reverse(b.body.len()));
        if by_size.len() > 1
            && let Some(block) = by_size.iter().find(|b| check(&b.body, language).is_ok())
        {
            return Ok(block.body.clone());
        }
    }
    if let Some(created) = new_file_from_diff(answer) {
        match check(&created, language) {
            Ok(()) => return Ok(created),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    // Prose only: name what the whole text failed on.
    Err(match check(whole, language) {
        Err(e) if !has_fences => Invalid(format!(
            "the answer is not code and has no fenced code block ({e})"
        )),
        _ => Invalid("the answer has no fenced code block".into()),
    })
}

/// The content of a file a diff creates (`--- /dev/null`), if the answer is one.
fn new_file_from_diff(answer: &str) -> Option<String> {
    let diff = Diff::parse(answer).ok()?;
    let file = diff.files.iter().find(|f| f.old_path.is_none())?;
    let mut text = String::new();
    for hunk in &file.hunks {
        for line in &hunk.lines {
            if let HunkLine::Added(s) = line {
                text.push_str(s);
                text.push('\n');
            }
        }
    }
    (!text.trim().is_empty()).then_some(text)
}

/// A unified diff from `answer`: the whole text, else a fenced `diff` block (or
/// one that looks like a diff), else a diff embedded in prose.
pub fn diff(answer: &str) -> Result<Diff, Invalid> {
    let whole = answer.trim_start();
    if (whole.starts_with("--- ") || whole.starts_with("diff --git"))
        && let Ok(diff) = Diff::parse(whole)
    {
        return Ok(diff);
    }
    let mut first_error = None;
    for block in fenced_blocks(answer) {
        let tag = info_tag(&block.info);
        let looks_like = block.body.contains("\n+++ ") || block.body.starts_with("--- ");
        if matches!(tag.as_str(), "diff" | "patch" | "udiff") || looks_like {
            match Diff::parse(&block.body) {
                Ok(diff) => return Ok(diff),
                Err(e) => {
                    first_error.get_or_insert(Invalid(format!("the diff does not parse: {e}")));
                }
            }
        }
    }
    Diff::parse(answer).map_err(|e| {
        first_error.unwrap_or_else(|| Invalid(format!("the answer has no unified diff: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_code_is_taken_whole() {
        let answer = "def add(a, b):\n    return a + b\n";
        assert_eq!(code(answer, Some(Language::Python)).unwrap(), answer);
    }

    #[test]
    fn fenced_code_in_prose_is_extracted() {
        let answer = "Sure! Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nIt adds two numbers.";
        assert_eq!(
            code(answer, Some(Language::Python)).unwrap(),
            "def add(a, b):\n    return a + b\n"
        );
    }

    #[test]
    fn blocks_in_other_languages_are_skipped_and_several_blocks_joined() {
        let answer = "```bash\npip install x\n```\n```py\nimport os\n```\ntext\n```python\ndef f():\n    return os.sep\n```";
        let got = code(answer, Some(Language::Python)).unwrap();
        assert!(
            got.contains("import os") && got.contains("def f()"),
            "{got}"
        );
        assert!(!got.contains("pip install"));
    }

    #[test]
    fn invalid_code_reports_the_syntax_error() {
        let answer = "```rust\nfn add(a: i32) -> i32 { a + }\n```";
        let err = code(answer, Some(Language::Rust)).unwrap_err();
        assert!(err.0.contains("rust syntax error at line 1"), "{err}");
        let err = code("I cannot help with that.", Some(Language::Python)).unwrap_err();
        assert!(err.0.contains("not code"), "{err}");
    }

    #[test]
    fn an_unclosed_fence_still_yields_its_body() {
        let blocks = fenced_blocks("```go\npackage m\n");
        assert_eq!(
            blocks,
            vec![Fenced {
                info: "go".into(),
                body: "package m\n".into()
            }]
        );
    }

    #[test]
    fn diffs_are_found_whole_fenced_or_in_prose() {
        let raw = "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n";
        assert_eq!(diff(raw).unwrap().files.len(), 1);
        let fenced = format!("Here you go:\n```diff\n{raw}```\nDone.");
        assert_eq!(diff(&fenced).unwrap().files[0].path(), "m.py");
        let prose = format!("Change this:\n\n{raw}\nThat's all.");
        assert_eq!(diff(&prose).unwrap().files[0].hunks.len(), 1);
        assert!(diff("no diff here").is_err());
    }
}
