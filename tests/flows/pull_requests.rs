//! Requests about pull requests read the PR's head, fetched over git's smart
//! HTTP from the base repository as `refs/pull/{n}/head` (forks included), and
//! the answer names the commit it read.

use contexten_fleet_tests::fakes::Fakes;
use contexten_fleet_tests::harness::*;
use contexten_testkit::git;
use serde_json::{Value, json};
use std::path::Path;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// `<root>/octo/hello.git`, bare, with a commit on `main` and two pull
/// requests whose heads exist only as `refs/pull/{5,6}/head`: PR 5 adds
/// `retry_backoff_seconds`, PR 6 (from a fork) `jitter_window_millis`.
/// Returns the two head commits.
fn repository_with_pull_requests(root: &Path) -> (String, String) {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("app")).unwrap();
    std::fs::write(
        work.join("app/timeutil.py"),
        "\"\"\"Time helpers.\"\"\"\n\n\ndef format_duration(seconds: int) -> str:\n    \"\"\"Render seconds as '1h30m'.\"\"\"\n    hours, rest = divmod(seconds, 3600)\n    return f'{hours}h{rest // 60}m'\n",
    )
    .unwrap();
    std::fs::write(work.join("README.md"), "# hello\nDurations.\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let mut heads = Vec::new();
    for (branch, file, body) in [
        (
            "retry",
            "app/retry.py",
            "def retry_backoff_seconds(attempt: int) -> int:\n    \"\"\"Seconds to wait before retry number `attempt`.\"\"\"\n    return min(300, 2 ** attempt)\n",
        ),
        (
            "jitter",
            "app/jitter.py",
            "def jitter_window_millis(base: int) -> int:\n    \"\"\"The random spread added to a delay.\"\"\"\n    return base // 5\n",
        ),
    ] {
        git(&work, &["checkout", "-q", "-b", branch, "main"]);
        std::fs::write(work.join(file), body).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", branch]);
        heads.push(git(&work, &["rev-parse", "HEAD"]));
    }
    std::fs::create_dir_all(root.join("octo")).unwrap();
    let bare = root.join("octo/hello.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            "--",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    for (number, head) in [(5, &heads[0]), (6, &heads[1])] {
        git(
            &bare,
            &["update-ref", &format!("refs/pull/{number}/head"), head],
        );
    }
    for branch in ["retry", "jitter"] {
        git(
            &bare,
            &["update-ref", "-d", &format!("refs/heads/{branch}")],
        );
    }
    (heads[0].clone(), heads[1].clone())
}

fn repository(clone_url: &str) -> Value {
    json!({"id": 1, "name": "hello", "full_name": "octo/hello", "private": false,
           "owner": {"login": "octo", "type": "Organization"},
           "clone_url": clone_url, "default_branch": "main"})
}

async fn comments(fakes: &Fakes, number: u64) -> Vec<String> {
    Fakes::requests(
        &fakes.github,
        "POST",
        &format!("/repos/octo/hello/issues/{number}/comments"),
    )
    .await
    .into_iter()
    .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
    .filter_map(|b| b["body"].as_str().map(str::to_owned))
    .collect()
}

/// Waits for the answer on PR `number` naming `short` and returns it with
/// every LLM prompt sent so far.
async fn answer_naming(fleet: &Fleet, number: u64, short: &str) -> (String, String) {
    let answer = eventually(FLOW_WITHIN, || async {
        comments(&fleet.fakes, number)
            .await
            .into_iter()
            .find(|c| c.contains("def parse_duration"))
    })
    .await
    .unwrap_or_else(|| panic!("no answer on #{number}\n{}", fleet.logs(60)));
    assert!(
        answer.contains(&format!(
            "Read at commit {short} (head of pull request #{number})"
        )),
        "{answer}"
    );
    let prompts: String = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    (answer, prompts)
}

