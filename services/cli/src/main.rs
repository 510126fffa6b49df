//! `contexten`: the operator CLI (see the crate docs and README "The operator CLI").

use clap::{Args, Parser, Subcommand};
use contexten_broker::{Publisher, Store, connect};
use contexten_cli::error::EXIT_CODES_HELP;
use contexten_cli::output::{self, ActionReport, Format};
use contexten_cli::{
    CliError, DeadAction, DeadFilter, DeadLetter, ExitCode, dead_letters, parse_age, queue_stats,
    redis_report, task_status,
};
use contexten_config::{BrokerSettings, Env, ExposeSecret, RedisSettings};
use contexten_envelope::{Names, Stage, TaskId, now_ms};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "contexten",
    version,
    about = "Operate a Contexten fleet: queues, dead letters, tasks, Redis roles",
    long_about = "Operate a Contexten fleet: queues, dead letters, tasks, Redis roles.\n\n\
        Settings come from the flags or, when a flag is not given, from the environment \
        (AMQP_URL, REDIS_URL, REDIS_RECORDS_URL, CONTEXTEN_PREFIX, CONTEXTEN_OUTPUT, \
        CONTEXTEN_CA_FILE for TLS). `--output json` prints one JSON document per command \
        (README \"The operator CLI\" has each shape); a failure then prints \
        {\"error\": {\"exit_code\", \"kind\", \"message\"}}.",
    after_help = EXIT_CODES_HELP,
)]
struct Cli {
    /// How to print the result: a table for people, one JSON document for scripts.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        env = "CONTEXTEN_OUTPUT",
        default_value = "table"
    )]
    output: Format,
    /// The broker (amqp:// or amqps://) [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// The cache Redis [default: redis://127.0.0.1:6379].
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// The records Redis (task status) [default: --redis-url].
    #[arg(long, global = true, env = "REDIS_RECORDS_URL", hide_env_values = true)]
    redis_records_url: Option<String>,
    /// The fleet's queue and key prefix [default: contexten].
    #[arg(long, global = true, env = "CONTEXTEN_PREFIX")]
    prefix: Option<String>,
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
        action: DeadCommand,
    },
    /// A task's state, per-stage timings and history (exit 3 when unknown).
    Task { id: TaskId },
    /// Whether the records Redis (REDIS_RECORDS_URL) and the cache Redis
    /// (REDIS_URL) run with what their roles need; exits 7 on a warning.
    Redis,
    /// Ask GitHub to redeliver the webhook deliveries ingest could not accept
    /// (GitHub never retries a failed delivery by itself). Uses ingest's settings.
    GithubRedeliver(ingest::redeliver::cli::Args),
}

/// Which dead letters: every filter given must match.
#[derive(Args)]
struct Select {
    /// Only this stage (context, generate, agent, dispatch); default all four.
    #[arg(long)]
    stage: Option<Stage>,
    /// Only this reason code (e.g. retries_exhausted, poison, invalid_request).
    #[arg(long)]
    reason: Option<String>,
    /// Only letters dead-lettered at least this long ago: 90s, 10m, 2h, 3d.
    #[arg(long, value_parser = parse_age, value_name = "AGE")]
    older_than: Option<Duration>,
    /// Only this task's letters (exit 3 when none).
    #[arg(long)]
    task: Option<String>,
    /// Only the letter with this message id (exit 3 when none).
    #[arg(long)]
    message_id: Option<String>,
}

impl Select {
    fn stages(&self) -> Vec<Stage> {
        self.stage
            .map(|s| vec![s])
            .unwrap_or_else(|| Stage::QUEUED.to_vec())
    }

    fn filter(&self) -> DeadFilter {
        DeadFilter {
            reason: self.reason.clone(),
            older_than: self.older_than,
            task: self.task.clone(),
            message_id: self.message_id.clone(),
        }
    }
}

/// How a replay or purge is allowed to go ahead.
#[derive(Args)]
struct Confirm {
    /// List what would be touched (count and ids) and touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Go ahead without asking. Required when stdin is not a terminal.
    #[arg(long, short)]
    yes: bool,
}

