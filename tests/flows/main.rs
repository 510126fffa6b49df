//! Whole-fleet flows: the five real binaries as processes, driven only from the
//! outside (signed webhooks and the API in, posted replies out).

mod console;
mod extension;
mod gitlab;
mod metrics;
mod pull_requests;
mod secrets;
mod slack_commands;
mod tls;
mod tracing;

use contexten_fleet_tests::fakes::Fakes;
use contexten_fleet_tests::harness::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// A small real-shaped Python repository the context worker can read.
fn sample_repo(dir: &Path) -> String {
    let root = dir.join("sample-repo");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(
        root.join("app/timeutil.py"),
        "\"\"\"Time helpers.\"\"\"\n\nUNITS = {'h': 3600, 'm': 60, 's': 1}\n\n\ndef format_duration(seconds: int) -> str:\n    \"\"\"Render seconds as '1h30m'.\"\"\"\n    hours, rest = divmod(seconds, 3600)\n    return f'{hours}h{rest // 60}m'\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app/cli.py"),
        "from app.timeutil import format_duration\n\n\ndef main(argv):\n    print(format_duration(int(argv[1])))\n",
    )
    .unwrap();
    std::fs::write(
        root.join("README.md"),
        "# sample\nA command line tool for durations.\n",
    )
    .unwrap();
    format!("file://{}", root.display())
}

fn github_comment(repo_url: &str, number: u64, comment_id: u64, body: &str) -> Value {
    json!({
        "action": "created",
        "issue": {"number": number, "title": "Parse durations", "state": "open",
                  "body": "We can format durations but not parse them.",
                  "user": {"login": "octocat", "type": "User"}, "labels": [], "author_association": "OWNER"},
        "comment": {"id": comment_id, "body": body, "user": {"login": "octocat", "type": "User"},
                    "author_association": "OWNER", "created_at": contexten_envelope::time::rfc3339(unix_now())},
        "repository": {"id": 1, "name": "hello", "full_name": "octo/hello", "private": false,
                       "owner": {"login": "octo", "type": "Organization"},
                       "clone_url": repo_url, "default_branch": "main"},
        "sender": {"login": "octocat", "type": "User"},
        "installation": {"id": 1}
    })
}

