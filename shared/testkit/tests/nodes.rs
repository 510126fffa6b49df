//! Each node type started for real: it answers, its faults are real (a pause
//! stops answers, a kill closes the port, a memory alarm blocks publishers),
//! it comes back on restart and leaves nothing behind on drop.

use contexten_testkit::{RabbitNode, RabbitOptions, RedisNode, RedisOptions, TestCerts};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One inline command on a fresh connection; the first reply line.
async fn redis(port: u16, cmd: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no reply within 1 s"))??;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// `PING` through TLS with `openssl s_client`, trusting `ca`: true on PONG.
fn tls_ping(port: u16, ca: &std::path::Path, line: &str) -> bool {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-verify_return_error",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(line.as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("PONG")
}

#[tokio::test]
async fn redis_node_pauses_dies_restarts_and_cleans_up() {
    let node = RedisNode::start(RedisOptions::default().appendonly(true))
        .await
        .unwrap();
    assert_ne!(node.port(), 6379);
    assert_eq!(redis(node.port(), "SET k v").await.unwrap(), "+OK");

    let paused = node.pause(Duration::from_millis(1500));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis(node.port(), "PING").await
    };
    let (paused, probe) = tokio::join!(paused, probe);
    paused.unwrap();
    assert!(probe.is_err(), "a paused server answered: {probe:?}");
    assert_eq!(redis(node.port(), "PING").await.unwrap(), "+PONG");

    node.kill().await.unwrap();
    assert!(redis(node.port(), "PING").await.is_err());
    node.restart().await.unwrap();
    // appendonly: the key survived the crash.
    assert_eq!(redis(node.port(), "GET k").await.unwrap(), "$1\r\nv");

    let (dir, port) = (node.dir().to_owned(), node.port());
    drop(node);
    assert!(!dir.exists());
    assert!(redis(port, "PING").await.is_err());
}

#[tokio::test]
async fn redis_node_limits_memory_and_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    let node = RedisNode::start(
        RedisOptions::default()
            .maxmemory("1mb")
            .policy("noeviction")
            .tls(&certs),
    )
    .await
    .unwrap();
    assert!(node.tls_url().unwrap().starts_with("rediss://127.0.0.1:"));
    assert_eq!(
        redis(node.port(), "CONFIG GET maxmemory-policy")
            .await
            .unwrap(),
        "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction"
    );
    let tls_port: u16 = node
        .tls_url()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ca = certs.ca.clone();
    let other = certs.other_ca.clone();
    let (good, bad) = tokio::task::spawn_blocking(move || {
        (
            tls_ping(tls_port, &ca, "PING\r\n"),
            tls_ping(tls_port, &other, "PING\r\n"),
        )
    })
    .await
    .unwrap();
    assert!(good, "no PONG through TLS trusting the test CA");
    assert!(!bad, "TLS handshake passed trusting an unrelated CA");
}

/// Publishes one message to the `testkit` queue; the confirm to await.
async fn publish(ch: &lapin::Channel) -> lapin::PublisherConfirm {
    ch.basic_publish(
        "".into(),
        "testkit".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn rabbit_node_blocks_publishers_on_alarm_and_survives_a_crash() {
    let node = RabbitNode::start(RabbitOptions::default()).await.unwrap();
    assert!(node.amqps_url().is_none());
    let conn = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "testkit".into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    publish(&ch).await.await.unwrap();

    node.set_memory_alarm(true).await.unwrap();
    let confirm = publish(&ch).await;
    let mut confirm = Box::pin(confirm);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut confirm)
            .await
            .is_err(),
        "a publish was confirmed under the memory alarm"
    );
    node.set_memory_alarm(false).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .expect("the blocked publish is confirmed once the alarm clears")
        .unwrap();

    node.kill().await.unwrap();
    // The client sees its broker gone. (Not "the port refuses": under a full
    // parallel test run another test's listener may take the freed port.)
    let gone = async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .is_ok(),
        "the connection outlived the killed node"
    );
    node.restart().await.unwrap();
    let again = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    // The durable-less queue is gone with the crash, the broker answers.
    assert!(again.status().connected());

    let (dir, port) = (node.dir().to_owned(), node.amqp_port());
    drop(node);
    assert!(!dir.exists());
    // Nothing of the node listens any more. Polled: on a loaded machine the
    // kernel may still be tearing the VM down when drop returns.
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed,
        "port {port} still answers after the node was dropped"
    );
}

#[tokio::test]
async fn rabbit_node_with_tls_serves_amqps() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    let node = RabbitNode::start(RabbitOptions::default().tls(&certs))
        .await
        .unwrap();
    let url = node.amqps_url().unwrap();
    assert!(url.starts_with("amqps://guest:guest@127.0.0.1:"));
    let port = node.amqps_port().unwrap();
    // An AMQP protocol header through TLS gets the broker's connection.start
    // (which names the product), i.e. TLS and AMQP both answer.
    let (ca, other) = (certs.ca.clone(), certs.other_ca.clone());
    let probe = move |ca: &std::path::Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("(printf 'AMQP\\0\\0\\t\\1'; sleep 1) | openssl s_client -quiet -no_ign_eof -verify_return_error -connect 127.0.0.1:$0 -CAfile $1")
            .arg(port.to_string())
            .arg(ca)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("RabbitMQ")
    };
    let (good, bad) = tokio::task::spawn_blocking(move || (probe(&ca), probe(&other)))
        .await
        .unwrap();
    assert!(good, "no AMQP connection.start through TLS");
    assert!(!bad, "TLS handshake passed trusting an unrelated CA");
}
