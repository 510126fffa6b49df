//! The agent worker's own settings (on top of [`WorkerConfig`]'s shared ones),
//! read once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CODEGEN_API_URL` | Codegen REST API base URL | `https://api.codegen.com` |
//! | `CODEGEN_ORG_ID` | Codegen organisation id (integer); with the token, enables the stage | unset |
//! | `CODEGEN_API_TOKEN` | Codegen API token (bearer); or `CODEGEN_API_TOKEN_FILE`, read per request | unset |
//! | `CODEGEN_TIMEOUT_SECS` | one Codegen request, body included (1–600) | `30` |
//! | `CODEGEN_CREATE_LIMIT` | run creations per window, whole fleet, per org | `10` |
//! | `CODEGEN_CREATE_WINDOW_MS` | that window | `60000` |
//! | `CODEGEN_REQUEST_LIMIT` | other Codegen requests per window, whole fleet, per org | `60` |
//! | `CODEGEN_REQUEST_WINDOW_MS` | that window | `30000` |
//! | `CODEGEN_BREAKER_FAILURES` | consecutive 5xx/timeouts/connection errors that open the breaker | `5` |
//! | `CODEGEN_BREAKER_OPEN_MS` | how long the breaker stays open before one probe | `30000` |
//! | `CODEGEN_BREAKER_PROBE_TIMEOUT_MS` | how long a probe may take before another may start (> the request timeout) | `60000` |
//! | `AGENT_POLL_INITIAL_MS` | first status check after a run starts; doubles per check | `5000` |
//! | `AGENT_POLL_MAX_MS` | longest gap between status checks | `60000` |
//! | `AGENT_MAX_RUN_SECS` | after this the person gets a timeout answer with the run's link | `3600` |
//! | `AGENT_LIMIT_MAX_HOLD_MS` | longest a handler waits in place for a rate-limit permit before rescheduling the task instead | `2000` |
//! | `AGENT_MAX_RUNS_PER_REQUESTER` | agent runs one requester (source kind + `requested_by`) may have in progress, whole fleet (1–100); more wait, rescheduled | `2` |
//!
//! [`WorkerConfig`]: contexten_broker::WorkerConfig

use crate::codegen::CodegenConfig;
use contexten_config::{ConfigError, Env};
use contexten_resilience::BreakerConfig;
use std::time::Duration;

/// The agent worker's settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// `None` when neither `CODEGEN_ORG_ID` nor `CODEGEN_API_TOKEN` is set: the
    /// stage then answers every task with a clear "not configured" failure.
    pub codegen: Option<CodegenConfig>,
    /// `CODEGEN_CREATE_LIMIT` per `CODEGEN_CREATE_WINDOW_MS`.
    pub create_limit: u32,
    pub create_window: Duration,
    /// `CODEGEN_REQUEST_LIMIT` per `CODEGEN_REQUEST_WINDOW_MS`.
    pub request_limit: u32,
    pub request_window: Duration,
    /// `CODEGEN_BREAKER_*`.
    pub breaker: BreakerConfig,
    /// `AGENT_POLL_INITIAL_MS`.
    pub poll_initial: Duration,
    /// `AGENT_POLL_MAX_MS`.
    pub poll_max: Duration,
    /// `AGENT_MAX_RUN_SECS`.
    pub max_run: Duration,
    /// `AGENT_LIMIT_MAX_HOLD_MS`.
    pub max_hold: Duration,
    /// `AGENT_MAX_RUNS_PER_REQUESTER`.
    pub max_runs_per_requester: u32,
    /// How long a task waits for one of its requester's runs to end before it
    /// is answered "you already have N agent runs in progress": no longer than
    /// a run may last, and at most [`MAX_REQUESTER_WAIT`]. Not an environment
    /// setting (tests shorten it).
    pub requester_wait: Duration,
}

const HOUR_MS: u64 = 3_600_000;

/// The longest a task waits for a requester's slot before it is answered.
pub const MAX_REQUESTER_WAIT: Duration = Duration::from_secs(10 * 60);

