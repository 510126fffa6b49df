//! What leaves the fleet: files codemap's filter refuses are never read, so
//! their contents never reach the model, whatever the request names.

use crate::helpers::*;
use contexten_broker::{Handler, Outcome};
use contexten_envelope::{ContextItem, RepositoryRef, Stage, TaskEnvelope};
use wiremock::Mock;
use wiremock::matchers::method;

/// Values no redaction rule recognises: only the path filter keeps them out.
const ENV_VALUE: &str = "mellon-7f3a";
const KEY_VALUE: &str = "ring-of-barahir";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("GREETING_WORD={ENV_VALUE}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("id_rsa"),
        format!("GREETING_WORD {KEY_VALUE}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app/greet.py"),
        "import os\n\n\ndef greet():\n    return os.environ[\"GREETING_WORD\"]\n",
    )
    .unwrap();
    dir
}

fn task(repo: &tempfile::TempDir, target: &str) -> TaskEnvelope {
    let mut env = envelope(
        "add farewell() next to greet(); read GREETING_WORD like .env and id_rsa do",
        "python",
        "GREETING_WORD",
    );
    env.request.repository = Some(RepositoryRef {
        url: format!("file://{}", repo.path().display()),
        reference: None,
    });
    env.request.hints.paths = vec![".env".into(), "id_rsa".into()];
    env.request.hints.target_file = Some(target.into());
    if let Some(context) = env.context.as_mut() {
        for path in ["id_rsa", ".env", "app/greet.py"] {
            context.items.push(ContextItem {
                path: path.into(),
                score: 0.5,
                symbols: Vec::new(),
                reasons: Vec::new(),
            });
        }
    }
    env
}

async fn prompts(fx: &Fixture) -> String {
    bodies(&fx.server)
        .await
        .iter()
        .map(|b| b["messages"].to_string())
        .collect()
}

#[tokio::test]
async fn a_request_naming_env_and_key_files_sends_none_of_their_contents() {
    let fx = Fixture::start().await;
    let repo = repo();
    let code = "def farewell():\n    return \"bye\"\n";
    Mock::given(method("POST"))
        .respond_with(completion(&format!("```python\n{code}```")))
        .expect(2)
        .mount(&fx.server)
        .await;
    for target in [".env", "id_rsa"] {
        let out = forwarded(
            fx.handler(&[]).handle(task(&repo, target)).await,
            Stage::Dispatch,
        );
        assert_eq!(out.result.unwrap().text.as_deref(), Some(code));
    }
    let sent = prompts(&fx).await;
    assert!(
        !sent.contains(ENV_VALUE) && !sent.contains(KEY_VALUE),
        "{sent}"
    );
    // The allowed file was read: its usage is in the prompt.
    assert!(sent.contains("app/greet.py:5: return os.environ"), "{sent}");
}

#[tokio::test]
async fn a_diff_to_a_sensitive_file_is_refused_without_reading_it() {
    let fx = Fixture::start().await;
    let repo = repo();
    let diff = format!(
        "```diff\n--- a/.env\n+++ b/.env\n@@ -1,1 +1,2 @@\n GREETING_WORD={ENV_VALUE}\n+FAREWELL=bye\n```"
    );
    Mock::given(method("POST"))
        .respond_with(completion(&diff))
        .expect(2)
        .mount(&fx.server)
        .await;
    let outcome = fx.handler(&[]).handle(task(&repo, "app/greet.py")).await;
    let Outcome::DeadLetter(reason) = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(reason.code, "generation_invalid");
    assert!(reason.detail.contains("sensitive file"), "{reason:?}");
    // The repair round quoted the refusal, never the file.
    let bodies = bodies(&fx.server).await;
    let repair = bodies[1]["messages"][3]["content"].as_str().unwrap();
    assert!(repair.contains("`.env` is a sensitive file"), "{repair}");
}

#[tokio::test]
async fn without_a_provider_the_answer_names_no_refused_contents_either() {
    let fx = Fixture::start().await;
    let repo = repo();
    let handler = fx.handler(&[("LLM_API_KEY", ""), ("GENERATOR_CONTEXT_ONLY_SOURCE", "1")]);
    let out = match handler.handle(task(&repo, ".env")).await {
        Outcome::Forward(mut next) if next[0].stage == Stage::Dispatch => *next.remove(0).envelope,
        other => panic!("{other:?}"),
    };
    let text = out.result.unwrap().text.unwrap();
    assert!(
        !text.contains(ENV_VALUE) && !text.contains(KEY_VALUE),
        "{text}"
    );
    assert!(text.contains("return os.environ"), "{text}");
}
