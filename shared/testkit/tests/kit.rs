//! The helpers that are not nodes: a prefix cleans its keys on drop (even
//! when the test panics, even inside a tokio test), the OOM filler leaves a
//! Redis refusing writes, and the proxy's cut closes open connections.

use contexten_testkit::{RedisNode, RedisOptions, TcpProxy, TestPrefix, eventually};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(url: &str, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn(url).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_prefix_deletes_its_keys_on_drop_even_when_the_test_panics() {
    let node = RedisNode::start(RedisOptions::default()).await.unwrap();
    let url = node.url();
    let mut c = conn(&url).await;
    let _: () = redis::cmd("SET")
        .arg("other:kept")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();

    let prefix = TestPrefix::new();
    prefix.clean_redis(&url);
    let name = prefix.as_str().to_owned();
    for i in 0..1500 {
        let _: () = redis::cmd("SET")
            .arg(format!("{name}:k{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    prefix.on_drop(move || async move {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    // A panicking task that owns the prefix, on this runtime's thread.
    let panicked = tokio::spawn(async move {
        let _owned = prefix;
        panic!("the test failed");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(keys(&url, &format!("{name}:*")).await.is_empty());
    assert_eq!(keys(&url, "other:*").await, ["other:kept"]);
}

#[tokio::test]
async fn the_filler_leaves_redis_refusing_writes() {
    let node = RedisNode::start(
        RedisOptions::default()
            .maxmemory("2mb")
            .policy("noeviction"),
    )
    .await
    .unwrap();
    node.fill_until_oom().await.unwrap();
    let written: redis::RedisResult<()> = redis::cmd("SET")
        .arg("small")
        .arg("x")
        .query_async(&mut conn(&node.url()).await)
        .await;
    assert!(written.unwrap_err().to_string().contains("OOM"));
}

#[tokio::test]
async fn the_proxy_forwards_and_its_cut_closes_open_connections() {
    let node = RedisNode::start(RedisOptions::default()).await.unwrap();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", node.port()))
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    proxy.cut();
    // The cut link's end closes: a read returns end-of-file or an error.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the cut connection closes");
    assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
    // Others still get through.
    let answered = eventually(
        Duration::from_secs(5),
        "a new connection answers",
        || async {
            let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await.ok()?;
            Some(buf[..n].to_vec())
        },
    )
    .await;
    assert_eq!(answered, b"+PONG\r\n");
}

/// The fixture's queues and the prefix's keys are gone once it drops, on a
/// broker and Redis of the test's own (so nothing else shares the names).
#[cfg(feature = "broker")]
#[tokio::test]
async fn a_broker_fixture_removes_its_topology_and_keys_on_drop() {
    use contexten_envelope::{ReplyTarget, SourceKind, Stage};
    use contexten_testkit::broker::{BrokerFixture, envelope_from, source};
    use contexten_testkit::{RabbitNode, RabbitOptions};
    use lapin::options::QueueDeclareOptions;

    let rabbit = RabbitNode::start(RabbitOptions::default()).await.unwrap();
    let node = RedisNode::start(RedisOptions::default()).await.unwrap();
    let fx = BrokerFixture::builder()
        .amqp(rabbit.amqp_url())
        .redis(node.url())
        .start()
        .await;
    let queue = fx.names.stage_queue(Stage::Generate);
    let sent = envelope_from(source(SourceKind::API, ReplyTarget::None), "x");
    fx.publisher.publish(Stage::Generate, &sent).await.unwrap();
    eventually(Duration::from_secs(10), "the message queued", || async {
        fx.depth(&queue).await == 1
    })
    .await;
    let key = format!("{}:probe", fx.prefix.as_str());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .query_async(&mut conn(&node.url()).await)
        .await
        .unwrap();

    drop(fx);
    let connection =
        lapin::Connection::connect(&rabbit.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = channel
        .queue_declare(queue.as_str().into(), passive, Default::default())
        .await;
    assert!(gone.is_err(), "{gone:?}");
    assert!(keys(&node.url(), &key).await.is_empty());
}