#[tokio::test]
async fn a_comment_on_a_pull_request_is_answered_from_its_head_commit() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let root = fleet.dir.path().join("git");
    let (head, _) = repository_with_pull_requests(&root);
    fleet.fakes.serve_git(&root).await;
    // An issue_comment carries no base: the context worker asks for it.
    Mock::given(method("GET"))
        .and(path("/repos/octo/hello/pulls/5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "number": 5, "base": {"ref": "main", "sha": "0000000000000000000000000000000000000000"},
            "head": {"ref": "retry", "sha": head}
        })))
        .mount(&fleet.fakes.github)
        .await;
    let clone_url = format!("{}/octo/hello.git", fleet.fakes.github.uri());
    let payload = json!({
        "action": "created",
        "issue": {"number": 5, "title": "Retry with backoff", "state": "open", "body": "",
                  "pull_request": {"url": format!("{}/repos/octo/hello/pulls/5", fleet.fakes.github.uri())},
                  "user": {"login": "octocat", "type": "User"}, "labels": []},
        "comment": {"id": 5501, "body": "/contexten context how long does retry_backoff_seconds wait after the third attempt?",
                    "user": {"login": "octocat", "type": "User"}, "author_association": "OWNER",
                    "created_at": contexten_envelope::time::rfc3339(unix_now())},
        "repository": repository(&clone_url),
        "sender": {"login": "octocat", "type": "User"},
        "installation": {"id": 1}
    });
    let response = fleet
        .github_webhook("issue_comment", "d-pr-5", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let (_, prompts) = answer_naming(&fleet, 5, &head[..7]).await;
    assert!(
        prompts.contains("def retry_backoff_seconds(attempt: int)"),
        "the head's function is in the prompt"
    );
    assert!(
        prompts.contains("+def retry_backoff_seconds"),
        "and so is the PR's diff"
    );
    assert_eq!(
        Fakes::requests(&fleet.fakes.github, "GET", "/repos/octo/hello/pulls/5")
            .await
            .len(),
        1,
        "the base was asked for once"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_labelled_pull_request_from_a_fork_is_read_from_the_base_repository() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let root = fleet.dir.path().join("git");
    let (_, head) = repository_with_pull_requests(&root);
    fleet.fakes.serve_git(&root).await;
    let uri = fleet.fakes.github.uri();
    let clone_url = format!("{uri}/octo/hello.git");
    let payload = json!({
        "action": "labeled",
        "number": 6,
        "label": {"name": "contexten:context"},
        "pull_request": {
            "number": 6, "title": "Add jitter_window_millis",
            "body": "What spread does jitter_window_millis give a 1000 ms delay?",
            "updated_at": contexten_envelope::time::rfc3339(unix_now()),
            "labels": [{"name": "contexten:context"}],
            // The fork is not served: only the base repository may be fetched.
            "head": {"ref": "jitter", "sha": head,
                     "repo": {"full_name": "forker/hello", "clone_url": format!("{uri}/forker/hello.git")}},
            "base": {"ref": "main", "sha": "0000000000000000000000000000000000000000",
                     "repo": {"full_name": "octo/hello", "clone_url": clone_url}}
        },
        "repository": repository(&clone_url),
        "sender": {"login": "octocat", "type": "User"},
        "installation": {"id": 1}
    });
    let response = fleet
        .github_webhook("pull_request", "d-pr-6", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let (_, prompts) = answer_naming(&fleet, 6, &head[..7]).await;
    assert!(
        prompts.contains("def jitter_window_millis(base: int)"),
        "the fork's commit is read from refs/pull/6/head"
    );
    assert!(
        Fakes::requests(&fleet.fakes.github, "GET", "/forker/*")
            .await
            .is_empty(),
        "the fork was never fetched"
    );
    assert!(
        Fakes::requests(&fleet.fakes.github, "GET", "/repos/octo/hello/pulls/6")
            .await
            .is_empty(),
        "a pull_request event carries its base"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_review_comment_on_a_line_gets_a_diff_checked_against_the_pr_head() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let root = fleet.dir.path().join("git");
    let (head, _) = repository_with_pull_requests(&root);
    fleet.fakes.serve_git(&root).await;
    // app/retry.py exists only in the PR's head: the diff applies there only.
    *fleet.fakes.llm_answer.lock().unwrap() = "```diff\n--- a/app/retry.py\n+++ b/app/retry.py\n@@ -1,3 +1,3 @@\n def retry_backoff_seconds(attempt: int) -> int:\n     \"\"\"Seconds to wait before retry number `attempt`.\"\"\"\n-    return min(300, 2 ** attempt)\n+    return min(600, 2 ** attempt)\n```\n".into();
    let uri = fleet.fakes.github.uri();
    let clone_url = format!("{uri}/octo/hello.git");
    let payload = json!({
        "action": "created",
        "comment": {"id": 7701, "body": "/contexten context raise this cap to ten minutes",
                    "path": "app/retry.py", "line": 3, "side": "RIGHT",
                    "user": {"login": "octocat", "type": "User"}, "author_association": "MEMBER",
                    "created_at": contexten_envelope::time::rfc3339(unix_now())},
        "pull_request": {"number": 5, "title": "Retry with backoff", "body": "",
                         "head": {"ref": "retry", "sha": head},
                         "base": {"ref": "main", "sha": "0000000000000000000000000000000000000000"}},
        "repository": repository(&clone_url),
        "sender": {"login": "octocat", "type": "User"},
        "installation": {"id": 1}
    });
    let response = fleet
        .github_webhook("pull_request_review_comment", "d-pr-5-review", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let answer = eventually(FLOW_WITHIN, || async {
        comments(&fleet.fakes, 5)
            .await
            .into_iter()
            .find(|c| c.contains("min(600"))
    })
    .await
    .unwrap_or_else(|| panic!("no answer on #5\n{}", fleet.logs(60)));
    assert!(
        answer.contains(&format!(
            "Read at commit {} (head of pull request #5)",
            &head[..7]
        )),
        "{answer}"
    );
    assert!(answer.contains("`app/retry.py`"), "{answer}");
    let prompts: String = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        prompts.contains("return min(300, 2 ** attempt)"),
        "the commented file is the target"
    );
    fleet.stop().await;
}
