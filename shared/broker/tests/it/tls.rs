//! `amqps://` and `rediss://` against a RabbitMQ node and a Redis the test
//! starts with TLS listeners and certificates it generates (README "TLS").

use contexten_broker::{BrokerError, Store, connect_with_tls};
use contexten_config::{BrokerSettings, Env, RedisSettings};
use contexten_envelope::Names;
use contexten_testkit::{RabbitNode, RabbitOptions, RedisNode, RedisOptions, TestCerts, tls_nodes};
use contexten_tls::TlsSettings;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

/// The settings `pairs` of the environment would give.
fn tls(pairs: &[(&str, &std::path::Path)]) -> TlsSettings {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(var, path)| (*var, path.to_str().unwrap()))
        .collect();
    TlsSettings::from_env(&Env::from_pairs(pairs)).unwrap()
}

fn broker_settings(url: &str) -> BrokerSettings {
    BrokerSettings::from_env(&Env::from_pairs([("AMQP_URL", url)]), 1).unwrap()
}

fn redis_settings(url: &str) -> RedisSettings {
    RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", url)])).unwrap()
}

fn names() -> Names {
    Names::new(format!("test-{}", uuid::Uuid::now_v7().simple()))
}

/// A message published over `connection` comes back from a queue of its own.
async fn round_trip(connection: &Connection) {
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.name().as_str().into(),
            BasicPublishOptions::default(),
            b"over tls",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        got = channel
            .basic_get(
                queue.name().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        got.expect("the message came back").delivery.data,
        b"over tls"
    );
}

/// A value written through the store's connection reads back.
async fn store_round_trip(store: &Store) -> Result<(), BrokerError> {
    let mut connection = store.connection().await?;
    let key = format!("{}:tls", store.names().prefix());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("over tls")
        .arg("EX")
        .arg(60)
        .query_async(&mut connection)
        .await
        .map_err(contexten_broker::redis_error)?;
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .map_err(contexten_broker::redis_error)?;
    assert_eq!(value, "over tls");
    Ok(())
}

#[tokio::test]
async fn amqps_and_rediss_with_the_ca_file_and_a_wrong_ca_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    let (rabbit, redis) = tls_nodes(&certs).await.unwrap();
    let amqps = broker_settings(&rabbit.amqps_url().unwrap());
    let rediss = redis_settings(&redis.tls_url().unwrap());

    let trusted = tls(&[("CONTEXTEN_CA_FILE", &certs.ca)]);
    let connection = connect_with_tls(&amqps, "tls-test", &trusted)
        .await
        .unwrap();
    round_trip(&connection).await;
    let store = Store::with_tls(&rediss, names(), &trusted).unwrap();
    store_round_trip(&store).await.unwrap();

    // Another CA: refused, and the error says which broker and which Redis.
    let wrong = tls(&[("CONTEXTEN_CA_FILE", &certs.other_ca)]);
    let error = connect_with_tls(&amqps, "tls-test", &wrong)
        .await
        .unwrap_err()
        .to_string();
    let host = format!("127.0.0.1:{}", rabbit.amqps_port().unwrap());
    assert!(error.contains(&host), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert!(!error.contains(":guest@"), "credentials in {error}");
    let store = Store::with_tls(&rediss, names(), &wrong).unwrap();
    let error = store_round_trip(&store).await.unwrap_err().to_string();
    let host = format!(
        "127.0.0.1:{}",
        redis.tls_url().unwrap().rsplit(':').next().unwrap()
    );
    assert!(error.contains(&host), "{error}");

    // No CA file: the test CA is in no platform store.
    let error = connect_with_tls(&amqps, "tls-test", &TlsSettings::none())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_rabbitmq_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    let (rabbit, redis) = tokio::join!(
        RabbitNode::start(
            RabbitOptions::default()
                .tls(&certs)
                .fail_if_no_peer_cert(true)
        ),
        RedisNode::start(RedisOptions::default().tls(&certs).tls_auth_clients("yes")),
    );
    let (rabbit, redis) = (rabbit.unwrap(), redis.unwrap());
    let amqps = broker_settings(&rabbit.amqps_url().unwrap());
    let rediss = redis_settings(&redis.tls_url().unwrap());

    // Both servers refuse a client without a certificate...
    let ca_only = tls(&[("CONTEXTEN_CA_FILE", &certs.ca)]);
    assert!(
        connect_with_tls(&amqps, "tls-test", &ca_only)
            .await
            .is_err()
    );
    let store = Store::with_tls(&rediss, names(), &ca_only).unwrap();
    assert!(store_round_trip(&store).await.is_err());

    // ...and accept the test CA's client certificate.
    let with_cert = tls(&[
        ("CONTEXTEN_CA_FILE", &certs.ca),
        ("CONTEXTEN_CLIENT_CERT_FILE", &certs.client_cert),
        ("CONTEXTEN_CLIENT_KEY_FILE", &certs.client_key),
    ]);
    assert!(with_cert.has_client_certificate());
    let connection = connect_with_tls(&amqps, "tls-test", &with_cert)
        .await
        .unwrap();
    round_trip(&connection).await;
    let store = Store::with_tls(&rediss, names(), &with_cert).unwrap();
    store_round_trip(&store).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}

#[test]
fn an_unsupported_scheme_is_a_start_up_error_naming_the_variable() {
    let error = BrokerSettings::from_env(
        &Env::from_pairs([("AMQP_URL", "https://user:s3cret@broker.example/")]),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("AMQP_URL"), "{error}");
    assert!(error.contains("amqp or amqps"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    let error =
        RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", "memcached://cache:11211")]))
            .unwrap_err()
            .to_string();
    assert!(error.contains("REDIS_URL"), "{error}");
    assert!(error.contains("redis or rediss"), "{error}");
}
