//! `contexten`: the operator CLI (see the crate docs).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use contexten_broker::{Publisher, Store, connect};
use contexten_cli::{list_dead, purge_dead, queue_stats, redis_report, replay_dead, task_status};
use contexten_config::{BrokerSettings, Env, RedisSettings};
use contexten_envelope::{Names, Stage, TaskId};

#[derive(Parser)]
#[command(
    name = "contexten",
    about = "Operate a Contexten fleet (AMQP_URL, REDIS_URL, REDIS_RECORDS_URL, CONTEXTEN_PREFIX from the environment)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Messages ready and consumers per stage queue and dead queue.
    Queues,
    /// Dead letters: list, replay or purge.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
    /// A task's state, per-stage timings and history.
    Task { id: TaskId },
    /// Whether the records Redis (REDIS_RECORDS_URL) and the cache Redis
    /// (REDIS_URL) run with what their roles need; exits 1 on a warning.
    Redis,
    /// Ask GitHub to redeliver the webhook deliveries ingest could not accept
    /// (GitHub never retries a failed delivery by itself). Uses ingest's settings.
    GithubRedeliver(ingest::redeliver::cli::Args),
}

#[derive(Subcommand)]
enum DeadAction {
    /// List dead letters with their reasons (left in place).
    List {
        /// Only this stage (context, generate, agent, dispatch).
        #[arg(long)]
        stage: Option<Stage>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print each message's body too.
        #[arg(long)]
        body: bool,
    },
    /// Put dead letters back on their stage queue (all, or one message/task id).
    Replay {
        stage: Stage,
        /// A message id or task id; without it every dead letter of the stage is replayed.
        #[arg(long)]
        only: Option<String>,
    },
    /// Delete every dead letter of a stage.
    Purge { stage: Stage },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    let broker = BrokerSettings::from_env(&env, 1).context("invalid configuration")?;
    let names = Names::new(broker.prefix.clone());
    match cli.command {
        Command::GithubRedeliver(args) => {
            let cfg = ingest::IngestConfig::from_env(&env).context("invalid configuration")?;
            ingest::redeliver::cli::run(&cfg, &env, args).await?;
        }
        Command::Task { id } => {
            let store = Store::new(&RedisSettings::from_env(&env)?, names)?;
            match task_status(&store, id).await? {
                Some(status) => println!("{}", serde_json::to_string_pretty(&status)?),
                None => anyhow::bail!(
                    "no status record for task {id} (unknown, or older than its 7-day TTL)"
                ),
            }
        }
        Command::Redis => {
            let store = Store::new(&RedisSettings::from_env(&env)?, names)?;
            let reports = redis_report(&store)
                .await
                .context("reading the Redis settings")?;
            let mut warned = false;
            for r in &reports {
                let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
                println!(
                    "{:<8} policy={} appendonly={} maxmemory={} used_memory={}",
                    r.role,
                    shown(&r.policy),
                    shown(&r.appendonly),
                    shown(&r.maxmemory.map(|m| m.to_string())),
                    shown(&r.used_memory.map(|m| m.to_string())),
                );
                if r.policy.is_none() {
                    println!(
                        "  note: CONFIG GET is not allowed here; check the policy in the service's settings"
                    );
                }
                for warning in &r.warnings {
                    warned = true;
                    println!("  warning: {warning}");
                }
            }
            if reports.len() == 1 {
                println!(
                    "(records and caches share this Redis: REDIS_RECORDS_URL is unset or equal to REDIS_URL)"
                );
            }
            if warned {
                std::process::exit(1);
            }
        }
        Command::Queues => {
            let connection = connect(&broker, "contexten-cli")
                .await
                .context("connecting to AMQP_URL")?;
            let channel = connection.create_channel().await?;
            println!("{:<32} {:>8} {:>10}", "queue", "ready", "consumers");
            for q in queue_stats(&channel, &names)
                .await
                .context("are the queues declared? start a service first")?
            {
                println!("{:<32} {:>8} {:>10}", q.queue, q.ready, q.consumers);
            }
        }
        Command::Dead { action } => {
            let connection = connect(&broker, "contexten-cli")
                .await
                .context("connecting to AMQP_URL")?;
            let channel = connection.create_channel().await?;
            match action {
                DeadAction::List { stage, limit, body } => {
                    let stages = stage
                        .map(|s| vec![s])
                        .unwrap_or_else(|| Stage::QUEUED.to_vec());
                    for stage in stages {
                        for letter in list_dead(&channel, &names, stage, limit).await? {
                            println!("{}", letter.to_json(body));
                        }
                    }
                }
                DeadAction::Replay { stage, only } => {
                    let publisher =
                        Publisher::new(&connection, names.clone(), None, usize::MAX).await?;
                    let moved =
                        replay_dead(&channel, &publisher, &names, stage, only.as_deref()).await?;
                    println!(
                        "replayed {moved} dead letter(s) to {}",
                        names.stage_queue(stage)
                    );
                }
                DeadAction::Purge { stage } => {
                    let purged = purge_dead(&channel, &names, stage).await?;
                    println!(
                        "purged {purged} dead letter(s) from {}",
                        names.dead_queue(stage)
                    );
                }
            }
            let _ = connection.close(200, "done".into()).await;
        }
    }
    Ok(())
}
