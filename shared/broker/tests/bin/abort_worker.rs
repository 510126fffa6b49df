//! A worker whose handler aborts its process on a marked task, for the poison
//! message test (`tests/it/poison.rs`), which starts it again after each abort
//! as Kubernetes would. Every other task is forwarded to dispatch unchanged.
//! Reads the usual broker and Redis settings (`AMQP_URL`, `REDIS_URL`,
//! `CONTEXTEN_PREFIX`, `MAX_DELIVERIES`, …) and consumes the generate stage.

use contexten_broker::{Outcome, Store, WorkerOptions, run_worker, shutdown_on_signal};
use contexten_config::{BrokerSettings, Env, RedisSettings};
use contexten_envelope::{Names, Stage, TaskEnvelope};
use contexten_telemetry::health::Readiness;

/// A task whose request text contains this ends the worker's process.
pub const ABORT_MARK: &str = "[abort-worker: abort]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::from_process();
    let broker = BrokerSettings::from_env(&env, 1)?;
    let store = Store::new(
        &RedisSettings::from_env(&env)?,
        Names::new(broker.prefix.clone()),
    )?;
    let options = WorkerOptions {
        service: "abort-worker",
        stage: Stage::Generate,
        broker,
        readiness: Readiness::new(&["broker"]),
    };
    let handler = |envelope: TaskEnvelope| async move {
        if envelope.request.text.contains(ABORT_MARK) {
            std::process::abort();
        }
        Outcome::forward(Stage::Dispatch, envelope)
    };
    run_worker(options, store, handler, shutdown_on_signal()).await?;
    Ok(())
}
