//! Pull requests: which base a PR's head is compared with, and how its
//! changes enter the context.
//!
//! ingest points a PR task at `refs/pull/{number}/head` of the event's own
//! repository and records the number in `request.extra.github_pull_request`.
//! The base branch comes, in this order, from the event
//! (`github_pull_base.ref`, `pull_request` events and review comments carry
//! it), from `GET {GITHUB_API_URL}/repos/{owner}/{repo}/pulls/{number}` (an
//! `issue_comment` does not), and last from the repository's default branch
//! (`github_default_branch`), which is the base of most PRs but not of one
//! into a release branch: the context records which one was used
//! (`context.extra.pull_request.base_from`). The changed files are ranked
//! first and the diff (against the merge base, see codemap's
//! `pull_request_changes`) takes at most half the prompt budget.

use contexten_codemap::{CodeMap, PullChanges, RankedFile, tokenizer_for};
use contexten_config::{ExposeSecret, SecretSource};
use contexten_envelope::{ReplyTarget, Request, TaskEnvelope};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// The whole-request timeout of the pulls API call.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// The pull request a task is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// `owner/repo` of the event (the PR's base repository).
    pub repo: Option<String>,
}

/// Where the base branch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFrom {
    Event,
    Api,
    DefaultBranch,
}

impl BaseFrom {
    fn as_str(self) -> &'static str {
        match self {
            BaseFrom::Event => "event",
            BaseFrom::Api => "api",
            BaseFrom::DefaultBranch => "default_branch",
        }
    }
}

impl PullRequest {
    /// The PR of a task whose repository is read at that PR's head ref (a
    /// task moved to another repository by ingest's policy is not one).
    pub fn of(envelope: &TaskEnvelope) -> Option<Self> {
        let number = envelope
            .request
            .extra
            .get("github_pull_request")?
            .as_u64()?;
        let reference = envelope.request.repository.as_ref()?.reference.as_deref()?;
        if reference != format!("refs/pull/{number}/head") {
            return None;
        }
        let repo = match &envelope.source.reply_to {
            ReplyTarget::Github { repo, .. } => Some(repo.clone()),
            _ => None,
        };
        Some(PullRequest { number, repo })
    }
}

/// Asks GitHub's pulls API for a PR's base branch.
#[derive(Clone)]
pub struct PullsApi {
    http: reqwest::Client,
    base: String,
    token: Option<SecretSource>,
}

impl std::fmt::Debug for PullsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullsApi")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl PullsApi {
    /// A client of the API at `base` (`GITHUB_API_URL`, operator-set, so not
    /// judged by the outbound guard), with `GITHUB_TOKEN` when set.
    pub fn new(base: &str, token: Option<SecretSource>) -> Self {
        // The fleet's client (contexten-tls), never following a redirect.
        let http = contexten_tls::http_client(contexten_tls::HttpTimeouts {
            request: API_TIMEOUT,
            connect: API_TIMEOUT,
        })
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
        PullsApi {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// `base.ref` of `GET /repos/{repo}/pulls/{number}`; `None` (logged) on
    /// any failure.
    pub async fn base_branch(&self, repo: &str, number: u64) -> Option<String> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let (owner, name) = repo.split_once('/')?;
        if !valid(owner) || !valid(name) {
            return None;
        }
        let mut request = self
            .http
            .get(format!("{}/repos/{owner}/{name}/pulls/{number}", self.base))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.current().expose_secret());
        }
        let answer = async {
            let response = request.send().await?.error_for_status()?;
            response.json::<Value>().await
        };
        match answer.await {
            Ok(pull) => pull
                .pointer("/base/ref")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(error) => {
                tracing::warn!(repo, number, status = ?error.status(), "pull request base not read from the API");
                None
            }
        }
    }
}

