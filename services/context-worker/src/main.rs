//! context-worker: runs the context stage, or, with a subcommand, codemap on the
//! command line (`query`, `summary`, `prompt`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use context_worker::{ContextConfig, ContextHandler, DEFAULT_HISTORY_DEPTH, PullsApi};
use contexten_broker::Store;
use contexten_broker::service::{bind_health, run_service, shutdown_on_signal};
use contexten_codemap::{
    CodeMap, Engine, EngineConfig, GitToken, Query, RankParams, RankedFile, RepoSource,
};
use contexten_config::{Env, ExposeSecret};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "context-worker",
    about = "The context stage; with a subcommand, codemap on the command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args)]
struct RepoArgs {
    /// A local path or a git URL.
    #[arg(long)]
    repo: String,
    /// The ref to read (git URLs).
    #[arg(long = "ref")]
    reference: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Rank the files a request is about: `[{"path","score","symbols","reasons"}]`, best first.
    Query {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(
            long,
            conflicts_with = "query_file",
            required_unless_present = "query_file"
        )]
        query: Option<String>,
        #[arg(long)]
        query_file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// Print JSON (otherwise a table).
        #[arg(long)]
        json: bool,
    },
    /// The codebase summary: languages, modules, entry points, central symbols.
    Summary {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The prompt the context stage would assemble for a request.
    Prompt {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        query: String,
        #[arg(long, default_value_t = 6000)]
        budget: usize,
        #[arg(long, default_value = "gpt-4.1")]
        model: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::from_process();
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).context("invalid TLS configuration")?;
    match cli.command {
        None => run_worker(&env).await,
        Some(command) => tokio::task::spawn_blocking(move || run_command(command, &env)).await?,
    }
}

async fn run_worker(env: &Env) -> anyhow::Result<()> {
    let cfg = ContextConfig::from_env(env).context("invalid configuration")?;
    let _telemetry = contexten_telemetry::init(&cfg.worker.telemetry)?;
    // Build info for `/metrics` and `/status`, and the broker round trip `/status` measures.
    contexten_telemetry::health::set_build_info(
        &cfg.worker.telemetry.service_name,
        env!("CARGO_PKG_VERSION"),
    );
    contexten_telemetry::health::probe_broker(&cfg.worker.broker);
    let store = Store::new(&cfg.worker.redis, cfg.worker.names())?;
    let handler = ContextHandler::new(cfg.engine(), &cfg)
        .with_pulls_api(PullsApi::new(&cfg.github_api_url, cfg.github_token.clone()));
    let listener = bind_health(cfg.worker.health_addr).await?;
    let shutdown = shutdown_on_signal();
    tokio::spawn(cfg.disk_budget().keep_pruned(
        "codemap_disk",
        contexten_cache::budget::PRUNE_EVERY,
        shutdown.clone(),
    ));
    run_service(&cfg.worker, listener, store, handler, shutdown).await?;
    Ok(())
}

/// The command line always reads local paths: the person running it chose them.
fn run_command(command: Command, env: &Env) -> anyhow::Result<()> {
    let progress: contexten_codemap::ProgressFn = Arc::new(|p: contexten_codemap::Progress| {
        if p.total >= 200 && (p.done.is_multiple_of(100) || p.done == p.total) {
            eprint!("\ranalysing {}/{} files", p.done, p.total);
            if p.done == p.total {
                eprintln!();
            }
        }
    });
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(std::env::temp_dir().join("contexten/cli-cache")),
        allow_local: true,
        github_token: env
            .secret_value("GITHUB_TOKEN")?
            .map(|t| GitToken::new(t.expose_secret())),
        progress: Some(progress),
        // As the worker reads it: similar past commits, co-changes, churn.
        history_depth: DEFAULT_HISTORY_DEPTH,
        ..EngineConfig::default()
    });
    let analyse = |repo: &RepoArgs| {
        engine
            .analyse(&RepoSource::parse(&repo.repo, repo.reference.as_deref()))
            .with_context(|| format!("analysing {}", repo.repo))
    };
    // The map and its history (none for a plain directory), ranked as the worker ranks.
    let rank = |repo: &RepoArgs, query: Query| -> anyhow::Result<(Arc<CodeMap>, Vec<RankedFile>)> {
        let src = RepoSource::parse(&repo.repo, repo.reference.as_deref());
        let (map, commit) = engine
            .analyse_revision(&src, Vec::new())
            .with_context(|| format!("analysing {}", repo.repo))?;
        let history = match commit {
            Some(c) => engine
                .history(&src, &c)
                .with_context(|| format!("reading the history of {}", repo.repo))?,
            None => None,
        };
        let ranked = map.query_history(&query, &RankParams::default(), history.as_deref());
        Ok((map, ranked))
    };
    match command {
        Command::Query {
            repo,
            query,
            query_file,
            top_k,
            json,
        } => {
            let text = match (query, query_file) {
                (Some(q), _) => q,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?,
                (None, None) => anyhow::bail!("give --query or --query-file"),
            };
            let (_, ranked) = rank(&repo, Query::new(text, top_k))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ranked)?);
            } else {
                for file in &ranked {
                    let symbols: Vec<&str> = file
                        .symbols
                        .iter()
                        .take(4)
                        .map(|s| s.name.as_str())
                        .collect();
                    println!(
                        "{:>7.3}  {:<50} {}",
                        file.score,
                        file.path,
                        symbols.join(", ")
                    );
                    for reason in &file.reasons {
                        println!("         · {reason}");
                    }
                }
            }
        }
        Command::Summary { repo } => {
            let map = analyse(&repo)?;
            println!("{}", map.summary_text());
        }
        Command::Prompt {
            repo,
            query,
            budget,
            model,
        } => {
            let (map, ranked) = rank(&repo, Query::new(query.clone(), 10))?;
            let prompt = map.assemble_prompt(&query, &ranked, budget, &model);
            eprintln!(
                "{} tokens of {budget} ({}), redacted: {:?}",
                prompt.tokens, prompt.encoding, prompt.redactions
            );
            println!("{}", prompt.text);
        }
    }
    Ok(())
}
