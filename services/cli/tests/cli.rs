//! The `contexten` binary as a script runs it: stdin not a terminal, one JSON
//! document per command with `--output json`, and an exit code per failure
//! (README "The operator CLI"), against the real RabbitMQ and Redis.

use contexten_broker::Store;
use contexten_config::{Env, ExposeSecret, RedisSettings};
use contexten_envelope::{
    HEADER_ATTEMPT, HEADER_DEAD_AT_MS, HEADER_DEAD_DETAIL, HEADER_DEAD_REASON, ReplyTarget,
    SourceKind, Stage, TaskEnvelope, now_ms,
};
use contexten_testkit::broker::{BrokerFixture, envelope_from, source};
use contexten_testkit::machine_redis_url;
use lapin::options::QueueDeleteOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use std::process::{Output, Stdio};

/// The testkit's broker fixture (topology and keys removed on drop) and the
/// URLs the binary is given.
struct Fleet {
    fx: BrokerFixture,
    amqp: String,
    redis: String,
}

/// What one run of the binary printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not one JSON document ({e}):\n{}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn fleet() -> Fleet {
    let fx = BrokerFixture::builder()
        .prefetch(1)
        .plain_publisher()
        .start()
        .await;
    Fleet {
        amqp: fx.settings.amqp_url.expose_secret().to_owned(),
        redis: machine_redis_url(),
        fx,
    }
}

fn envelope(text: &str) -> TaskEnvelope {
    envelope_from(source(SourceKind::OPERATOR, ReplyTarget::None), text)
}

impl Fleet {
    /// Puts a dead letter of `stage` in its dead queue, dead-lettered
    /// `age_secs` ago, as the runtime does.
    async fn dead(&self, stage: Stage, reason: &str, age_secs: u64) -> TaskEnvelope {
        let env = envelope(reason);
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_DEAD_REASON.into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            HEADER_DEAD_DETAIL.into(),
            AMQPValue::LongString("the fake provider said 503".into()),
        );
        headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(4));
        let at = now_ms() - age_secs * 1000;
        headers.insert(
            HEADER_DEAD_AT_MS.into(),
            AMQPValue::LongLongInt(i64::try_from(at).unwrap()),
        );
        contexten_testkit::broker::dead_letter(
            &self.fx.publisher,
            &self.fx.names,
            stage,
            &env,
            headers,
        )
        .await;
        env
    }

    async fn dead_depth(&self, stage: Stage) -> u32 {
        self.fx.depth(&self.fx.names.dead_queue(stage)).await
    }

    async fn work_depth(&self, stage: Stage) -> u32 {
        self.fx.depth(&self.fx.names.stage_queue(stage)).await
    }

    /// Runs `contexten args` against this fleet, stdin not a terminal.
    async fn cli(&self, args: &[&str]) -> Run {
        self.cli_with(args, &[]).await
    }

    async fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = cli(
            args,
            &[
                [("AMQP_URL", self.amqp.as_str())].as_slice(),
                &[("REDIS_URL", self.redis.as_str())],
                &[("CONTEXTEN_PREFIX", self.fx.prefix.as_str())],
                env,
            ]
            .concat(),
        )
        .await;
        run(output)
    }
}

async fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_contexten"))
        .args(args)
        .env_remove("AMQP_URL")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_RECORDS_URL")
        .env_remove("CONTEXTEN_PREFIX")
        .env_remove("CONTEXTEN_OUTPUT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

fn run(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    contexten_testkit::free_port()
}

#[tokio::test]
async fn every_command_prints_one_json_document() {
    let fleet = fleet().await;
    let old = fleet.dead(Stage::Generate, "retries_exhausted", 7200).await;
    fleet.dead(Stage::Generate, "invalid_request", 5).await;

    let queues = fleet.cli(&["--output", "json", "queues"]).await;
    assert_eq!(queues.code, 0, "{queues:?}");
    let dead_generate = queues.json()["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == fleet.fx.names.dead_queue(Stage::Generate).as_str())
        .cloned()
        .unwrap();
    assert_eq!(dead_generate["ready"], 2);
    assert_eq!(dead_generate["kind"], "dead");
    assert_eq!(dead_generate["stage"], "generate");
    assert_eq!(queues.json()["queues"].as_array().unwrap().len(), 8);

    let list = fleet
        .cli(&["dead", "list", "--output", "json", "--body"])
        .await;
    assert_eq!(list.code, 0, "{list:?}");
    let list = list.json();
    assert_eq!(list["count"], 2);
    let first = &list["dead_letters"][0];
    assert_eq!(first["stage"], "generate");
    assert_eq!(first["reason"], "retries_exhausted");
    assert_eq!(first["task_id"], old.task_id.to_string().as_str());
    assert_eq!(first["detail"], "the fake provider said 503");
    assert!(first["age_secs"].as_u64().unwrap() >= 7200, "{first}");
    assert_eq!(first["body"]["task_id"], old.task_id.to_string().as_str());

    // The environment names the format as well as the flag.
    let replay = fleet
        .cli_with(
            &["dead", "replay", "--dry-run"],
            &[("CONTEXTEN_OUTPUT", "json")],
        )
        .await;
    assert_eq!(replay.code, 0, "{replay:?}");
    let replay = replay.json();
    assert_eq!(replay["action"], "replay");
    assert_eq!(replay["dry_run"], true);
    assert_eq!(replay["matched"], 2);
    assert_eq!(replay["done"], 0);
    assert_eq!(replay["messages"].as_array().unwrap().len(), 2);
    assert_eq!(replay["failed"], Value::Array(vec![]));

    let purge = fleet
        .cli(&[
            "-o",
            "json",
            "dead",
            "purge",
            "--dry-run",
            "--older-than",
            "1h",
        ])
        .await;
    assert_eq!(purge.code, 0, "{purge:?}");
    assert_eq!(purge.json()["action"], "purge");
    assert_eq!(purge.json()["matched"], 1);
    assert_eq!(
        purge.json()["messages"][0]["task_id"],
        old.task_id.to_string().as_str()
    );

    // A task's status record.
    let store = Store::new(
        &RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", fleet.redis.as_str())])).unwrap(),
        fleet.fx.names.clone(),
    )
    .unwrap();
    store
        .record_completion(Stage::Context, &old, "queued:generate")
        .await
        .unwrap();
    let id = old.task_id.to_string();
    let task = fleet.cli(&["--output", "json", "task", &id]).await;
    assert_eq!(task.code, 0, "{task:?}");
    assert_eq!(task.json()["task_id"], id.as_str());
    assert_eq!(task.json()["status"]["state"], "queued:generate");
    let table = fleet.cli(&["task", &id]).await;
    assert!(table.stdout.contains("queued:generate"), "{table:?}");

    // The Redis check: exit 7 exactly when it warns.
    let redis = fleet.cli(&["--output", "json", "redis"]).await;
    let report = redis.json();
    let warned = report["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| !r["warnings"].as_array().unwrap().is_empty());
    assert_eq!(redis.code, if warned { 7 } else { 0 }, "{redis:?}");
    assert_eq!(report["shared"], true);
    assert_eq!(report["roles"][0]["role"], "records");

    let mut conn = store.connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(store.names().status_key(old.task_id))
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn github_redeliver_prints_json_from_a_fake_github() {
    // GitHub's deliveries list: one failed delivery, never delivered since.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0; 8192];
            let _ = socket.read(&mut buf).await;
            let body = format!(
                r#"[{{"id":41,"guid":"g-1","delivered_at":"{}","status":"502","status_code":502,"event":"issues"}}]"#,
                rfc3339_now()
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    let fleet = fleet().await;
    let out = fleet
        .cli_with(
            &[
                "--output",
                "json",
                "github-redeliver",
                "--repo",
                "acme/app",
                "--hook-id",
                "7",
                "--dry-run",
            ],
            &[("GITHUB_API_URL", &base), ("GITHUB_TOKEN", "t0ken")],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["listed"], 1);
    assert_eq!(doc["failed"][0]["guid"], "g-1");
    assert_eq!(doc["failed"][0]["delivery_id"], 41);
    assert_eq!(doc["failed"][0]["redelivered"], false);

    // Without a token or an App: a usage error, as a JSON document too.
    let out = fleet
        .cli(&[
            "--output",
            "json",
            "github-redeliver",
            "--repo",
            "acme/app",
            "--hook-id",
            "7",
        ])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "usage");
    assert_eq!(out.json()["error"]["exit_code"], 2);
}

/// Now as GitHub writes it: `2026-12-06T20:00:00Z`.
fn rfc3339_now() -> String {
    contexten_envelope::time::rfc3339(contexten_envelope::time::unix_now())
}

#[tokio::test]
async fn a_dry_run_touches_nothing_and_a_script_must_say_yes() {
    let fleet = fleet().await;
    let old = fleet
        .dead(Stage::Generate, "retries_exhausted", 3 * 86_400)
        .await;
    let poison = fleet.dead(Stage::Generate, "poison", 30).await;
    fleet.dead(Stage::Context, "retries_exhausted", 30).await;

    for args in [
        ["dead", "replay", "--dry-run"],
        ["dead", "purge", "--dry-run"],
    ] {
        let out = fleet.cli(&args).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("would have"), "{out:?}");
        assert!(out.stdout.contains("3 dead letter(s)"), "{out:?}");
        assert_eq!(fleet.dead_depth(Stage::Generate).await, 2);
        assert_eq!(fleet.dead_depth(Stage::Context).await, 1);
        assert_eq!(fleet.work_depth(Stage::Generate).await, 0);
    }

    // No terminal to ask on, no --yes: refused, with the count it would touch.
    for args in [["dead", "replay"], ["dead", "purge"]] {
        let out = fleet.cli(&args).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--yes"), "{out:?}");
        assert!(out.stderr.contains(" 3 dead letter(s)"), "{out:?}");
        assert_eq!(fleet.dead_depth(Stage::Generate).await, 2);
        assert_eq!(fleet.dead_depth(Stage::Context).await, 1);
        assert_eq!(fleet.work_depth(Stage::Generate).await, 0);
    }

    // With --yes, only what the filters name.
    let out = fleet
        .cli(&[
            "-o", "json", "dead", "replay", "--stage", "generate", "--reason", "poison", "--yes",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["done"], 1);
    assert_eq!(
        out.json()["messages"][0]["task_id"],
        poison.task_id.to_string().as_str()
    );
    assert_eq!(fleet.work_depth(Stage::Generate).await, 1);
    assert_eq!(fleet.dead_depth(Stage::Generate).await, 1);
    assert_eq!(fleet.dead_depth(Stage::Context).await, 1);

    let out = fleet
        .cli(&["-o", "json", "dead", "purge", "--older-than", "2d", "--yes"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["done"], 1);
    assert_eq!(
        out.json()["messages"][0]["task_id"],
        old.task_id.to_string().as_str()
    );
    assert_eq!(fleet.dead_depth(Stage::Generate).await, 0);
    assert_eq!(fleet.dead_depth(Stage::Context).await, 1);

    let out = fleet.cli(&["dead", "purge", "-y"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("purged 1 of 1"), "{out:?}");
    assert_eq!(fleet.dead_depth(Stage::Context).await, 0);
}

#[tokio::test]
async fn each_failure_has_its_exit_code() {
    let fleet = fleet().await;
    let context = fleet.dead(Stage::Context, "retries_exhausted", 30).await;
    let generate = fleet.dead(Stage::Generate, "retries_exhausted", 30).await;

    // 2: usage, from clap and from the CLI's own checks.
    for args in [
        vec!["dead", "replay", "--older-than", "5x"],
        vec!["dead", "list", "--stage", "nowhere"],
        vec!["no-such-command"],
        vec!["task", "not-a-task-id"],
    ] {
        let out = fleet.cli(&args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
    }
    let out = fleet
        .cli_with(&["queues"], &[("AMQP_URL", "http://127.0.0.1:5672")])
        .await;
    assert_eq!(out.code, 2, "{out:?}");

    // 3: not found: a task, a dead letter, the queues of another prefix.
    let unknown = envelope("unknown").task_id.to_string();
    let out = fleet.cli(&["-o", "json", "task", &unknown]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "not_found");
    let out = fleet
        .cli(&["dead", "replay", "--task", &unknown, "--yes"])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    let out = fleet
        .cli_with(
            &["queues"],
            &[("CONTEXTEN_PREFIX", "test-nothing-declared")],
        )
        .await;
    assert_eq!(out.code, 3, "{out:?}");

    // 4: the broker unreachable; the URL's password never shown.
    let url = format!("amqp://guest:s3cret@127.0.0.1:{}/%2f", closed_port());
    for args in [vec!["queues"], vec!["dead", "list"]] {
        let out = fleet
            .cli_with(
                &[["-o", "json"].as_slice(), &args].concat(),
                &[("AMQP_URL", &url)],
            )
            .await;
        assert_eq!(out.code, 4, "{out:?}");
        assert_eq!(out.json()["error"]["kind"], "broker_unreachable");
        assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    }
    let out = fleet.cli(&["--amqp-url", &url, "queues"]).await;
    assert_eq!(out.code, 4, "the flag wins over the environment: {out:?}");

    // 5: a Redis unreachable.
    let url = format!("redis://:s3cret@127.0.0.1:{}", closed_port());
    for args in [
        vec!["task", context.task_id.to_string().leak()],
        vec!["redis"],
    ] {
        let out = fleet.cli_with(&args, &[("REDIS_URL", &url)]).await;
        assert_eq!(out.code, 5, "{out:?}");
        assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    }
    let out = fleet
        .cli(&["--redis-records-url", &url, "task", &unknown])
        .await;
    assert_eq!(out.code, 5, "{out:?}");

    // 6: a partial replay: the generate work queue is gone, so its letter has
    // nowhere to go (unroutable) while the context letter moves.
    let channel = fleet.fx.connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            fleet.fx.names.stage_queue(Stage::Generate).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let out = fleet.cli(&["-o", "json", "dead", "replay", "--yes"]).await;
    assert_eq!(out.code, 6, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["matched"], 2);
    assert_eq!(doc["done"], 1);
    assert_eq!(
        doc["messages"][0]["task_id"],
        context.task_id.to_string().as_str()
    );
    assert_eq!(
        doc["failed"][0]["task_id"],
        generate.task_id.to_string().as_str()
    );
    assert!(
        doc["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no queue is bound"),
        "{doc}"
    );
    assert_eq!(fleet.work_depth(Stage::Context).await, 1);
    assert_eq!(fleet.dead_depth(Stage::Generate).await, 1, "left in place");
}

#[tokio::test]
async fn on_a_terminal_the_operator_is_asked_with_the_count() {
    // `script` (util-linux) gives the command a pseudo-terminal as stdin.
    let fleet = fleet().await;
    fleet.dead(Stage::Generate, "retries_exhausted", 30).await;
    fleet.dead(Stage::Generate, "retries_exhausted", 30).await;
    let on_terminal = |answer: &'static str| {
        let command = format!(
            "{} dead replay --stage generate",
            env!("CARGO_BIN_EXE_contexten")
        );
        let (amqp, prefix) = (fleet.amqp.clone(), fleet.fx.prefix.to_string());
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new("script")
                .args(["-qec", &command, "/dev/null"])
                .env("AMQP_URL", amqp)
                .env("CONTEXTEN_PREFIX", prefix)
                .env_remove("CONTEXTEN_OUTPUT")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("script (util-linux) is installed");
            let mut stdin = child.stdin.take().unwrap();
            // Answer once the prompt is up: `script` may end the session
            // as soon as its own stdin ends.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            stdin.write_all(answer.as_bytes()).await.unwrap();
            drop(stdin);
            run(child.wait_with_output().await.unwrap())
        }
    };
    let out = on_terminal("n\n").await;
    assert_eq!(out.code, 8, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "Replay 2 dead letter(s) from {} (2) to their work queues? [y/N]",
            fleet.fx.names.dead_queue(Stage::Generate)
        )),
        "{out:?}"
    );
    assert_eq!(fleet.dead_depth(Stage::Generate).await, 2);
    assert_eq!(fleet.work_depth(Stage::Generate).await, 0);

    let out = on_terminal("y\n").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("replayed 2 of 2"), "{out:?}");
    assert_eq!(fleet.dead_depth(Stage::Generate).await, 0);
    assert_eq!(fleet.work_depth(Stage::Generate).await, 2);
}
