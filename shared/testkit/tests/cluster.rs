//! The cluster helpers: three RabbitMQ nodes that form one cluster and keep a
//! quorum queue serving when its leader dies; a Redis sentinel group that
//! fails over on request.

use contexten_testkit::{RabbitCluster, RedisSentinelGroup};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[tokio::test]
async fn a_quorum_queue_survives_its_leaders_death() {
    let cluster = RabbitCluster::start(3).await.expect("a three-node cluster");
    assert_eq!(cluster.running_nodes().await.unwrap().len(), 3);
    assert_eq!(cluster.addresses().split(',').count(), 3);

    let connection = Connection::connect(&cluster.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            "ctk-cluster-q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            "ctk-cluster-q".into(),
            BasicPublishOptions::default(),
            b"kept",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (leader, count) = cluster.busiest_leader("ctk-cluster-q").await.unwrap();
    assert_eq!(count, 1);
    let killed = leader.node_name().to_owned();
    leader.kill().await.unwrap();

    // Another node answers, elects a new leader, and still holds the message.
    let survivor = cluster
        .nodes()
        .iter()
        .find(|n| n.node_name() != killed)
        .unwrap();
    let got = contexten_testkit::poll(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(200),
        || async {
            let connection =
                Connection::connect(&survivor.amqp_url(), ConnectionProperties::default())
                    .await
                    .ok()?;
            let channel = connection.create_channel().await.ok()?;
            channel
                .basic_get("ctk-cluster-q".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()?
        },
    )
    .await
    .expect("the message from a surviving node");
    assert_eq!(got.delivery.data, b"kept");
    let leaders = cluster.leaders("ctk-cluster-q").await.unwrap();
    assert_ne!(leaders["ctk-cluster-q"], killed, "{leaders:?}");

    cluster.node(&killed).unwrap().restart().await.unwrap();
    assert_eq!(cluster.running_nodes().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_sentinel_group_fails_over_and_keeps_what_its_master_held() {
    let group = RedisSentinelGroup::start("ctkmaster").await.unwrap();
    let first = group.master_port().await.unwrap();
    assert_eq!(first, group.nodes()[0].port());
    let mut master = redis::Client::open(group.nodes()[0].url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut master)
        .await
        .unwrap();
    let reached: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(reached, 1);

    let second = group.failover().await.unwrap();
    assert_ne!(second, first);
    let mut new_master = redis::Client::open(group.node_on(second).unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut new_master)
        .await
        .unwrap();
    assert_eq!(value, "v");
    // A demoted master drops its clients; a new one is refused writes.
    let mut master = redis::Client::open(group.nodes()[0].url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .query_async(&mut master)
        .await;
    assert!(
        refused.as_ref().unwrap_err().code() == Some("READONLY"),
        "the old master is a replica now: {refused:?}"
    );
}
