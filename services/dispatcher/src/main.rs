//! dispatcher: consumes the dispatch stage and delivers each answer.

use anyhow::Context as _;
use contexten_broker::Store;
use contexten_broker::service::{WorkerConfig, bind_health, run_service, shutdown_on_signal};
use contexten_config::Env;
use contexten_envelope::Stage;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = WorkerConfig::from_env(
        &Env::from_process(),
        "dispatcher",
        Stage::Dispatch,
        "127.0.0.1:9104",
        32,
    )
    .context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    let store = Store::new(&cfg.redis, cfg.names())?;
    let listener = bind_health(cfg.health_addr).await?;
    run_service(
        &cfg,
        listener,
        store,
        dispatcher::handle,
        shutdown_on_signal(),
    )
    .await?;
    Ok(())
}
