//! Changes to existing files: the answer is a unified diff that must apply to the
//! repository snapshot (a local repository, allowed by the test settings).

use crate::helpers::*;
use contexten_broker::Handler;
use contexten_envelope::{RepositoryRef, ResultKind, Stage};
use wiremock::Mock;
use wiremock::matchers::method;

const ORIGINAL: &str = "import os\n\n\ndef parse_time(text):\n    return int(text)\n\n\ndef home():\n    return os.environ[\"HOME\"]\n";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/timeutil.py"), ORIGINAL).unwrap();
    dir
}

fn diff_task(repo: &tempfile::TempDir) -> contexten_envelope::TaskEnvelope {
    let mut env = envelope(
        "make parse_time accept surrounding spaces",
        "python",
        "parse_time",
    );
    env.request.repository = Some(RepositoryRef {
        url: format!("file://{}", repo.path().display()),
        reference: None,
    });
    env.request.hints.target_file = Some("app/timeutil.py".into());
    env
}

#[tokio::test]
async fn a_diff_answer_applies_to_the_repository_and_is_returned_with_exact_headers() {
    let fx = Fixture::start().await;
    let repo = repo();
    // Wrong line numbers and counts, as models write them; the content matches.
    let answer = "Here is the change:\n\n```diff\n--- a/app/timeutil.py\n+++ b/app/timeutil.py\n@@ -10,5 +10,5 @@\n def parse_time(text):\n-    return int(text)\n+    return int(text.strip())\n```\n";
    Mock::given(method("POST"))
        .respond_with(completion(answer))
        .expect(1)
        .mount(&fx.server)
        .await;
    let out = forwarded(
        fx.handler(&[]).handle(diff_task(&repo)).await,
        Stage::Dispatch,
    );
    let result = out.result.unwrap();
    assert_eq!(result.kind, ResultKind::Diff);
    assert_eq!(
        result.text.as_deref(),
        Some(
            "--- a/app/timeutil.py\n+++ b/app/timeutil.py\n@@ -4,2 +4,2 @@\n def parse_time(text):\n-    return int(text)\n+    return int(text.strip())\n"
        )
    );
    assert!(
        result.summary.contains("`app/timeutil.py`"),
        "{}",
        result.summary
    );
    // The prompt carried the file and asked for a diff.
    let user = bodies(&fx.server).await[0]["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        user.contains("unified diff") && user.contains("return os.environ"),
        "{user}"
    );
    // The repository is untouched: the diff is an answer, not an action.
    assert_eq!(
        std::fs::read_to_string(repo.path().join("app/timeutil.py")).unwrap(),
        ORIGINAL
    );
}

#[tokio::test]
async fn a_diff_that_does_not_apply_is_repaired_with_the_mismatch() {
    let fx = Fixture::start().await;
    let repo = repo();
    let wrong = "```diff\n--- a/app/timeutil.py\n+++ b/app/timeutil.py\n@@ -1,2 +1,2 @@\n def parse_time(value):\n-    return int(value)\n+    return int(value.strip())\n```";
    let right = "```diff\n--- a/app/timeutil.py\n+++ b/app/timeutil.py\n@@ -4,2 +4,2 @@\n def parse_time(text):\n-    return int(text)\n+    return int(text.strip())\n```";
    Mock::given(method("POST"))
        .respond_with(completion(wrong))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fx.server)
        .await;
    Mock::given(method("POST"))
        .respond_with(completion(right))
        .expect(1)
        .mount(&fx.server)
        .await;
    let out = forwarded(
        fx.handler(&[]).handle(diff_task(&repo)).await,
        Stage::Dispatch,
    );
    assert_eq!(out.result.unwrap().kind, ResultKind::Diff);
    let repair = bodies(&fx.server).await[1]["messages"][3]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        repair.contains("def parse_time(value):") && repair.contains("does not apply"),
        "{repair}"
    );
}

#[tokio::test]
async fn a_diff_that_breaks_the_syntax_falls_back_to_the_agent() {
    let fx = Fixture::start().await;
    let repo = repo();
    let breaking = "```diff\n--- a/app/timeutil.py\n+++ b/app/timeutil.py\n@@ -4,2 +4,2 @@\n def parse_time(text):\n-    return int(text)\n+    return int(text.strip(\n```";
    Mock::given(method("POST"))
        .respond_with(completion(breaking))
        .expect(2)
        .mount(&fx.server)
        .await;
    let mut task = diff_task(&repo);
    task.strategy = contexten_envelope::Strategy::Agent;
    let out = forwarded(fx.handler(&[]).handle(task).await, Stage::Agent);
    let reason = out.fallback_reason.unwrap();
    assert!(reason.starts_with("generation_invalid: "), "{reason}");
    assert!(
        !reason.contains("syntax error") && !reason.contains(repo.path().to_str().unwrap()),
        "no validation detail or worker path: {reason}"
    );
}
