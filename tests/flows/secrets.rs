//! Planted secrets never leave the fleet: not in a prompt, an answer, a cache
//! entry (the whole Redis keyspace of the test and the workers' disk caches,
//! decompressed) or a log line. The values are assembled from pieces so this
//! file holds none in clear.

use contexten_fleet_tests::fakes::Fakes;
use contexten_fleet_tests::harness::*;
use serde_json::{Value, json};
use std::path::Path;

fn planted() -> Vec<(&'static str, String)> {
    vec![
        ("yaml password", ["hunter2", "hunter2"].concat()),
        ("env assignment", ["s3cret", "value"].concat()),
        ("dotenv file", ["dotenv-", "only-", "Zq81Lm"].concat()),
        (
            "aws secret",
            ["wJalrXUtnFEMI", "/K7MDENG/bPxRfiCY", "Zq9rT2uV8xW1"].concat(),
        ),
        ("aws key id", ["AK", "IA", "QWERTYUIOPASDFGH"].concat()),
    ]
}

/// A small Python project with secrets where people leave them.
fn leaky_repository(dir: &Path) -> String {
    let s: std::collections::HashMap<_, _> = planted().into_iter().collect();
    let root = dir.join("leaky");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("config")).unwrap();
    let files = [
        (".env", format!("API_SECRET={}\n", s["dotenv file"])),
        (
            "config/db.yml",
            format!(
                "production:\n  host: db.internal\n  user: app\n  password: {}\n",
                s["yaml password"]
            ),
        ),
        (
            "app/settings.py",
            format!(
                "\"\"\"Settings.\"\"\"\nimport os\n\nDB_PASSWORD={}\nDB_HOST = os.environ.get('DB_HOST', 'localhost')\n\n\ndef database_url() -> str:\n    return f'postgres://app@{{DB_HOST}}/app'\n",
                s["env assignment"]
            ),
        ),
        (
            "app/storage.py",
            format!(
                "\"\"\"Object storage.\"\"\"\naws_access_key_id = \"{}\"\naws_secret_access_key = \"{}\"\n\n\ndef bucket_url(name: str) -> str:\n    return f's3://{{name}}'\n",
                s["aws key id"], s["aws secret"]
            ),
        ),
    ];
    for (path, content) in files {
        std::fs::write(root.join(path), content).unwrap();
    }
    let git = |args: &[&str]| {
        contexten_testkit::git(&root, args);
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "leaky"]);
    format!("file://{}", root.display())
}

/// Bytes as stored, or their zstd-decompressed form.
fn readable(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(bytes).unwrap_or_else(|_| bytes.to_vec())
    } else {
        bytes.to_vec()
    }
}

fn assert_clean(place: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (what, value) in planted() {
        assert!(!text.contains(&value), "the {what} leaked into {place}");
    }
}

/// Every file under `dir`, except the fetched clones (they are the repository
/// itself, as fetched, not something the fleet derived from it).
fn cache_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let name = entry.file_name();
            if name != "git" && name != "repos" {
                cache_files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn planted_secrets_appear_in_no_prompt_answer_cache_entry_or_log() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = leaky_repository(fleet.dir.path());
    let payload = json!({
        "action": "created",
        "issue": {"number": 31, "title": "Database settings", "state": "open",
                  "body": "The connection string should come from config/db.yml and .env.",
                  "user": {"login": "octocat", "type": "User"}, "labels": [], "author_association": "OWNER"},
        "comment": {"id": 9931, "body": "/contexten add a function load_db_config to app/settings.py next to database_url, with the values from the .env and config files",
                    "user": {"login": "octocat", "type": "User"}, "author_association": "OWNER"},
        "repository": {"id": 1, "name": "hello", "full_name": "octo/hello", "private": true,
                       "owner": {"login": "octo", "type": "Organization"},
                       "clone_url": repo, "default_branch": "main"},
        "sender": {"login": "octocat", "type": "User"}, "installation": {"id": 1}
    });
    let response = fleet
        .github_webhook("issue_comment", "d-secrets-1", &payload)
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let answer = eventually(FLOW_WITHIN, || async {
        Fakes::requests(
            &fleet.fakes.github,
            "POST",
            "/repos/octo/hello/issues/31/comments",
        )
        .await
        .into_iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
        .find(|c| !c["body"].as_str().unwrap_or("").contains("On it"))
    })
    .await
    .unwrap_or_else(|| panic!("no answer\n{}", fleet.logs(60)));

    // Prompts: the LLM saw the request's files, redacted.
    let prompts = Fakes::requests(&fleet.fakes.llm, "POST", "/v1/chat/completions").await;
    assert!(
        !prompts.is_empty(),
        "the generator asked the LLM\n{}",
        fleet.logs(40)
    );
    let saw_settings = prompts
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("database_url"));
    assert!(
        saw_settings,
        "the prompt carries app/settings.py: {}",
        String::from_utf8_lossy(&prompts[0].body)
    );
    // The named file with the assignment reached the prompt, its value redacted.
    let redacted_in_prompt = prompts.iter().any(|r| {
        let body = String::from_utf8_lossy(&r.body);
        body.contains("DB_PASSWORD") && body.contains("REDACTED")
    });
    assert!(
        redacted_in_prompt,
        "the prompt shows DB_PASSWORD with its value redacted"
    );
    for request in &prompts {
        assert_clean("an LLM prompt", &request.body);
    }
    // Answers and everything else posted anywhere.
    assert_clean("the answer", answer.to_string().as_bytes());
    for server in [
        &fleet.fakes.github,
        &fleet.fakes.slack,
        &fleet.fakes.linear,
        &fleet.fakes.codegen,
        &fleet.fakes.callback,
    ] {
        for request in server.received_requests().await.unwrap_or_default() {
            assert_clean("a request to a provider", &request.body);
        }
    }
    // Every Redis value under the fleet's prefix.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fleet.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the fleet wrote to Redis");
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            _ => Vec::new(),
        };
        for value in values {
            assert_clean(&format!("Redis key {key}"), &readable(&value));
        }
    }
    // The workers' disk caches.
    let mut files = Vec::new();
    cache_files(&fleet.dir.path().join("context-cache"), &mut files);
    cache_files(&fleet.dir.path().join("generator-cache"), &mut files);
    assert!(
        !files.is_empty(),
        "the workers cached analyses and answers on disk"
    );
    for file in &files {
        assert_clean(
            &file.display().to_string(),
            &readable(&std::fs::read(file).unwrap()),
        );
    }
    // Every log line of every service.
    assert_clean("the logs", fleet.logs(usize::MAX).as_bytes());
    fleet.stop().await;
}
