//! The cache's layers against the real Redis and a temporary directory, each test
//! under its own prefix.

mod budget;

use contexten_cache::{Cache, CacheConfig, EncryptionKey, Layer};
use contexten_config::{Env, RedisSettings};
use contexten_envelope::Names;
use contexten_store::Store;
use contexten_testkit::{TestPrefix, machine_redis_url};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);

fn store(prefix: &str, url: Option<&str>) -> Store {
    let default = machine_redis_url();
    let url = url.unwrap_or(&default);
    let settings = RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", url)])).unwrap();
    Store::new(&settings, Names::new(prefix)).unwrap()
}

/// A unique prefix whose keys in the machine's Redis go when it drops.
fn prefix() -> TestPrefix {
    TestPrefix::new().clean_machine_redis()
}

fn config(dir: &std::path::Path, key: Option<EncryptionKey>) -> CacheConfig {
    CacheConfig {
        name: "gen",
        memory_entries: 100,
        ttl: TTL,
        disk_dir: Some(dir.to_path_buf()),
        encryption: key,
    }
}

async fn raw_redis(store: &Store, key: &str) -> Vec<u8> {
    let mut conn = store.connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<Vec<u8>>>(&mut conn)
        .await
        .unwrap()
        .expect("entry in redis")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_value_is_found_in_each_layer_and_promoted() {
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let redis = store(&prefix, None);
    let writer = Cache::new(config(dir.path(), None), Some(redis.clone()));
    assert!(writer.get("k1").await.is_none());
    writer.put("k1", b"value one").await;
    assert_eq!(writer.get("k1").await.unwrap().layer, Layer::Memory);

    // Another replica with its own memory and disk finds it in Redis, then in memory.
    let other_dir = tempfile::tempdir().unwrap();
    let reader = Cache::new(config(other_dir.path(), None), Some(redis.clone()));
    let hit = reader.get("k1").await.unwrap();
    assert_eq!((hit.layer, &*hit.value), (Layer::Redis, &b"value one"[..]));
    assert_eq!(reader.get("k1").await.unwrap().layer, Layer::Memory);
    // The Redis hit was written to its disk too.
    reader.evict_memory("k1").await;
    assert_eq!(reader.get("k1").await.unwrap().layer, Layer::Disk);
}

#[tokio::test]
async fn entries_at_rest_are_unreadable_in_clear_with_a_key() {
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let redis = store(&prefix, None);
    let key = EncryptionKey::from_bytes([9; 32]);
    let cache = Cache::new(config(dir.path(), Some(key)), Some(redis.clone()));
    let plaintext = b"def parse_duration(text: str) -> int: return 42";
    cache.put("k", plaintext).await;

    let on_disk = std::fs::read(cache.disk_path("k").unwrap()).unwrap();
    let in_redis = raw_redis(&redis, &cache.redis_key("k").unwrap()).await;
    for (layer, bytes) in [("disk", &on_disk), ("redis", &in_redis)] {
        assert!(
            !contains(bytes, b"parse_duration"),
            "{layer} holds plaintext"
        );
        assert!(bytes.len() > plaintext.len(), "{layer} entry is sealed");
    }
    // Without the key (or with another), the entries are misses, not garbage.
    let other_dir = tempfile::tempdir().unwrap();
    let keyless = Cache::new(config(other_dir.path(), None), Some(redis.clone()));
    assert!(keyless.get("k").await.is_none());
    cache.evict_memory("k").await;
    assert_eq!(&*cache.get("k").await.unwrap().value, &plaintext[..]);
}

#[tokio::test]
async fn without_a_key_entries_are_stored_plain() {
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let redis = store(&prefix, None);
    let cache = Cache::new(config(dir.path(), None), Some(redis.clone()));
    cache.put("k", b"visible").await;
    let in_redis = raw_redis(&redis, &cache.redis_key("k").unwrap()).await;
    assert!(contains(&in_redis, b"visible"));
}

#[tokio::test]
async fn expired_entries_are_misses_in_every_layer() {
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let redis = store(&prefix, None);
    const SHORT_TTL: Duration = Duration::from_millis(200);
    let mut short = config(dir.path(), None);
    short.ttl = SHORT_TTL;
    let cache = Cache::new(short, Some(redis.clone()));
    cache.put("k", b"soon gone").await;
    assert!(cache.get("k").await.is_some());
    // Time itself is what is tested here: outlive the TTL.
    tokio::time::sleep(SHORT_TTL * 2).await;
    assert!(cache.get("k").await.is_none());
    assert!(
        !cache.disk_path("k").unwrap().exists(),
        "expired file removed"
    );
}

#[tokio::test]
async fn redis_down_degrades_to_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let down = store(&prefix(), Some("redis://127.0.0.1:1"));
    let cache = Cache::new(config(dir.path(), None), Some(down));
    cache.put("k", b"still cached").await;
    cache.evict_memory("k").await;
    assert_eq!(cache.get("k").await.unwrap().layer, Layer::Disk);
    assert!(cache.try_lock("k", Duration::from_secs(1)).await);
    assert!(cache.get("absent").await.is_none());
}

