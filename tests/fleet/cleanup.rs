//! Removes what a fleet left under its prefix: queues, exchanges, Redis keys.

use crate::harness::{amqp_url, redis_url};

/// Deletes every queue, exchange and Redis key under `prefix`.
pub async fn remove_prefix(prefix: &str) {
    remove_prefix_on(&amqp_url(), &redis_url(), prefix).await;
}

/// [`remove_prefix`] on the given broker and Redis.
pub async fn remove_prefix_on(amqp_url: &str, redis_url: &str, prefix: &str) {
    if let Ok(connection) =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await
    {
        if let Ok(channel) = connection.create_channel().await {
            let names = contexten_envelope::Names::new(prefix);
            let tiers = [200u64, 1000, 3000].map(std::time::Duration::from_millis);
            let _ = contexten_broker::topology::delete(&channel, &names, &tiers).await;
        }
        let _ = connection.close(200, "cleanup".into()).await;
    }
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

/// Messages ready in every stage queue and dead queue under `prefix`.
pub async fn depths(prefix: &str) -> std::collections::BTreeMap<String, u32> {
    depths_on(&amqp_url(), prefix).await
}

/// [`depths`] on the given broker (classic queues: the quorum-mode fleet of
/// the ha test lists its lanes through `rabbitmqctl`).
pub async fn depths_on(amqp_url: &str, prefix: &str) -> std::collections::BTreeMap<String, u32> {
    let mut depths = std::collections::BTreeMap::new();
    let Ok(connection) =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await
    else {
        return depths;
    };
    if let Ok(channel) = connection.create_channel().await {
        let names = contexten_envelope::Names::new(prefix);
        if let Ok(stats) =
            contexten_cli::queue_stats(&channel, &names, contexten_config::QueueType::Classic).await
        {
            for q in stats {
                depths.insert(q.queue, q.ready);
            }
        }
    }
    let _ = connection.close(200, "depths".into()).await;
    depths
}