async fn github_comments(fakes: &Fakes) -> Vec<Value> {
    Fakes::requests(&fakes.github, "POST", "/repos/octo/hello/issues/*")
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/comments"))
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn a_github_comment_asking_for_a_function_gets_one_comment_with_validated_code() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = sample_repo(fleet.dir.path());
    let payload = github_comment(
        &repo,
        7,
        4401,
        "/contexten generate add a parse_duration function to app/timeutil.py next to format_duration",
    );
    let response = fleet
        .github_webhook("issue_comment", "d-gh-1", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let comments = eventually(FLOW_WITHIN, || async {
        let found = github_comments(&fleet.fakes).await;
        found
            .iter()
            .any(|c| {
                c["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("def parse_duration")
            })
            .then_some(found)
    })
    .await
    .unwrap_or_else(|| panic!("no answer comment\n{}", fleet.logs(40)));
    let answers: Vec<&Value> = comments
        .iter()
        .filter(|c| {
            c["body"]
                .as_str()
                .unwrap_or_default()
                .contains("def parse_duration")
        })
        .collect();
    assert_eq!(answers.len(), 1, "exactly one answer: {comments:?}");
    assert!(
        answers[0]["body"].as_str().unwrap().contains("```python"),
        "a fenced python block"
    );

    // The model was asked with the repository's real context.
    let prompts = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions").await;
    let prompt = String::from_utf8_lossy(&prompts[0].body).into_owned();
    assert!(
        prompt.contains("format_duration"),
        "the prompt carries the repository's code"
    );
    // And nothing more is posted after a quiet period (no duplicates).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        github_comments(&fleet.fakes)
            .await
            .iter()
            .filter(|c| c["body"]
                .as_str()
                .unwrap_or_default()
                .contains("def parse_duration"))
            .count(),
        1
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_slack_mention_is_answered_in_its_thread_and_a_linear_label_in_linear() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let mention = json!({
        "token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": "Ev-fleet-1", "event_time": unix_now(),
        "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U0HUMAN", "text": "<@U0BOT> write a python function slugify(title) that lowercases and joins words with dashes",
                  "ts": "1764417000.000100", "channel": "C0FLEET", "event_ts": "1764417000.000100", "team": "T0001"}
    });
    let response = fleet.slack_event(&mention).await;
    assert!(response.status().is_success(), "{}", response.status());

    let linear = json!({
        "action": "update", "type": "Issue",
        "actor": {"id": "u-grace", "type": "user", "name": "Grace Hopper"},
        "createdAt": "2026-11-29T12:00:00.000Z",
        "data": {"id": "iss-fleet-1", "identifier": "ENG-7", "title": "Write a slugify helper",
                 "description": "A python function slugify(title) for URLs.", "teamId": "team-1",
                 "labelIds": ["l-bot"], "labels": [{"id": "l-bot", "name": "contexten"}], "assigneeId": null},
        "updatedFrom": {"labelIds": []},
        "url": "https://linear.app/acme/issue/ENG-7", "organizationId": "org-1", "webhookId": "wh-1"
    });
    let response = fleet.linear_webhook("d-linear-1", linear).await;
    assert!(response.status().is_success(), "{}", response.status());

    let slack_answer = eventually(FLOW_WITHIN, || async {
        Fakes::requests(&fleet.fakes.slack, "POST", "/api/chat.postMessage")
            .await
            .into_iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
            .find(|b| b.to_string().contains("def parse_duration"))
    })
    .await
    .unwrap_or_else(|| panic!("no Slack answer\n{}", fleet.logs(40)));
    assert_eq!(slack_answer["channel"], "C0FLEET");
    assert_eq!(
        slack_answer["thread_ts"], "1764417000.000100",
        "answered in the mention's thread"
    );

    let linear_answer = eventually(FLOW_WITHIN, || async {
        Fakes::requests(&fleet.fakes.linear, "POST", "/graphql")
            .await
            .into_iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
            .find(|b| {
                b["query"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("commentCreate")
                    && b.to_string().contains("def parse_duration")
            })
    })
    .await
    .unwrap_or_else(|| panic!("no Linear answer\n{}", fleet.logs(40)));
    assert_eq!(
        linear_answer["variables"]["input"]["issueId"],
        "iss-fleet-1"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn an_agent_request_creates_one_run_posts_its_link_then_the_result() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = sample_repo(fleet.dir.path());
    let payload = github_comment(
        &repo,
        9,
        4409,
        "/contexten agent refactor the duration helpers and open a PR",
    );
    assert!(
        fleet
            .github_webhook("issue_comment", "d-gh-agent", &payload)
            .await
            .status()
            .is_success()
    );

    let comments = eventually(FLOW_WITHIN, || async {
        let found = github_comments(&fleet.fakes).await;
        found
            .iter()
            .any(|c| c["body"].as_str().unwrap_or_default().contains("/pull/"))
            .then_some(found)
    })
    .await
    .unwrap_or_else(|| panic!("no result comment\n{}", fleet.logs(40)));
    let bodies: Vec<&str> = comments.iter().filter_map(|c| c["body"].as_str()).collect();
    let link = bodies
        .iter()
        .position(|b| b.contains("codegen.com/agent/trace/") && !b.contains("/pull/"));
    let result = bodies
        .iter()
        .position(|b| b.contains("https://github.com/octo/hello/pull/"));
    assert!(
        link.is_some(),
        "a progress comment with the run's link: {bodies:?}"
    );
    assert!(
        link < result,
        "the link comes before the result: {bodies:?}"
    );
    let creates = Fakes::requests(
        &fleet.fakes.codegen,
        "POST",
        "/v1/organizations/7/agent/run",
    )
    .await;
    assert_eq!(creates.len(), 1, "one Codegen run");
    fleet.stop().await;
}

/// `/contexten generate` routes to plain generation: when the LLM fails, the
/// requester gets a failure answer (reason code + one sentence) and no Codegen
/// run starts, since an agent run can write to the repository.
#[tokio::test]
async fn when_the_llm_fails_a_generate_request_gets_a_failure_answer_and_no_agent_run() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    fleet
        .fakes
        .llm_failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let repo = sample_repo(fleet.dir.path());
    let payload = github_comment(
        &repo,
        11,
        4411,
        "/contexten generate add a parse_duration function to app/timeutil.py",
    );
    assert!(
        fleet
            .github_webhook("issue_comment", "d-gh-fallback", &payload)
            .await
            .status()
            .is_success()
    );
    let failure = eventually(FLOW_WITHIN, || async {
        github_comments(&fleet.fakes)
            .await
            .into_iter()
            .find_map(|c| {
                let body = c["body"].as_str().unwrap_or_default().to_owned();
                body.contains("Sorry, your request could not be completed")
                    .then_some(body)
            })
    })
    .await
    .unwrap_or_else(|| panic!("no failure answer after the LLM failed\n{}", fleet.logs(60)));
    assert!(
        failure.contains("`llm_unavailable`") || failure.contains("`llm_breaker_open`"),
        "the reason code: {failure}"
    );
    assert!(
        !failure.contains("overloaded") && !failure.contains("503"),
        "the provider's words stay in the logs: {failure}"
    );
    assert!(
        !Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
            .await
            .is_empty(),
        "the LLM was tried"
    );
    assert!(
        Fakes::requests(
            &fleet.fakes.codegen,
            "POST",
            "/v1/organizations/7/agent/run"
        )
        .await
        .is_empty(),
        "no Codegen run for a generate request"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn an_api_task_with_a_callback_gets_a_signed_callback_and_shows_every_stage() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = sample_repo(fleet.dir.path());
    let callback = format!("{}/hooks/contexten", fleet.fakes.callback.uri());
    let response = fleet
        .submit(
            &json!({"text": "write a new module app/parsing.py with a parse_duration function", "repository_url": repo,
                    "strategy": "context", "callback_url": callback}),
            Some("fleet-api-1"),
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let task_id = accepted["task_id"].as_str().expect("task id").to_owned();

    let delivery = eventually(FLOW_WITHIN, || async {
        Fakes::requests(&fleet.fakes.callback, "POST", "/hooks/contexten")
            .await
            .into_iter()
            .find(|r| String::from_utf8_lossy(&r.body).contains("def parse_duration"))
    })
    .await
    .unwrap_or_else(|| panic!("no final callback\n{}", fleet.logs(40)));
    let header = |name: &str| {
        delivery
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        callback_signature_valid(
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &delivery.body,
            &header("webhook-signature")
        ),
        "the callback verifies with the receiver's secret"
    );
    let body: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert!(
        body.to_string().contains(&task_id),
        "the callback names the task"
    );

    let status = eventually(FLOW_WITHIN, || async {
        let status = fleet.task(&task_id).await;
        let timings = status["timings"].as_object()?;
        ["ingest", "context", "generate", "dispatch"]
            .iter()
            .all(|s| timings.contains_key(*s))
            .then_some(status)
    })
    .await
    .unwrap_or(Value::Null);
    assert!(
        !status.is_null(),
        "status never showed every stage: {}",
        fleet.task(&task_id).await
    );
    for stage in ["ingest", "context", "generate", "dispatch"] {
        let timing = &status["timings"][stage];
        assert!(
            timing["started_at_ms"].as_u64().is_some(),
            "{stage}: {status}"
        );
    }
    fleet.stop().await;
}

/// A bare copy of the sample repository at `<root>/acme/secret.git`, served by
/// the fake GitHub's git server.
fn private_repository(dir: &Path) -> std::path::PathBuf {
    let work = Path::new(&sample_repo(dir)["file://".len()..]).to_path_buf();
    let git = |args: &[&str], cwd: &Path| {
        contexten_testkit::git(cwd, args);
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "-A"], &work);
    git(&["commit", "-qm", "sample"], &work);
    let root = dir.join("git-server");
    std::fs::create_dir_all(root.join("acme")).unwrap();
    let bare = root.join("acme/secret.git");
    git(
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
        dir,
    );
    root
}

#[tokio::test]
async fn a_slack_channel_gets_only_the_repositories_the_policy_gives_it() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    // The fake GitHub doubles as the on-premises git server (127.0.0.1:<port>).
    std::fs::write(
        &policy,
        "[[slack]]\nteam = \"T0001\"\nchannel = \"C0ALLOWED\"\nrepositories = [\"127.0.0.1/acme/secret\"]\n",
    )
    .unwrap();
    // Production-shaped: no local repositories (so no loopback by default); the
    // git server's address is reachable because the allow-list names it.
    let fleet = Fleet::start(FleetOptions {
        extra: vec![
            ("CONTEXTEN_POLICY_FILE".into(), policy.display().to_string()),
            ("CONTEXTEN_ALLOW_LOCAL_REPOS".into(), "0".into()),
            ("CONTEXTEN_OUTBOUND_ALLOW".into(), "127.0.0.1".into()),
        ],
        ..FleetOptions::default()
    })
    .await
    .expect("fleet starts");
    let root = private_repository(fleet.dir.path());
    fleet.fakes.serve_git(&root).await;
    let repo_url = format!("{}/acme/secret", fleet.fakes.github.uri());
    let mention = |channel: &str, ts: &str| {
        json!({
            "token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
            "event_id": format!("Ev-{channel}"), "event_time": unix_now(),
            "event": {"type": "app_mention", "user": "U0HUMAN",
                      "text": format!("<@U0BOT> explain how format_duration in app/timeutil.py works, in {repo_url}"),
                      "ts": ts, "channel": channel, "event_ts": ts, "team": "T0001"}
        })
    };
    let posted_in = |channel: &'static str| {
        let slack = &fleet.fakes.slack;
        async move {
            Fakes::requests(slack, "POST", "/api/chat.postMessage")
                .await
                .into_iter()
                .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
                .filter(|b| b["channel"] == channel)
                .collect::<Vec<_>>()
        }
    };
    let git_requests = || async {
        Fakes::requests(&fleet.fakes.github, "GET", "/acme/secret.git*")
            .await
            .len()
            + Fakes::requests(&fleet.fakes.github, "POST", "/acme/secret.git*")
                .await
                .len()
    };

    // A channel the policy does not name: a refusal in its thread, no fetch.
    let response = fleet
        .slack_event(&mention("C0OTHER", "1764417100.000100"))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let refusal = eventually(FLOW_WITHIN, || async {
        posted_in("C0OTHER")
            .await
            .into_iter()
            .find(|b| b.to_string().contains("repository_not_allowed"))
    })
    .await
    .unwrap_or_else(|| panic!("no refusal in the thread\n{}", fleet.logs(40)));
    assert_eq!(refusal["thread_ts"], "1764417100.000100");
    assert!(refusal.to_string().contains("C0OTHER"), "{refusal}");
    assert_eq!(
        git_requests().await,
        0,
        "the refused repository was fetched"
    );

    // The channel the policy names is answered from that repository.
    let response = fleet
        .slack_event(&mention("C0ALLOWED", "1764417200.000100"))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let answer = eventually(FLOW_WITHIN, || async {
        posted_in("C0ALLOWED")
            .await
            .into_iter()
            .find(|b| b["thread_ts"] == "1764417200.000100" && !b.to_string().contains("On it"))
    })
    .await
    .unwrap_or_else(|| panic!("no answer in the allowed channel\n{}", fleet.logs(60)));
    assert!(
        !answer.to_string().contains("repository_not_allowed"),
        "{answer}"
    );
    assert!(
        git_requests().await > 0,
        "the allowed repository was fetched"
    );
    let prompt_from_repository = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions")
        .await
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("def format_duration"));
    assert!(
        prompt_from_repository,
        "the LLM saw the repository's code\n{}",
        fleet.logs(40)
    );
    // Still nothing for the refused thread beyond its one answer.
    assert_eq!(posted_in("C0OTHER").await.len(), 1);
    fleet.stop().await;
}