impl AgentSettings {
    /// Reads and checks the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let timeout = Duration::from_secs(env.ranged("CODEGEN_TIMEOUT_SECS", 30, 1, 600)?);
        let codegen = codegen(env, timeout)?;
        let ms = |var: &str, default: u64, min: u64, max: u64| {
            env.ranged(var, default, min, max)
                .map(Duration::from_millis)
        };
        let breaker = BreakerConfig {
            failure_threshold: env.ranged("CODEGEN_BREAKER_FAILURES", 5, 1, 1000)?,
            open_for: ms("CODEGEN_BREAKER_OPEN_MS", 30_000, 100, HOUR_MS)?,
            probe_timeout: ms("CODEGEN_BREAKER_PROBE_TIMEOUT_MS", 60_000, 100, HOUR_MS)?,
        };
        if breaker.probe_timeout <= timeout {
            return Err(ConfigError {
                var: "CODEGEN_BREAKER_PROBE_TIMEOUT_MS".into(),
                shown: breaker.probe_timeout.as_millis().to_string(),
                expected: format!(
                    "longer than CODEGEN_TIMEOUT_SECS ({} s), so only one probe runs at a time",
                    timeout.as_secs()
                ),
            });
        }
        let poll_initial = ms("AGENT_POLL_INITIAL_MS", 5_000, 10, HOUR_MS)?;
        let poll_max = ms("AGENT_POLL_MAX_MS", 60_000, 10, HOUR_MS)?;
        if poll_max < poll_initial {
            return Err(ConfigError {
                var: "AGENT_POLL_MAX_MS".into(),
                shown: poll_max.as_millis().to_string(),
                expected: "at least AGENT_POLL_INITIAL_MS".into(),
            });
        }
        let max_run =
            Duration::from_secs(env.ranged("AGENT_MAX_RUN_SECS", 3600, 1, 7 * 24 * 3600)?);
        Ok(AgentSettings {
            codegen,
            create_limit: env.ranged("CODEGEN_CREATE_LIMIT", 10, 1, 100_000)?,
            create_window: ms("CODEGEN_CREATE_WINDOW_MS", 60_000, 100, 24 * HOUR_MS)?,
            request_limit: env.ranged("CODEGEN_REQUEST_LIMIT", 60, 1, 100_000)?,
            request_window: ms("CODEGEN_REQUEST_WINDOW_MS", 30_000, 100, 24 * HOUR_MS)?,
            breaker,
            poll_initial,
            poll_max,
            max_run,
            max_hold: ms("AGENT_LIMIT_MAX_HOLD_MS", 2_000, 0, 30_000)?,
            max_runs_per_requester: env.ranged("AGENT_MAX_RUNS_PER_REQUESTER", 2, 1, 100)?,
            requester_wait: max_run.min(MAX_REQUESTER_WAIT),
        })
    }
}

