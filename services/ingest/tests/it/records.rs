//! Records and caches in separate Redis roles (README "Redis: records and
//! caches"): a full cache Redis never costs a dedup claim, and a records Redis
//! that refuses writes is a 503 with `Retry-After`, never a second task. The
//! Redis servers that are filled here are the test's own (`RedisNode`).

use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::Stage;
use contexten_testkit::{RedisNode, keys_matching};
use redis::aio::MultiplexedConnection;

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Fills the test's own Redis: until it refuses writes with `OOM` and stays
/// so (`noeviction`), or, for an evicting policy, until it has evicted keys.
async fn fill(node: &RedisNode, policy: &str) {
    if policy == "noeviction" {
        node.fill_until_oom().await.expect("the test Redis full");
        return;
    }
    let mut conn = connect(&node.url()).await;
    let value = vec![b'x'; 4 << 10];
    for i in 0..16_000 {
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&value)
            .query_async(&mut conn)
            .await;
        if let Err(e) = written {
            assert!(e.to_string().contains("OOM"), "while filling: {e}");
        }
        if i % 16 == 15 && evicted_keys(&mut conn).await > 0 {
            return;
        }
    }
    panic!("the test Redis never evicted");
}

async fn evicted_keys(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a 64 KiB write is refused right now (the server is still full).
async fn refuses_writes(conn: &mut MultiplexedConnection) -> bool {
    let written: redis::RedisResult<()> = redis::cmd("SET")
        .arg("filler:probe")
        .arg(vec![b'y'; 64 << 10])
        .query_async(conn)
        .await;
    written.is_err_and(|e| e.to_string().contains("OOM"))
}

/// A webhook, then the cache Redis filled with `policy`, then the same
/// delivery again: it is a duplicate of the same task, and ingest wrote
/// nothing of its own into the cache Redis.
async fn redelivery_with_a_full_cache(policy: &str) {
    let cache = RedisNode::small(policy).await;
    let records = redis_url();
    let ingest = TestIngest::start_with(&[
        ("REDIS_URL", cache.url().as_str()),
        ("REDIS_RECORDS_URL", records.as_str()),
    ])
    .await;
    let mut cache_conn = connect(&cache.url()).await;
    let body = github_comment(
        31,
        "/contexten generate a slugify function",
        "octocat",
        "OWNER",
    );
    let id = uuid::Uuid::now_v7().to_string();

    let first = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(first.status, 202, "{}", first.json);
    let (task, _ack) = ingest.take_task_and_ack(Stage::Generate).await;

    fill(&cache, policy).await;
    let again = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(
        (again.status, &again.json["status"]),
        (200, &"duplicate".into())
    );
    assert_eq!(again.json["task_id"], task.task_id.to_string());
    ingest.assert_nothing_queued().await;

    assert!(
        keys_matching(&cache.url(), &format!("{}:*", ingest.names.prefix()))
            .await
            .unwrap()
            .is_empty(),
        "ingest keeps nothing in the cache Redis"
    );
    let mut records_conn = ingest.redis().await;
    let claim =
        ingest::intake::dedup_key(&ingest.names, &contexten_envelope::SourceKind::GITHUB, &id);
    let claimed: Option<String> = redis::cmd("GET")
        .arg(&claim)
        .query_async(&mut records_conn)
        .await
        .unwrap();
    assert_eq!(
        claimed,
        Some(task.task_id.to_string()),
        "the claim is a record"
    );
    if policy == "noeviction" {
        assert!(
            refuses_writes(&mut cache_conn).await,
            "the cache stayed full"
        );
    }
}

#[tokio::test]
async fn with_the_cache_redis_full_a_redelivered_webhook_is_still_a_duplicate() {
    redelivery_with_a_full_cache("noeviction").await;
}

#[tokio::test]
async fn with_the_cache_redis_evicting_a_redelivered_webhook_is_still_a_duplicate() {
    redelivery_with_a_full_cache("allkeys-lru").await;
}

#[tokio::test]
async fn a_records_redis_refusing_writes_is_a_503_with_retry_after_and_no_task() {
    let records = RedisNode::small("noeviction").await;
    let failed = tempfile::tempdir().unwrap();
    let failed_file = failed.path().join("failed.jsonl");
    let failed_path = failed_file.display().to_string();
    let cache = redis_url();
    let ingest = TestIngest::start_with(&[
        ("REDIS_URL", cache.as_str()),
        ("REDIS_RECORDS_URL", records.url().as_str()),
        ("INGEST_FAILED_DELIVERIES_FILE", failed_path.as_str()),
    ])
    .await;
    records.fill_until_oom().await.expect("the test Redis full");
    let refused_before = refused_count();

    let body = github_comment(
        32,
        "/contexten generate a slugify function",
        "octocat",
        "OWNER",
    );
    let id = uuid::Uuid::now_v7().to_string();
    let answer = ingest.github("issue_comment", &id, &body).await;
    assert_eq!((answer.status, answer.error()), (503, "store_unavailable"));
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    // An API task with an idempotency key goes straight to the delivery claim.
    let api = serde_json::json!({
        "text": "Add a retry with backoff to `fetch_page` in src/http.rs",
        "repository_url": "https://github.com/octo-org/hello-world.git",
    });
    let key = uuid::Uuid::now_v7().to_string();
    let refused = ingest.api(&token("both"), &api, Some(&key)).await;
    assert_eq!(
        (refused.status, refused.error()),
        (503, "store_unavailable")
    );
    assert!(refused.headers.contains_key("retry-after"));
    ingest.assert_nothing_queued().await;
    assert!(refused_count() > refused_before, "the refusal is counted");
    // GitHub does not retry by itself: the refused delivery is recorded (in
    // the file when the records Redis refuses that small write too).
    let recorded = ingest::failed::list(&ingest.state.store, &failed_file, 0)
        .await
        .expect("the recorded deliveries");
    assert!(recorded.iter().any(|d| d.guid == id), "{recorded:?}");

    // Room again (an operator raised maxmemory): the same delivery creates its
    // task once, and a third delivery is a duplicate.
    records.config_set("maxmemory", "64mb").await.unwrap();
    let retried = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(retried.status, 202, "{}", retried.json);
    let (task, _ack) = ingest.take_task_and_ack(Stage::Generate).await;
    let again = ingest.github("issue_comment", &id, &body).await;
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["task_id"], task.task_id.to_string());
    ingest.assert_nothing_queued().await;
}

fn refused_count() -> f64 {
    metric_total("contexten_redis_refused_total", "role=\"records\"")
}
