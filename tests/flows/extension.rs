//! An envelope from a source no worker knows, to a reply channel no
//! dispatcher has (docs/design.md §3, envelope versioning): every stage
//! carries it through unchanged, the dispatcher dead-letters it as
//! `unknown_reply_channel`, and nothing crashes.

use contexten_broker::{PublishedMessage, Publisher};
use contexten_envelope::{HEADER_ATTEMPT, Names, Stage, TaskId, now_ms};
use contexten_fleet_tests::harness::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::path::Path;

/// A one-commit repository at `dir`, as a `file://` URL (the fleet runs with
/// `CONTEXTEN_ALLOW_LOCAL_REPOS=1`).
fn local_repository(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/slug.py"),
        "def title_words(title: str) -> list[str]:\n    return title.split()\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-q", "-m", "first"],
    ] {
        contexten_testkit::git(dir, args);
    }
    format!("file://{}", dir.display())
}

/// A version-1 envelope from `mastodon`, answered on `mastodon`, with
/// fields no build knows at the top, in the source and in the target.
fn mastodon_envelope(strategy: &str, repository: Option<&str>, reply: Option<&str>) -> Value {
    let task_id = TaskId::new().to_string();
    let mut envelope = json!({
        "v": 1,
        "task_id": task_id,
        "correlation_id": format!("mastodon-{task_id}"),
        "created_at_ms": now_ms(),
        "source": {
            "kind": "mastodon",
            "delivery_id": format!("toot-{task_id}"),
            "requested_by": "grace@example.social",
            "reply_to": {"kind": "mastodon", "status_id": "1", "instance": "example.social"},
            "mastodon_visibility": "direct"
        },
        "request": {
            "text": "write a python function slugify(title) that lowercases and joins words with dashes"
        },
        "strategy": strategy,
        "attempt": 0,
        "hop": 0,
        "added_by_v1_1": {"x": [1, 2]}
    });
    if let Some(url) = repository {
        envelope["request"]["repository"] = json!({"url": url, "ref": "main"});
    }
    if let Some(reply) = reply {
        envelope["reply"] = json!(reply);
    }
    envelope
}

/// Publishes `envelope` as is (not through `TaskEnvelope`, so what the
/// workers receive is exactly these bytes) to `stage`'s queue.
async fn publish_raw(publisher: &Publisher, names: &Names, stage: Stage, envelope: &Value) {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(0));
    let task = envelope["task_id"].as_str().unwrap();
    publisher
        .publish_raw(PublishedMessage {
            exchange: names.work_exchange(),
            routing_key: stage.as_str().to_owned(),
            body: serde_json::to_vec(envelope).unwrap(),
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(format!("{task}/{}/0", stage.as_str()).into())
                .with_correlation_id(envelope["correlation_id"].as_str().unwrap().into())
                .with_headers(headers),
        })
        .await
        .expect("published");
}

/// The task's status record as the runtime wrote it.
async fn status_record(fleet: &Fleet, task: &str) -> std::collections::HashMap<String, String> {
    let client = redis::Client::open(fleet.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = Names::new(&fleet.prefix).status_key(task.parse().expect("task id"));
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn an_unknown_source_and_reply_channel_end_dead_lettered_with_a_reason_and_unchanged() {
    let mut fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let repo = local_repository(&fleet.dir.path().join("slug-repo"));
    let names = Names::new(&fleet.prefix);
    let connection = Connection::connect(&fleet.amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let publisher = Publisher::new(&connection, names.clone(), None, usize::MAX)
        .await
        .expect("publisher");
    // Through generate, through context and generate, and straight to dispatch.
    let sent = [
        (Stage::Generate, mastodon_envelope("simple", None, None)),
        (
            Stage::Context,
            mastodon_envelope("context", Some(&repo), None),
        ),
        (
            Stage::Dispatch,
            mastodon_envelope("simple", None, Some("final")),
        ),
    ];
    for (stage, envelope) in &sent {
        publish_raw(&publisher, &names, *stage, envelope).await;
    }
    let tasks: Vec<String> = sent
        .iter()
        .map(|(_, e)| e["task_id"].as_str().unwrap().to_owned())
        .collect();

    let channel = connection.create_channel().await.expect("channel");
    let dead = eventually(FLOW_WITHIN, || async {
        let letters = contexten_cli::list_dead(&channel, &names, Stage::Dispatch, 100)
            .await
            .unwrap_or_default();
        tasks
            .iter()
            .all(|t| letters.iter().any(|l| l.task_id.as_deref() == Some(t)))
            .then_some(letters)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "not every task reached {}\n{}",
            names.dead_queue(Stage::Dispatch),
            fleet.logs(60)
        )
    });
    for ((stage, envelope), task) in sent.iter().zip(&tasks) {
        let letter = dead
            .iter()
            .find(|l| l.task_id.as_deref() == Some(task))
            .unwrap();
        assert_eq!(
            letter.reason, "unknown_reply_channel",
            "{stage:?}: {letter:?}"
        );
        assert!(letter.detail.contains("mastodon"), "{}", letter.detail);
        let body: Value = serde_json::from_slice(&letter.body).expect("a JSON body");
        assert_eq!(body["source"]["kind"], "mastodon", "{stage:?}: {body}");
        assert_eq!(
            body["source"]["reply_to"], envelope["source"]["reply_to"],
            "{stage:?}: the target's own fields"
        );
        assert_eq!(body["source"]["mastodon_visibility"], "direct");
        assert_eq!(body["added_by_v1_1"], json!({"x": [1, 2]}));
        assert_eq!(body["request"]["text"], envelope["request"]["text"]);
    }
    // Through generate the answer was made; only its posting failed.
    let generated: Value = serde_json::from_slice(
        &dead
            .iter()
            .find(|l| l.task_id.as_deref() == Some(&tasks[0]))
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        generated["result"]
            .to_string()
            .contains("def parse_duration"),
        "{generated}"
    );
    assert_eq!(
        dead.len(),
        tasks.len(),
        "one dead letter per task, nothing else: {dead:?}"
    );
    // Nothing else was dead-lettered on the way.
    for stage in [Stage::Context, Stage::Generate] {
        let letters = contexten_cli::list_dead(&channel, &names, stage, 100)
            .await
            .unwrap_or_default();
        assert!(letters.is_empty(), "{stage:?}: {letters:?}");
    }
    // The status records end with the reason.
    for task in &tasks {
        let record = status_record(&fleet, task).await;
        assert_eq!(
            record.get("state").map(String::as_str),
            Some("dead_lettered:unknown_reply_channel"),
            "{record:?}"
        );
        assert_eq!(record.get("stage").map(String::as_str), Some("dispatch"));
    }
    // No process crashed or panicked, and each still answers its health check.
    for service in &mut fleet.services {
        assert!(service.is_running(), "{} exited", service.log_name);
        let log = service.log_tail(100_000);
        assert!(
            !log.contains("panicked"),
            "{} panicked:\n{log}",
            service.log_name
        );
    }
    for service in &fleet.services {
        let health = fleet
            .http
            .get(format!("http://{}/healthz", service.health_addr))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(health.ok(), Some(200), "{} /healthz", service.log_name);
    }
    let _ = connection.close(200, "done".into()).await;
    fleet.stop().await;
}
