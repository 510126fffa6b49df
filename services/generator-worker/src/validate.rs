//! Turning a model answer into a checked result: new code must parse in the
//! target language; a diff must apply cleanly to the repository snapshot and
//! leave every changed file parsing. Nothing generated is ever executed.

use crate::extract::{self, Invalid};
use crate::files;
use crate::job::{Job, Kind};
use crate::patch;
use crate::repo::{RepoReader, Snapshot};
use crate::syntax;
use std::collections::BTreeMap;

/// A checked answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub text: String,
    /// For diffs: the files changed.
    pub files: Vec<String>,
}

/// Checks `answer` for `job`.
pub async fn check(
    job: &Job,
    answer: &str,
    repos: &RepoReader,
    snapshot: Option<&Snapshot>,
) -> Result<Checked, Invalid> {
    match job.kind {
        Kind::NewCode => extract::code(answer, job.language).map(|text| Checked {
            text,
            files: Vec::new(),
        }),
        Kind::Diff => {
            let snapshot = snapshot
                .ok_or_else(|| Invalid("no repository snapshot to apply the diff to".into()))?;
            check_diff(answer, repos, snapshot).await
        }
    }
}

async fn check_diff(
    answer: &str,
    repos: &RepoReader,
    snapshot: &Snapshot,
) -> Result<Checked, Invalid> {
    let diff = extract::diff(answer)?;
    let mut sources = BTreeMap::new();
    for file in &diff.files {
        let path = file.old_path.as_deref().unwrap_or(file.path());
        // A diff may name any path; the sensitive ones are refused unread.
        let content = files::read_raw(repos, snapshot, path)
            .await
            .map_err(|e| Invalid(format!("cannot read `{path}`: {e}")))?;
        sources.insert(path.to_owned(), content);
    }
    let applied = patch::apply(&diff, &sources).map_err(|e| Invalid(e.to_string()))?;
    for (path, content) in &applied.files {
        let (Some(content), Some(language)) = (content, syntax::language_of(path)) else {
            continue;
        };
        // A file that did not parse before is not held against the change.
        let parsed_before = match sources.get(path) {
            Some(Some(before)) => syntax::check(before, language).is_ok(),
            _ => true,
        };
        if parsed_before && let Err(e) = syntax::check(content, language) {
            return Err(Invalid(format!(
                "after applying the diff, `{path}` has a {e}"
            )));
        }
    }
    Ok(Checked {
        text: applied.rendered,
        files: applied.files.keys().cloned().collect(),
    })
}
