//! agent-worker: consumes the agent stage, drives Codegen agent runs and
//! forwards their answers to dispatch.

use agent_worker::{AgentHandler, AgentSettings};
use anyhow::Context as _;
use contexten_broker::Store;
use contexten_broker::service::{WorkerConfig, bind_health, run_service, shutdown_on_signal};
use contexten_config::Env;
use contexten_envelope::Stage;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    let cfg = WorkerConfig::from_env(&env, "agent-worker", Stage::Agent, "127.0.0.1:9103", 16)
        .context("invalid configuration")?;
    let settings = AgentSettings::from_env(&env).context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    // Build info for `/metrics` and `/status`, and the broker round trip `/status` measures.
    contexten_telemetry::health::set_build_info(
        &cfg.telemetry.service_name,
        env!("CARGO_PKG_VERSION"),
    );
    contexten_telemetry::health::probe_broker(&cfg.broker);
    let store = Store::new(&cfg.redis, cfg.names())?;
    let handler = AgentHandler::new(&settings, store.clone()).context("codegen client")?;
    if !handler.is_configured() {
        tracing::warn!(
            "CODEGEN_ORG_ID and CODEGEN_API_TOKEN are unset: agent tasks get a failure answer"
        );
    }
    let listener = bind_health(cfg.health_addr).await?;
    run_service(&cfg, listener, store, handler, shutdown_on_signal()).await?;
    Ok(())
}
