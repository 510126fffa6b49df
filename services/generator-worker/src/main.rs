//! generator-worker: consumes the generate stage and forwards generated code to
//! dispatch (or the task to the agent when generation fails).

use anyhow::Context as _;
use contexten_broker::Store;
use contexten_broker::service::{WorkerConfig, bind_health, run_service, shutdown_on_signal};
use contexten_config::Env;
use contexten_envelope::Stage;
use generator_worker::{GenerateHandler, GeneratorConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    let cfg = WorkerConfig::from_env(
        &env,
        "generator-worker",
        Stage::Generate,
        "127.0.0.1:9102",
        16,
    )
    .context("invalid configuration")?;
    let generator = GeneratorConfig::from_env(&env).context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    // Build info for `/metrics` and `/status`, and the broker round trip `/status` measures.
    contexten_telemetry::health::set_build_info(
        &cfg.telemetry.service_name,
        env!("CARGO_PKG_VERSION"),
    );
    contexten_telemetry::health::probe_broker(&cfg.broker);
    let store = Store::new(&cfg.redis, cfg.names())?;
    let handler = GenerateHandler::new(&generator, store.clone())?;
    if generator.llm.api_key.is_none() {
        tracing::warn!("LLM_API_KEY is unset: answering with context only");
    }
    let listener = bind_health(cfg.health_addr).await?;
    let shutdown = shutdown_on_signal();
    tokio::spawn(generator.disk_budget().keep_pruned(
        "generator_disk",
        contexten_cache::budget::PRUNE_EVERY,
        shutdown.clone(),
    ));
    run_service(&cfg, listener, store, handler, shutdown).await?;
    Ok(())
}