/// The base ref to compare the PR's head with, and where it came from.
pub async fn base_ref(
    envelope: &TaskEnvelope,
    pull: &PullRequest,
    api: Option<&PullsApi>,
) -> Option<(String, BaseFrom)> {
    let extra = &envelope.request.extra;
    let branch = |key: &str, path: &str| {
        extra
            .get(key)
            .and_then(|v| {
                if path.is_empty() {
                    Some(v)
                } else {
                    v.pointer(path)
                }
            })
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let found = match branch("github_pull_base", "/ref") {
        Some(b) => Some((b, BaseFrom::Event)),
        None => {
            let from_api = match (api, &pull.repo) {
                (Some(api), Some(repo)) => api.base_branch(repo, pull.number).await,
                _ => None,
            };
            match from_api {
                Some(b) => Some((b, BaseFrom::Api)),
                None => branch("github_default_branch", "").map(|b| (b, BaseFrom::DefaultBranch)),
            }
        }
    };
    found.map(|(b, from)| (format!("refs/heads/{b}"), from))
}

/// The definition a review comment's line falls in (`hints.target_file` at
/// `extra.github_review_line`), as a symbol hint.
pub fn commented_symbol(map: &CodeMap, request: &Request) -> Option<String> {
    let path = request.hints.target_file.as_deref()?;
    let line = request.extra.get("github_review_line")?.as_u64()?;
    let file = map.find_file(path)?;
    let symbol = map.symbol_at(file, u32::try_from(line).ok()?)?;
    let entry = map.files().get(file as usize)?;
    Some(entry.analysis.symbols.get(symbol as usize)?.name.clone())
}

/// The ranked files with those the PR changes first (each order kept), the
/// changed ones marked with the reason.
pub fn changed_first(ranked: Vec<RankedFile>, changed: &[String], number: u64) -> Vec<RankedFile> {
    let changed: HashSet<&str> = changed.iter().map(String::as_str).collect();
    let (mut first, rest): (Vec<_>, Vec<_>) = ranked
        .into_iter()
        .partition(|f| changed.contains(f.path.as_str()));
    for file in &mut first {
        file.reasons
            .insert(0, format!("changed in pull request #{number}"));
    }
    first.extend(rest);
    first
}

/// The diff section of the prompt, cut by lines to `budget_tokens`; its text
/// and token count.
pub fn diff_section(
    changes: &PullChanges,
    number: u64,
    head: &str,
    budget_tokens: usize,
    model: &str,
) -> (String, usize) {
    let (bpe, _) = tokenizer_for(model);
    let count = |s: &str| bpe.count_ordinary(s);
    let header = format!(
        "# Pull request #{number}: changes from {} to {}\n",
        short(&changes.base_commit),
        short(head)
    );
    let render = |lines: &[&str], cut: bool| {
        let mut s = header.clone();
        s.push_str("```diff\n");
        for line in lines {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("```\n");
        if cut || changes.truncated {
            s.push_str("[diff truncated]\n");
        }
        s.push('\n');
        s
    };
    let lines: Vec<&str> = changes.diff.lines().collect();
    let full = render(&lines, false);
    let tokens = count(&full);
    if tokens <= budget_tokens {
        return (full, tokens);
    }
    let (mut lo, mut hi) = (0usize, lines.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&render(&lines[..mid], true)) <= budget_tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return (String::new(), 0);
    }
    let text = render(&lines[..lo], true);
    let tokens = count(&text);
    (text, tokens)
}

/// `context.extra.pull_request`.
pub fn describe(pull: &PullRequest, base: &str, from: BaseFrom, changes: &PullChanges) -> Value {
    json!({
        "number": pull.number,
        "base_ref": base,
        "base_from": from.as_str(),
        "base_commit": changes.base_commit,
        "against_merge_base": changes.against_merge_base,
        "changed_files": changes.files,
        "diff_truncated": changes.truncated,
    })
}

/// The 7-character form of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(path: &str) -> RankedFile {
        RankedFile {
            path: path.into(),
            score: 1.0,
            symbols: Vec::new(),
            reasons: vec!["bm25".into()],
            components: Default::default(),
        }
    }

    fn pull_task(extra: serde_json::Value) -> TaskEnvelope {
        let request = Request {
            text: "why".into(),
            repository: Some(contexten_envelope::RepositoryRef {
                url: "https://github.com/octo/hello.git".into(),
                reference: Some("refs/pull/5/head".into()),
            }),
            extra: extra.as_object().cloned().unwrap_or_default(),
            ..Request::default()
        };
        let source = contexten_envelope::Source {
            kind: contexten_envelope::SourceKind::GITHUB,
            delivery_id: None,
            requested_by: None,
            reply_to: ReplyTarget::Github {
                repo: "octo/hello".into(),
                number: 5,
                comment_id: None,
            },
            extra: Default::default(),
        };
        TaskEnvelope::new(source, request)
    }

    #[tokio::test]
    async fn the_base_comes_from_the_event_else_the_api_else_the_default_branch() {
        let event = pull_task(json!({"github_pull_request": 5,
            "github_pull_base": {"ref": "release/1.0", "sha": "abc"}, "github_default_branch": "main"}));
        let pull = PullRequest::of(&event).expect("a pull request");
        assert_eq!(pull.repo.as_deref(), Some("octo/hello"));
        assert_eq!(
            base_ref(&event, &pull, None).await,
            Some(("refs/heads/release/1.0".into(), BaseFrom::Event))
        );
        // The API cannot be reached here: the default branch is the base.
        let api = PullsApi::new("http://127.0.0.1:9", None);
        let comment = pull_task(json!({"github_pull_request": 5, "github_default_branch": "main"}));
        assert_eq!(
            base_ref(&comment, &pull, Some(&api)).await,
            Some(("refs/heads/main".into(), BaseFrom::DefaultBranch))
        );
        // A task moved to another ref (or repository) is no pull request.
        let mut moved = comment.clone();
        moved.request.repository.as_mut().unwrap().reference = None;
        assert_eq!(PullRequest::of(&moved), None);
    }

    #[test]
    fn a_review_comment_line_names_the_definition_it_falls_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("retry.py"),
            "def first():\n    return 1\n\n\ndef backoff(attempt):\n    wait = 2 ** attempt\n    return wait\n",
        )
        .unwrap();
        let engine = contexten_codemap::Engine::new(contexten_codemap::EngineConfig {
            allow_local: true,
            ..Default::default()
        });
        let map = engine
            .analyse(&contexten_codemap::RepoSource::Local(
                dir.path().to_path_buf(),
            ))
            .unwrap();
        let mut request = pull_task(json!({"github_review_line": 6})).request;
        request.hints.target_file = Some("retry.py".into());
        assert_eq!(commented_symbol(&map, &request).as_deref(), Some("backoff"));
        request.extra.insert("github_review_line".into(), 3.into());
        assert_eq!(
            commented_symbol(&map, &request),
            None,
            "between definitions"
        );
        request.hints.target_file = None;
        assert_eq!(commented_symbol(&map, &request), None);
    }

    #[test]
    fn changed_files_lead_in_their_own_order() {
        let files = ["a.py", "b.py", "c.py", "d.py"].map(ranked).to_vec();
        let out = changed_first(files, &["d.py".into(), "b.py".into()], 5);
        let paths: Vec<&str> = out.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b.py", "d.py", "a.py", "c.py"]);
        assert_eq!(out[0].reasons[0], "changed in pull request #5");
        assert_eq!(out[2].reasons, ["bm25"]);
    }

    #[test]
    fn a_long_diff_is_cut_by_lines_to_its_budget() {
        let changes = PullChanges {
            base_commit: "0123456789abcdef".into(),
            diff: (0..2000).map(|i| format!("+line {i}\n")).collect(),
            ..PullChanges::default()
        };
        let (text, tokens) = diff_section(&changes, 5, "fedcba9876543210", 300, "gpt-4.1");
        assert!(tokens <= 300 && tokens > 200, "{tokens}");
        assert!(text.starts_with("# Pull request #5: changes from 0123456 to fedcba9\n"));
        assert!(text.contains("+line 0\n") && text.contains("[diff truncated]"));
        let (whole, _) = diff_section(&changes, 5, "fedcba9", 1_000_000, "gpt-4.1");
        assert!(whole.contains("+line 1999\n") && !whole.contains("[diff truncated]"));
    }
}
