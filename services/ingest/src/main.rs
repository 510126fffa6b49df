//! ingest: serves webhooks and the /v1 API (default), or asks GitHub to
//! redeliver failed webhook deliveries (`redeliver-failed`). See the crate docs.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use contexten_broker::shutdown_on_signal;
use contexten_config::Env;
use ingest::{IngestConfig, redeliver};

// glibc malloc (arena locks, consolidation) was about 15 % of ingest's CPU at
// saturation in `perf`; mimalloc is the allocator the load bench measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ingest", about = "Contexten's front door")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve webhooks and the /v1 API on INGEST_ADDR (the default).
    Serve,
    /// Ask GitHub to redeliver the hook's failed deliveries of the last window.
    RedeliverFailed(redeliver::cli::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    let cfg = IngestConfig::from_env(&env).context("invalid configuration")?;
    // The runtime's size is a setting (INGEST_WORKER_THREADS), so it is built
    // after the configuration is read.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(cli, env, cfg))
}

async fn run(cli: Cli, env: Env, cfg: IngestConfig) -> anyhow::Result<()> {
    let _telemetry = contexten_telemetry::init(&cfg.telemetry)?;
    // Build info for `/metrics` and `/status`, and the broker round trip `/status` measures.
    contexten_telemetry::health::set_build_info(
        &cfg.telemetry.service_name,
        env!("CARGO_PKG_VERSION"),
    );
    contexten_telemetry::health::probe_broker(&cfg.broker);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(cfg.addr)
                .await
                .with_context(|| format!("cannot listen on INGEST_ADDR={}", cfg.addr))?;
            ingest::serve(cfg, listener, shutdown_on_signal()).await?;
        }
        Command::RedeliverFailed(args) => redeliver::cli::run(&cfg, &env, args).await?,
    }
    Ok(())
}
