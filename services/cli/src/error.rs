//! What can end a command, and the exit code each ends with (README "The
//! operator CLI", and `contexten --help`).

use contexten_broker::BrokerError;

/// The process exit codes, one per kind of failure a script may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// Anything not listed below.
    Other = 1,
    /// Bad arguments or settings, or a replay/purge without `--yes` when stdin
    /// is not a terminal (clap's own usage errors exit 2 as well).
    Usage = 2,
    /// The task, message or queue named does not exist.
    NotFound = 3,
    /// The broker cannot be reached or refused the connection.
    BrokerUnreachable = 4,
    /// A Redis cannot be reached.
    RedisUnreachable = 5,
    /// A replay moved some dead letters and failed for others.
    Partial = 6,
    /// `contexten redis` found a role running without what it needs.
    CheckFailed = 7,
    /// The operator answered no at the confirmation prompt.
    Declined = 8,
}

impl ExitCode {
    /// The code as the process returns it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The stable name used in the JSON error document.
    pub fn kind(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::Other => "other",
            ExitCode::Usage => "usage",
            ExitCode::NotFound => "not_found",
            ExitCode::BrokerUnreachable => "broker_unreachable",
            ExitCode::RedisUnreachable => "redis_unreachable",
            ExitCode::Partial => "partial_failure",
            ExitCode::CheckFailed => "check_failed",
            ExitCode::Declined => "declined",
        }
    }
}

/// The exit codes as `contexten --help` lists them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  unexpected failure
  2  usage: bad arguments or settings, or replay/purge without --yes when stdin is not a terminal
  3  not found: the task, the dead letter (--task/--message-id) or the queues (wrong prefix?)
  4  the broker (AMQP_URL) cannot be reached or refused the connection
  5  a Redis (REDIS_URL, REDIS_RECORDS_URL) cannot be reached
  6  partial failure: a replay moved some dead letters and not others (listed in the output)
  7  contexten redis: a role runs without what it needs (warnings printed)
  8  the confirmation prompt was answered no";

/// Why a command failed. Messages never carry a URL's credentials: broker and
/// Redis errors name only `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BrokerUnreachable(#[source] BrokerError),
    #[error("{0}")]
    RedisUnreachable(#[source] BrokerError),
    #[error("{failed} of {matched} dead letter(s) were not replayed (see the output)")]
    Partial { matched: usize, failed: usize },
    #[error("{0}")]
    CheckFailed(String),
    #[error("nothing done: not confirmed")]
    Declined,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::Usage,
            CliError::NotFound(_) => ExitCode::NotFound,
            CliError::BrokerUnreachable(_) => ExitCode::BrokerUnreachable,
            CliError::RedisUnreachable(_) => ExitCode::RedisUnreachable,
            CliError::Partial { .. } => ExitCode::Partial,
            CliError::CheckFailed(_) => ExitCode::CheckFailed,
            CliError::Declined => ExitCode::Declined,
            CliError::Broker(_) | CliError::Other(_) => ExitCode::Other,
        }
    }

    /// A broker error while connecting: unreachable, whatever the cause.
    pub fn connecting(error: BrokerError) -> Self {
        match error {
            BrokerError::Tls(_) => CliError::Usage(error.to_string()),
            other => CliError::BrokerUnreachable(other),
        }
    }

    /// A broker error after connecting: a queue the broker does not know is
    /// "not found" (a passive declare answers `NOT_FOUND`), a lost connection
    /// "unreachable".
    pub fn on_broker(error: BrokerError, what: &str) -> Self {
        let text = error.to_string();
        if text.contains("NOT_FOUND") {
            return CliError::NotFound(format!(
                "{what}: the broker does not know the queue ({text}); is CONTEXTEN_PREFIX right, and has a service declared the queues?"
            ));
        }
        match &error {
            BrokerError::Connect { .. } => CliError::BrokerUnreachable(error),
            BrokerError::Amqp(lapin_error)
                if matches!(
                    lapin_error.kind(),
                    lapin::ErrorKind::IOError(_) | lapin::ErrorKind::InvalidConnectionState(_)
                ) =>
            {
                CliError::BrokerUnreachable(error)
            }
            _ => CliError::Broker(error),
        }
    }

    /// A Redis error: unreachable when it could not connect or answer in time.
    pub fn on_redis(error: BrokerError) -> Self {
        match error {
            BrokerError::RedisTimeout(_) => CliError::RedisUnreachable(error),
            BrokerError::Redis(ref text)
                if text.contains("cannot connect") || text.contains("unreachable") =>
            {
                CliError::RedisUnreachable(error)
            }
            other => CliError::Broker(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_own_code_and_the_help_lists_them_all() {
        let cases = [
            (CliError::Usage("x".into()), 2),
            (CliError::NotFound("x".into()), 3),
            (
                CliError::connecting(BrokerError::Connect {
                    endpoint: "127.0.0.1:1".into(),
                    source: lapin::Error::from(std::io::Error::other("refused")),
                }),
                4,
            ),
            (
                CliError::on_redis(BrokerError::Redis(
                    "cannot connect to 127.0.0.1:1: refused".into(),
                )),
                5,
            ),
            (
                CliError::Partial {
                    matched: 2,
                    failed: 1,
                },
                6,
            ),
            (CliError::CheckFailed("x".into()), 7),
            (CliError::Declined, 8),
            (CliError::Other("x".into()), 1),
            (
                CliError::on_redis(BrokerError::RedisRefused("OOM".into())),
                1,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code().code(), code, "{error}");
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code}  ")),
                "code {code} is not in the help"
            );
        }
    }
}