fn codegen(env: &Env, timeout: Duration) -> Result<Option<CodegenConfig>, ConfigError> {
    let base_url = env.url(
        "CODEGEN_API_URL",
        "https://api.codegen.com",
        &["https", "http"],
    )?;
    let org_id = env.parse_opt::<u64>("CODEGEN_ORG_ID", "a positive integer")?;
    let token = env.secret_source("CODEGEN_API_TOKEN")?;
    match (org_id, token) {
        (None, None) => Ok(None),
        (Some(0), _) => Err(ConfigError {
            var: "CODEGEN_ORG_ID".into(),
            shown: "0".into(),
            expected: "a positive integer".into(),
        }),
        (Some(org_id), Some(token)) => Ok(Some(CodegenConfig {
            base_url,
            org_id,
            token,
            timeout,
        })),
        (Some(_), None) => Err(ConfigError {
            var: "CODEGEN_API_TOKEN".into(),
            shown: String::new(),
            expected: "a Codegen API token (CODEGEN_ORG_ID is set)".into(),
        }),
        (None, Some(_)) => Err(ConfigError {
            var: "CODEGEN_ORG_ID".into(),
            shown: String::new(),
            expected: "the Codegen organisation id (CODEGEN_API_TOKEN is set)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::ExposeSecret;

    #[test]
    fn defaults_follow_the_codegen_limits() {
        let token = format!("{}-{}", "fake", "token");
        let env = Env::from_pairs([
            ("CODEGEN_ORG_ID", "42"),
            ("CODEGEN_API_TOKEN", token.as_str()),
        ]);
        let settings = AgentSettings::from_env(&env).unwrap();
        let codegen = settings.codegen.as_ref().unwrap();
        assert_eq!(codegen.org_id, 42);
        assert_eq!(codegen.base_url.as_str(), "https://api.codegen.com/");
        assert_eq!(codegen.token.current().expose_secret(), token);
        assert_eq!(
            (settings.create_limit, settings.create_window),
            (10, Duration::from_secs(60))
        );
        assert_eq!(
            (settings.request_limit, settings.request_window),
            (60, Duration::from_secs(30))
        );
        assert_eq!(settings.max_run, Duration::from_secs(3600));
        assert_eq!(settings.breaker.failure_threshold, 5);
        assert_eq!(settings.max_runs_per_requester, 2);
        assert_eq!(settings.requester_wait, MAX_REQUESTER_WAIT);
        assert!(!format!("{settings:?}").contains(&token));
    }

    #[test]
    fn without_credentials_the_stage_is_disabled_and_half_credentials_are_refused() {
        assert!(
            AgentSettings::from_env(&Env::default())
                .unwrap()
                .codegen
                .is_none()
        );
        let err = AgentSettings::from_env(&Env::from_pairs([("CODEGEN_ORG_ID", "4")])).unwrap_err();
        assert_eq!(err.var, "CODEGEN_API_TOKEN");
        let err =
            AgentSettings::from_env(&Env::from_pairs([("CODEGEN_ORG_ID", "acme")])).unwrap_err();
        assert_eq!(err.var, "CODEGEN_ORG_ID");
    }

    #[test]
    fn the_token_may_come_from_a_file_that_is_read_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codegen");
        std::fs::write(&path, format!("{}-{}\n", "file", "token")).unwrap();
        let shown = path.display().to_string();
        let env = Env::from_pairs([
            ("CODEGEN_ORG_ID", "42"),
            ("CODEGEN_API_TOKEN_FILE", shown.as_str()),
        ]);
        let codegen = AgentSettings::from_env(&env).unwrap().codegen.unwrap();
        assert!(codegen.token.is_file());
        assert_eq!(codegen.token.current().expose_secret(), "file-token");
        let env = Env::from_pairs([
            ("CODEGEN_ORG_ID", "42"),
            ("CODEGEN_API_TOKEN", "inline"),
            ("CODEGEN_API_TOKEN_FILE", shown.as_str()),
        ]);
        let err = AgentSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "CODEGEN_API_TOKEN_FILE");
    }

    #[test]
    fn the_requester_limit_is_bounded() {
        for bad in ["0", "101", "two"] {
            let env = Env::from_pairs([("AGENT_MAX_RUNS_PER_REQUESTER", bad)]);
            assert_eq!(
                AgentSettings::from_env(&env).unwrap_err().var,
                "AGENT_MAX_RUNS_PER_REQUESTER"
            );
        }
        let env = Env::from_pairs([
            ("AGENT_MAX_RUNS_PER_REQUESTER", "100"),
            ("AGENT_MAX_RUN_SECS", "60"),
        ]);
        let settings = AgentSettings::from_env(&env).unwrap();
        assert_eq!(settings.max_runs_per_requester, 100);
        assert_eq!(settings.requester_wait, Duration::from_secs(60));
    }

    #[test]
    fn cross_field_rules_name_their_variable() {
        let env = Env::from_pairs([
            ("AGENT_POLL_INITIAL_MS", "9000"),
            ("AGENT_POLL_MAX_MS", "1000"),
        ]);
        assert_eq!(
            AgentSettings::from_env(&env).unwrap_err().var,
            "AGENT_POLL_MAX_MS"
        );
        let env = Env::from_pairs([
            ("CODEGEN_TIMEOUT_SECS", "60"),
            ("CODEGEN_BREAKER_PROBE_TIMEOUT_MS", "30000"),
        ]);
        assert_eq!(
            AgentSettings::from_env(&env).unwrap_err().var,
            "CODEGEN_BREAKER_PROBE_TIMEOUT_MS"
        );
    }
}
