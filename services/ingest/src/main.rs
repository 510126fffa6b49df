//! ingest: receives requests and publishes tasks (see the crate docs).

use anyhow::Context as _;
use contexten_broker::shutdown_on_signal;
use contexten_config::Env;
use ingest::IngestConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = IngestConfig::from_env(&Env::from_process()).context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("cannot listen on INGEST_ADDR={}", cfg.addr))?;
    ingest::serve(cfg, listener, shutdown_on_signal()).await?;
    Ok(())
}