#[tokio::test]
async fn the_replica_lock_is_exclusive_and_waiters_see_the_holders_entry() {
    let prefix = prefix();
    let redis = store(&prefix, None);
    let dir = tempfile::tempdir().unwrap();
    let a = Cache::new(config(dir.path(), None), Some(redis.clone()));
    let b = Cache::new(config(dir.path(), None), Some(store(&prefix, None)));
    assert!(a.try_lock("k", Duration::from_secs(5)).await);
    assert!(!b.try_lock("k", Duration::from_secs(5)).await);
    let waiter = tokio::spawn(async move { b.wait_for("k", Duration::from_secs(5)).await });
    a.put("k", b"from a").await;
    a.unlock("k").await;
    let hit = waiter.await.unwrap().expect("waiter sees the entry");
    assert_eq!(&*hit.value, b"from a");
    assert!(a.try_lock("k", Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_waiter_stops_waiting_when_the_lock_holder_disappears() {
    let prefix = prefix();
    let redis = store(&prefix, None);
    let dir = tempfile::tempdir().unwrap();
    let holder = Cache::new(config(dir.path(), None), Some(redis.clone()));
    let waiter = Cache::new(config(dir.path(), None), Some(store(&prefix, None)));
    // A holder that dies never extends its short lease.
    assert!(holder.try_lock("k", Duration::from_millis(300)).await);
    let started = std::time::Instant::now();
    assert!(
        waiter
            .wait_for("k", Duration::from_secs(30))
            .await
            .is_none()
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "gave up after the lease, not the deadline: {waited:?}"
    );
    assert!(
        waiter.try_lock("k", Duration::from_secs(5)).await,
        "and can take the lock itself"
    );

    // A live holder that extends its lease keeps the waiter waiting.
    let other = Cache::new(config(dir.path(), None), Some(store(&prefix, None)));
    let keeper = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waiter.extend_lock("k", Duration::from_millis(300)).await;
        }
        waiter.put("k", b"late").await;
        waiter.unlock("k").await;
    });
    let hit = other
        .wait_for("k", Duration::from_secs(10))
        .await
        .expect("the live holder's entry");
    assert_eq!(&*hit.value, b"late");
    keeper.await.unwrap();
}

/// The cache lives on the cache Redis (`REDIS_URL`) whatever handle it is given,
/// and a full cache Redis (refusing writes) only costs the Redis layer.
#[tokio::test]
async fn entries_go_to_the_cache_redis_and_a_full_one_is_only_a_miss() {
    use contexten_testkit::{RedisNode, RedisOptions};
    let cache_node = RedisNode::start(RedisOptions::default().policy("noeviction"))
        .await
        .expect("a Redis of the test's own");
    let records_url = machine_redis_url();
    let prefix = prefix();
    let settings = RedisSettings::from_env(&Env::from_pairs([
        ("REDIS_URL", cache_node.url().as_str()),
        ("REDIS_RECORDS_URL", records_url.as_str()),
    ]))
    .unwrap();
    // The records handle, as the generator passes it.
    let records = Store::new(&settings, Names::new(prefix.as_str())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(config(dir.path(), None), Some(records.clone()));
    cache.put("k1", b"value one").await;
    let key = cache.redis_key("k1").unwrap();
    assert!(!raw_redis(&records.cache(), &key).await.is_empty());
    let mut conn = records.connection().await.unwrap();
    let in_records: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        in_records, None,
        "nothing of the cache in the records Redis"
    );

    // Full: the Redis layer refuses, memory and disk still answer.
    cache_node.config_set("maxmemory", "1").await.unwrap();
    let mut cache_conn = records.cache().connection().await.unwrap();
    cache.put("k2", b"value two").await;
    assert_eq!(cache.get("k2").await.unwrap().layer, Layer::Memory);
    cache.evict_memory("k2").await;
    assert_eq!(cache.get("k2").await.unwrap().layer, Layer::Disk);
    let in_cache: Option<Vec<u8>> = redis::cmd("GET")
        .arg(cache.redis_key("k2").unwrap())
        .query_async(&mut cache_conn)
        .await
        .unwrap();
    assert_eq!(in_cache, None, "the full cache Redis refused the entry");
    assert!(
        cache.try_lock("k3", Duration::from_secs(5)).await,
        "a refused lock computes"
    );
}
