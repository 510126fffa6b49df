//! The store through Redis Sentinel: it finds the master, follows it through
//! a failover (the old address becomes a read-only replica), and with
//! `REDIS_WAIT_REPLICAS` a write is on the replica before it is acknowledged.

use contexten_config::{Env, RedisSettings};
use contexten_envelope::Names;
use contexten_store::{Store, StoreError};
use contexten_testkit::RedisSentinelGroup;
use std::time::{Duration, Instant};

fn store(group: &RedisSentinelGroup, wait: &str) -> Store {
    let sentinels = group.sentinel_addresses();
    let env = Env::from_pairs([
        // The host is ignored with sentinels: nothing listens there.
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("REDIS_SENTINELS", sentinels.as_str()),
        ("REDIS_SENTINEL_MASTER", group.master_name()),
        ("REDIS_WAIT_REPLICAS", wait),
    ]);
    let settings = RedisSettings::from_env(&env).unwrap();
    Store::with_tls(&settings, Names::new("ctk-sentinel"), &Default::default()).unwrap()
}

async fn write(store: &Store, key: &str) -> Result<(), StoreError> {
    store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.set(key, "1").ignore();
            p
        })
        .await?;
    store.replicated().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_master_through_a_failover_and_none_acknowledged_is_lost() {
    let group = RedisSentinelGroup::start("ctkstore").await.unwrap();
    let store = store(&group, "1");
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("ctk-sentinel:before:{i}");
        write(&store, &key).await.unwrap();
        acknowledged.push(key);
    }

    let failover = tokio::spawn(async move {
        let port = group.failover().await.unwrap();
        (group, port)
    });
    // Writes go on through the failover: some fail (the caller retries them),
    // none that was acknowledged may be missing afterwards.
    let started = Instant::now();
    let mut failed = 0;
    let mut i = 0;
    while !failover.is_finished() || started.elapsed() < Duration::from_secs(3) {
        let key = format!("ctk-sentinel:during:{i}");
        i += 1;
        match write(&store, &key).await {
            Ok(()) => acknowledged.push(key),
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "failover hung");
    }
    let (group, new_master) = failover.await.unwrap();

    // Within seconds every write succeeds again, on the new master.
    let back = Instant::now();
    contexten_testkit::poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { write(&store, "ctk-sentinel:after").await },
    )
    .await
    .expect("writes succeed after the failover");
    println!(
        "failover: {failed} writes failed, {} acknowledged, writes back {:?} after the failover ended",
        acknowledged.len(),
        back.elapsed()
    );

    let mut master = redis::Client::open(group.node_on(new_master).unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in &acknowledged {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut master)
            .await
            .unwrap();
        assert!(
            exists,
            "{key} was acknowledged and is gone after the failover"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_waiting_for_a_replica() {
    let group = RedisSentinelGroup::start("ctkwait").await.unwrap();
    let mut medians = Vec::new();
    for wait in ["0", "1"] {
        let store = store(&group, wait);
        write(&store, "ctk-sentinel:warm").await.unwrap();
        let mut times = Vec::new();
        for i in 0..500 {
            let started = Instant::now();
            write(&store, &format!("ctk-sentinel:cost:{i}"))
                .await
                .unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
        println!("REDIS_WAIT_REPLICAS={wait}: write p50 {p50:?} p99 {p99:?}");
        medians.push(p50);
    }
    // WAIT adds a round trip to the replica, never a whole timeout.
    assert!(medians[1] < Duration::from_millis(100), "{medians:?}");
}
