//! dispatcher: consumes the dispatch stage and posts each answer where the
//! request came from.

use anyhow::Context as _;
use contexten_broker::Store;
use contexten_broker::service::{bind_health, run_service, shutdown_on_signal};
use contexten_config::Env;
use dispatcher::{DispatchHandler, DispatcherConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    let cfg = DispatcherConfig::from_env(&env).context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.worker.telemetry)?;
    // Build info for `/metrics` and `/status`, and the broker round trip `/status` measures.
    contexten_telemetry::health::set_build_info(
        &cfg.worker.telemetry.service_name,
        env!("CARGO_PKG_VERSION"),
    );
    contexten_telemetry::health::probe_broker(&cfg.worker.broker);
    let store = Store::new(&cfg.worker.redis, cfg.worker.names())?;
    let handler = DispatchHandler::new(&cfg.providers, store.clone())
        .context("while building the clients")?;
    let listener = bind_health(cfg.worker.health_addr).await?;
    run_service(&cfg.worker, listener, store, handler, shutdown_on_signal()).await?;
    Ok(())
}
