//! What every worker binary does besides its handler: read the shared settings,
//! serve health and metrics, watch Redis, run the consumer, stop on SIGTERM.

use crate::{BrokerError, Handler, Store, WorkerOptions, run_worker};
use contexten_config::{
    BrokerSettings, ConfigError, Env, RedisSettings, TelemetrySettings, socket_addr,
};
use contexten_envelope::{Names, Stage};
use contexten_telemetry::health::{self, Readiness};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The settings of a worker binary.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub service: &'static str,
    pub stage: Stage,
    pub broker: BrokerSettings,
    pub redis: RedisSettings,
    /// `HEALTH_ADDR`: `/healthz`, `/readyz`, `/metrics`.
    pub health_addr: SocketAddr,
    pub telemetry: TelemetrySettings,
}

impl WorkerConfig {
    /// Reads the shared settings with this service's defaults.
    pub fn from_env(
        env: &Env,
        service: &'static str,
        stage: Stage,
        default_health_addr: &str,
        default_prefetch: u16,
    ) -> Result<Self, ConfigError> {
        Ok(WorkerConfig {
            service,
            stage,
            broker: BrokerSettings::from_env(env, default_prefetch)?,
            redis: RedisSettings::from_env(env)?,
            health_addr: socket_addr(env, "HEALTH_ADDR", default_health_addr)?,
            telemetry: TelemetrySettings::from_env(env, service)?,
        })
    }

    /// The names under this worker's prefix.
    pub fn names(&self) -> Names {
        Names::new(self.broker.prefix.clone())
    }
}

/// Runs a worker until `shutdown`: health server on `listener`, Redis watch and
/// the consumer. Tests pass a listener on port 0 and their own token.
pub async fn run_service<H: Handler>(
    cfg: &WorkerConfig,
    listener: TcpListener,
    store: Store,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let readiness = Readiness::new(&["broker", "redis"]);
    let health_stop = CancellationToken::new();
    let stop = health_stop.clone();
    let server = tokio::spawn(health::serve(listener, readiness.clone(), async move {
        stop.cancelled().await
    }));
    tokio::spawn(
        store
            .clone()
            .watch_health(readiness.clone(), health_stop.clone()),
    );
    tracing::info!(addr = %cfg.health_addr, stage = %cfg.stage, "worker starting");
    let options = WorkerOptions {
        service: cfg.service,
        stage: cfg.stage,
        broker: cfg.broker.clone(),
        readiness,
    };
    let result = run_worker(options, store, handler, shutdown).await;
    health_stop.cancel();
    let _ = server.await;
    tracing::info!("worker stopped");
    result
}

/// Binds the health listener, naming the variable when it fails.
pub async fn bind_health(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Listen { addr, source })
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