#[derive(Subcommand)]
enum DeadCommand {
    /// List dead letters with their reasons and ages (left in place).
    List {
        #[command(flatten)]
        select: Select,
        /// At most this many per stage.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print each message's body too.
        #[arg(long)]
        body: bool,
    },
    /// Put dead letters back on their stage's work queue (attempts reset,
    /// operator priority) after a confirmation stating how many.
    Replay {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Delete dead letters for good after a confirmation stating how many.
    Purge {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// What a command printed, and how the process ends after printing it.
struct Done {
    json: Value,
    table: String,
    then: Result<(), CliError>,
}

impl Done {
    fn ok(json: Value, table: String) -> Self {
        Done {
            json,
            table,
            then: Ok(()),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let format = cli.output;
    let code = match run(cli).await {
        Ok(done) => {
            match format {
                Format::Json => println!("{}", done.json),
                Format::Table => print!("{}", done.table),
            }
            match done.then {
                Ok(()) => ExitCode::Ok,
                Err(error) => {
                    eprintln!("contexten: {error}");
                    error.exit_code()
                }
            }
        }
        Err(error) => {
            if format == Format::Json {
                println!("{}", output::error_json(&error));
            }
            eprintln!("contexten: {}", chain(&error));
            error.exit_code()
        }
    };
    std::process::ExitCode::from(code.code())
}

/// The error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The process environment with the flags laid over it.
fn settings(cli: &Cli) -> Env {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    for (var, value) in [
        ("AMQP_URL", &cli.amqp_url),
        ("REDIS_URL", &cli.redis_url),
        ("REDIS_RECORDS_URL", &cli.redis_records_url),
        ("CONTEXTEN_PREFIX", &cli.prefix),
    ] {
        if let Some(value) = value {
            vars.insert(var.to_owned(), value.clone());
        }
    }
    Env::from_pairs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn usage(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("invalid settings: {error}"))
}

async fn run(cli: Cli) -> Result<Done, CliError> {
    let env = settings(&cli);
    // First: the crypto provider before any client, and an unusable CA or client
    // certificate file is a start-up error (crate contexten-tls).
    contexten_tls::init(&env).map_err(usage)?;
    let broker = BrokerSettings::from_env(&env, 1).map_err(usage)?;
    let names = Names::new(broker.prefix.clone());
    match cli.command {
        Command::GithubRedeliver(args) => github_redeliver(&env, args).await,
        Command::Task { id } => {
            let store = redis_store(&env, names).await?;
            match task_status(&store, id).await.map_err(CliError::on_redis)? {
                Some(status) => Ok(Done::ok(
                    output::task_json(&id.to_string(), &status),
                    output::task_table(&id.to_string(), &status),
                )),
                None => Err(CliError::NotFound(format!(
                    "no status record for task {id} (unknown, or older than its 7-day TTL)"
                ))),
            }
        }
        Command::Redis => {
            let store = redis_store(&env, names).await?;
            if !store.shared() {
                store
                    .cache()
                    .connection()
                    .await
                    .map_err(CliError::RedisUnreachable)?;
            }
            let reports = redis_report(&store).await.map_err(CliError::on_redis)?;
            let warnings = reports.iter().map(|r| r.warnings.len()).sum::<usize>();
            Ok(Done {
                json: output::redis_json(&reports),
                table: output::redis_table(&reports),
                then: if warnings == 0 {
                    Ok(())
                } else {
                    Err(CliError::CheckFailed(format!(
                        "{warnings} warning(s): a Redis role runs without what it needs"
                    )))
                },
            })
        }
        Command::Queues => {
            let connection = connect(&broker, "contexten-cli")
                .await
                .map_err(CliError::connecting)?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| CliError::on_broker(e.into(), "queues"))?;
            let stats = queue_stats(&channel, &names, broker.queue_type)
                .await
                .map_err(|e| CliError::on_broker(e, "queues"))?;
            let _ = connection.close(200, "done".into()).await;
            Ok(Done::ok(
                output::queues_json(&stats),
                output::queues_table(&stats),
            ))
        }
        Command::Dead { action } => {
            let connection = connect(&broker, "contexten-cli")
                .await
                .map_err(CliError::connecting)?;
            // The records Redis, for a replay to reopen the stage's
            // dead-lettered completion mark (contexten_operations::DeadAction);
            // connected on first use, so list and purge never need it.
            let records = RedisSettings::from_env(&env)
                .ok()
                .and_then(|settings| Store::new(&settings, names.clone()).ok());
            let done = dead(&connection, &names, records.as_ref(), action).await;
            let _ = connection.close(200, "done".into()).await;
            done
        }
    }
}

/// A store whose records Redis answers (else "Redis unreachable").
async fn redis_store(env: &Env, names: Names) -> Result<Store, CliError> {
    let settings = RedisSettings::from_env(env).map_err(usage)?;
    let store = Store::new(&settings, names).map_err(|e| CliError::Usage(e.to_string()))?;
    store
        .connection()
        .await
        .map_err(CliError::RedisUnreachable)?;
    Ok(store)
}

async fn dead(
    connection: &lapin::Connection,
    names: &Names,
    records: Option<&Store>,
    action: DeadCommand,
) -> Result<Done, CliError> {
    let on_broker = |e| CliError::on_broker(e, "dead letters");
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| on_broker(e.into()))?;
    let (select, confirm, replay) = match action {
        DeadCommand::List {
            select,
            limit,
            body,
        } => {
            let mut letters = Vec::new();
            for stage in select.stages() {
                let seen = dead_letters(
                    &channel,
                    names,
                    stage,
                    &select.filter(),
                    limit,
                    DeadAction::Look,
                )
                .await
                .map_err(on_broker)?;
                letters.extend(seen.done);
            }
            if letters.is_empty() && select.filter().names_one() {
                return Err(not_found(&select));
            }
            return Ok(Done::ok(
                output::dead_list_json(&letters, body),
                output::dead_list_table(&letters, body),
            ));
        }
        DeadCommand::Replay { select, confirm } => (select, confirm, true),
        DeadCommand::Purge { select, confirm } => (select, confirm, false),
    };
    let filter = select.filter();
    let stages = select.stages();
    // First what matches, touching nothing: the dry run's answer, and the
    // count the confirmation states.
    let mut matched: Vec<DeadLetter> = Vec::new();
    for &stage in &stages {
        let seen = dead_letters(
            &channel,
            names,
            stage,
            &filter,
            usize::MAX,
            DeadAction::Look,
        )
        .await
        .map_err(on_broker)?;
        matched.extend(seen.done);
    }
    if matched.is_empty() && filter.names_one() {
        return Err(not_found(&select));
    }
    let mut report = ActionReport {
        action: if replay { "replay" } else { "purge" },
        dry_run: confirm.dry_run,
        matched: matched.len(),
        done: Vec::new(),
        failed: Vec::new(),
    };
    if confirm.dry_run || matched.is_empty() {
        report.done = matched;
        return Ok(Done::ok(report.to_json(), report.to_table()));
    }
    let per_stage = |stage: Stage| matched.iter().filter(|l| l.stage == stage).count();
    if !confirm.yes {
        let queues: Vec<String> = stages
            .iter()
            .filter(|&&s| per_stage(s) > 0)
            .map(|&s| format!("{} ({})", names.dead_queue(s), per_stage(s)))
            .collect();
        let question = if replay {
            format!(
                "Replay {} dead letter(s) from {} to their work queues?",
                matched.len(),
                queues.join(", ")
            )
        } else {
            format!(
                "Delete {} dead letter(s) from {} for good?",
                matched.len(),
                queues.join(", ")
            )
        };
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "{question} Not asked: stdin is not a terminal; pass --yes to go ahead (or --dry-run to look)"
            )));
        }
        if !output::confirm(
            &question,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        ) {
            return Err(CliError::Declined);
        }
    }
    let publisher = if replay {
        Some(
            Publisher::new(connection, names.clone(), None, usize::MAX)
                .await
                .map_err(on_broker)?,
        )
    } else {
        None
    };
    let action = match (&publisher, records) {
        (Some(publisher), Some(records)) => DeadAction::ReplayReopening(publisher, records),
        (Some(publisher), None) => DeadAction::Replay(publisher),
        (None, _) => DeadAction::Purge,
    };
    // At most the count confirmed per stage: letters dead-lettered since the
    // question wait at the queue's tail and are left for the next run.
    for &stage in &stages {
        let limit = per_stage(stage);
        if limit == 0 {
            continue;
        }
        let touched = dead_letters(&channel, names, stage, &filter, limit, action)
            .await
            .map_err(on_broker)?;
        report.done.extend(touched.done);
        report.failed.extend(touched.failed);
    }
    let then = match (report.done.len(), report.failed.len()) {
        (_, 0) => Ok(()),
        (0, failed) => Err(CliError::Other(format!(
            "none of {failed} dead letter(s) were replayed (see the output)"
        ))),
        (_, failed) => Err(CliError::Partial {
            matched: report.matched,
            failed,
        }),
    };
    Ok(Done {
        json: report.to_json(),
        table: report.to_table(),
        then,
    })
}

