//! context-worker: consumes the context stage and forwards each task by its strategy.

use anyhow::Context as _;
use contexten_broker::Store;
use contexten_broker::service::{WorkerConfig, bind_health, run_service, shutdown_on_signal};
use contexten_config::Env;
use contexten_envelope::Stage;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = WorkerConfig::from_env(
        &Env::from_process(),
        "context-worker",
        Stage::Context,
        "127.0.0.1:9101",
        8,
    )
    .context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    let store = Store::new(&cfg.redis, cfg.names())?;
    let listener = bind_health(cfg.health_addr).await?;
    run_service(
        &cfg,
        listener,
        store,
        context_worker::handle,
        shutdown_on_signal(),
    )
    .await?;
    Ok(())
}
