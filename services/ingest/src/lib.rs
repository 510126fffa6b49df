//! ingest: the fleet's front door. This build declares the topology, keeps a
//! confirmed publisher ready and serves `/healthz`, `/readyz` and `/metrics` on
//! `INGEST_ADDR`; the webhook routes and the `/v1` API arrive with issue 4.

use contexten_broker::{BrokerError, CancellationToken, Publisher, Store, connect, topology};
use contexten_config::{
    BrokerSettings, ConfigError, Env, RedisSettings, TelemetrySettings, socket_addr,
};
use contexten_envelope::Names;
use contexten_telemetry::health::{self, Readiness};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::RwLock;

/// ingest's settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `INGEST_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    pub broker: BrokerSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
}

impl IngestConfig {
    /// Reads the settings from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(IngestConfig {
            addr: socket_addr(env, "INGEST_ADDR", "127.0.0.1:8080")?,
            broker: BrokerSettings::from_env(env, 1)?,
            redis: RedisSettings::from_env(env)?,
            telemetry: TelemetrySettings::from_env(env, "ingest")?,
        })
    }
}

/// The publisher of the current broker session, absent while reconnecting.
pub type SharedPublisher = Arc<RwLock<Option<Publisher>>>;

/// Serves ingest on `listener` until `shutdown`.
pub async fn serve(
    cfg: IngestConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let names = Names::new(cfg.broker.prefix.clone());
    let store = Store::new(&cfg.redis, names.clone())?;
    let readiness = Readiness::new(&["broker", "redis"]);
    let publisher: SharedPublisher = Arc::default();
    tokio::spawn(
        store
            .clone()
            .watch_health(readiness.clone(), shutdown.clone()),
    );
    tokio::spawn(keep_publisher(
        cfg.clone(),
        names,
        store,
        publisher,
        readiness.clone(),
        shutdown.clone(),
    ));
    tracing::info!(addr = %cfg.addr, "ingest listening");
    axum::serve(listener, health::router(readiness))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|source| BrokerError::Listen {
            addr: cfg.addr,
            source,
        })
}

/// Keeps one broker connection with the topology declared and a publisher open,
/// reconnecting with backoff when it drops.
async fn keep_publisher(
    cfg: IngestConfig,
    names: Names,
    store: Store,
    slot: SharedPublisher,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let session = async {
            let connection = connect(&cfg.broker, "ingest").await?;
            let channel = connection.create_channel().await?;
            topology::declare(&channel, &names, &cfg.broker.retry_tiers).await?;
            let publisher = Publisher::new(
                &connection,
                names.clone(),
                Some(store.clone()),
                cfg.broker.payload_inline_limit,
            )
            .await?;
            Ok::<_, BrokerError>((connection, channel, publisher))
        };
        match session.await {
            Ok((connection, channel, publisher)) => {
                *slot.write().await = Some(publisher);
                readiness.set("broker", true, "connected");
                // The declare channel stays open only to notice the connection dropping.
                while connection.status().connected() && channel.status().connected() {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
                *slot.write().await = None;
                readiness.set("broker", false, "reconnecting");
                let _ = connection.close(200, "bye".into()).await;
            }
            Err(error) => {
                readiness.set("broker", false, error.to_string());
                tracing::warn!(%error, "broker unreachable");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