fn not_found(select: &Select) -> CliError {
    let what = match (&select.task, &select.message_id) {
        (Some(task), _) => format!("task {task}"),
        (_, Some(id)) => format!("message {id}"),
        _ => "the filters".into(),
    };
    CliError::NotFound(format!("no dead letter matches {what}"))
}

/// `contexten github-redeliver`: ingest's redelivery, printed like every command.
async fn github_redeliver(env: &Env, args: ingest::redeliver::cli::Args) -> Result<Done, CliError> {
    use ingest::redeliver::{Hook, HookClient, app_jwt, parse_since};
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    let cfg = ingest::IngestConfig::from_env(env).map_err(usage)?;
    let since = parse_since(&args.since).map_err(|e| CliError::Usage(e.to_string()))?;
    let base = env
        .url(
            "GITHUB_API_URL",
            "https://api.github.com",
            &["http", "https"],
        )
        .map_err(usage)?;
    let now = now_ms() / 1000;
    let hook = match (args.repo, args.hook_id) {
        (Some(repo), Some(hook_id)) => Hook::Repo {
            repo,
            hook_id,
            token: env
                .secret_value("GITHUB_TOKEN")
                .map_err(usage)?
                .ok_or_else(|| {
                    CliError::Usage(
                        "GITHUB_TOKEN (or GITHUB_TOKEN_FILE) is required for a repository hook"
                            .into(),
                    )
                })?,
        },
        _ => {
            let missing = || {
                CliError::Usage("GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY are required for the App hook (or pass --repo and --hook-id)".into())
            };
            let app_id = env.raw("GITHUB_APP_ID").ok_or_else(missing)?;
            let key = env
                .secret_value("GITHUB_APP_PRIVATE_KEY")
                .map_err(usage)?
                .ok_or_else(missing)?;
            // The key may be given inline (PEM) or as a path to a mounted file.
            let pem = if key.expose_secret().contains("-----BEGIN") {
                key.expose_secret().to_owned()
            } else {
                std::fs::read_to_string(key.expose_secret()).map_err(|e| {
                    CliError::Usage(format!(
                        "reading GITHUB_APP_PRIVATE_KEY as a file path: {e}"
                    ))
                })?
            };
            Hook::App {
                jwt: app_jwt(app_id, &pem, now).map_err(|e| other(&e))?,
            }
        }
    };
    let store = Store::new(&cfg.redis, Names::new(cfg.broker.prefix.clone()))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let since_ms = now_ms().saturating_sub(since.as_millis() as u64);
    let mut notes = Vec::new();
    let recorded = match ingest::failed::list(&store, &cfg.failed_deliveries_file, since_ms).await {
        Ok(recorded) => recorded,
        Err(error) => {
            notes.push(format!(
                "recorded refusals unreadable ({error}); using GitHub's list only"
            ));
            Vec::new()
        }
    };
    let client = HookClient::new(base.as_str(), hook).map_err(|e| other(&e))?;
    let report = ingest::redeliver::run(&client, since, now, args.dry_run)
        .await
        .map_err(|e| other(&e))?;
    let cleared: Vec<_> = recorded
        .iter()
        .filter(|r| report.redelivered.contains(&r.guid))
        .cloned()
        .collect();
    if let Err(error) = ingest::failed::forget(&store, &cfg.failed_deliveries_file, &cleared).await
    {
        notes.push(format!("could not clear the redelivered records: {error}"));
    }
    let failed: Vec<Value> = report
        .failed
        .iter()
        .map(|(guid, id)| {
            json!({
                "guid": guid,
                "delivery_id": id,
                "redelivered": report.redelivered.contains(guid),
            })
        })
        .collect();
    let mut table = format!(
        "{} deliveries were refused by ingest in the window\n{} deliveries listed, {} failed and never delivered since\n",
        recorded.len(),
        report.listed,
        report.failed.len()
    );
    for (guid, id) in &report.failed {
        let done = report.redelivered.contains(guid);
        table.push_str(&format!(
            "  {guid} (attempt {id}): {}\n",
            if done {
                "redelivery requested"
            } else {
                "would redeliver"
            }
        ));
    }
    for note in &notes {
        table.push_str(&format!("warning: {note}\n"));
    }
    Ok(Done::ok(
        json!({
            "dry_run": args.dry_run,
            "refused_by_ingest": recorded.len(),
            "listed": report.listed,
            "failed": failed,
            "redelivered": report.redelivered.len(),
            "warnings": notes,
        }),
        table,
    ))
}
