//! The store's two Redis roles (README "Redis: records and caches"): records on
//! `REDIS_RECORDS_URL`, caches on `REDIS_URL`, and a write the records Redis
//! refuses is a typed error, never taken for "Redis unreachable". The Redis that
//! is filled is the test's own.

use crate::helpers::envelope;
use contexten_broker::{CancellationToken, RedisRole, Store};
use contexten_config::{Env, RedisSettings};
use contexten_envelope::{Names, Stage};
use contexten_telemetry::health::Readiness;
use contexten_testkit::{RedisNode, RedisOptions, TestPrefix, eventually, machine_redis_url};
use std::time::Duration;

fn split(records: &str, cache: &str) -> RedisSettings {
    RedisSettings::from_env(&Env::from_pairs([
        ("REDIS_URL", cache),
        ("REDIS_RECORDS_URL", records),
    ]))
    .unwrap()
}

async fn get(url: &str, key: &str) -> Option<String> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn records_and_caches_reach_their_own_redis_and_a_full_records_redis_refuses_typed() {
    let records = RedisNode::start(
        RedisOptions::default()
            .maxmemory("2mb")
            .policy("noeviction"),
    )
    .await
    .expect("a Redis of the test's own");
    // The probe key in the machine's Redis goes with the prefix.
    let prefix = TestPrefix::new().clean_machine_redis();
    let names = Names::new(prefix.as_str());
    let store = Store::new(&split(&records.url(), &machine_redis_url()), names.clone()).unwrap();
    assert_eq!(store.role(), RedisRole::Records);
    assert_eq!(store.cache().role(), RedisRole::Cache);
    assert!(!store.shared());

    // Each handle writes to its own Redis.
    let key = names.redis_key(&["roles", "probe"]);
    for (handle, value) in [(&store, "record"), (&store.cache(), "cache")] {
        handle
            .run::<()>(|| {
                let mut p = redis::pipe();
                p.set_ex(&key, value, 60).ignore();
                p
            })
            .await
            .unwrap();
    }
    assert_eq!(get(&records.url(), &key).await.as_deref(), Some("record"));
    assert_eq!(
        get(&machine_redis_url(), &key).await.as_deref(),
        Some("cache")
    );

    // Health follows the records Redis and shows the cache Redis beside it.
    let readiness = Readiness::new(&["redis"]);
    let stop = CancellationToken::new();
    tokio::spawn(store.clone().watch_health(readiness.clone(), stop.clone()));
    eventually(Duration::from_secs(5), "redis ready", || async {
        readiness.is_ready("redis")
    })
    .await;
    let detail = readiness.report().1["redis"].detail.clone();
    assert_eq!(detail, "records: pong; cache: pong");
    stop.cancel();

    // Fill the records Redis until it refuses even a small write, pinned full.
    records
        .fill_until_oom()
        .await
        .expect("the records Redis filled up");
    let refused = store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.set("filler:probe", "x").ignore();
            p
        })
        .await
        .expect_err("a full records Redis refuses");
    assert!(refused.is_refused(), "{refused}");
    assert!(refused.to_string().contains("OOM"), "{refused}");
    let filler = vec![b'x'; 64 << 10];

    // The runtime's own records: refused, typed, with reads still answered.
    let env = envelope("full");
    let error = store
        .record_completion(Stage::Context, &env, "done")
        .await
        .unwrap_err();
    assert!(error.is_refused(), "{error}");
    let error = store.put_payload(&filler).await.unwrap_err();
    assert!(error.is_refused(), "{error}");
    assert!(!store.is_complete(Stage::Context, &env).await.unwrap());

    // An unreachable Redis is not a refusal.
    let down = Store::new(
        &split("redis://127.0.0.1:1", &machine_redis_url()),
        names.clone(),
    )
    .unwrap();
    let error = down
        .record_completion(Stage::Context, &env, "done")
        .await
        .unwrap_err();
    assert!(!error.is_refused(), "{error}");

    // One URL for both roles: one connection, shared.
    let shared = Store::new(&split(&records.url(), &records.url()), names).unwrap();
    assert!(shared.shared());
}
