//! The dispatcher's settings (docs/design.md §11), read once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GITHUB_TOKEN` | token that posts GitHub comments (when no App is set) | unset |
//! | `GITHUB_APP_ID`, `GITHUB_APP_PRIVATE_KEY` | post as a GitHub App; the key is PEM text or the path of a PEM file | unset |
//! | `GITHUB_APP_INSTALLATION_ID` | the App's installation; unset = looked up per repository | unset |
//! | `LINEAR_API_KEY` | personal key (sent raw) or OAuth token (`lin_oauth_…` or `Bearer …`) | unset |
//! | `SLACK_BOT_TOKEN` | bot token (`chat:write`, `reactions:write`; `channels:history` to reconcile) | unset |
//! | `GITLAB_TOKEN` | access token (`api` scope) sent as `PRIVATE-TOKEN`: notes, award emoji | unset |
//! | `CALLBACK_SIGNING_SECRET` | Standard Webhooks secret (`whsec_<base64>`) signing callbacks | unset |
//! | `CONTEXTEN_OUTBOUND_ALLOW` | hosts, `*.domain`, addresses or CIDRs that callback URLs may reach although private or loopback, also over http | unset |
//! | `CONTEXTEN_ALLOW_LOCAL_REPOS` | development switch: callbacks may reach loopback | `0` |
//! | `GITHUB_API_URL` / `LINEAR_API_URL` / `SLACK_API_URL` | base URLs | public APIs |
//! | `GITLAB_API_URL` | GitLab REST v4 base URL (a self-managed instance's `https://host/api/v4`) | `https://gitlab.com/api/v4` |
//! | `DISPATCH_HTTP_TIMEOUT_SECS` | whole-request timeout of provider calls (1–120) | `10` |
//! | `GITHUB_WRITES_PER_MINUTE` / `GITHUB_WRITES_PER_HOUR` | content-creating requests per credential | `80` / `500` |
//! | `SLACK_CHANNEL_MESSAGES_PER_SECOND` | messages per channel per second | `1` |
//! | `SLACK_COMMAND_REPLY` | where a slash command's answers go: `channel` (chat.postMessage; the `response_url` when the bot is not in the channel) or `response_url` (the channel once it expired or is used up) | `channel` |
//! | `LINEAR_REQUESTS_PER_HOUR` | Linear requests per hour (the whole fleet) | `2500` |
//! | `GITLAB_REQUESTS_PER_MINUTE` | GitLab requests per minute (the whole fleet; GitLab.com allows 2,000 per user) | `300` |
//! | `DISPATCH_LIMIT_WAIT_MS` | longest in-handler wait for a limiter permit before rescheduling (0–60000) | `2000` |
//!
//! Every credential may be given as `<NAME>_FILE` instead (`GITHUB_TOKEN_FILE`,
//! `GITHUB_APP_PRIVATE_KEY_FILE`, `LINEAR_API_KEY_FILE`, `SLACK_BOT_TOKEN_FILE`,
//! `GITLAB_TOKEN_FILE`, `CALLBACK_SIGNING_SECRET_FILE`): the clients read the current value per
//! request, so a rotated file is used by the next reply without a restart (the
//! file is looked at again at most once a second). A key path in
//! `GITHUB_APP_PRIVATE_KEY` is re-read the same way.
//!
//! A platform without credentials is disabled: its replies are dead-lettered
//! with `provider_not_configured`, never dropped. A callback URL comes from the
//! requester, so it passes the outbound guard (`contexten_trust::outbound`): a
//! refused one is dead-lettered with `outbound_refused`.

use contexten_broker::service::WorkerConfig;
use contexten_config::secret::RELOAD_INTERVAL;
use contexten_config::{ConfigError, Env, ExposeSecret, SecretSource};
use contexten_envelope::Stage;
use contexten_providers::HttpSettings;
use contexten_providers::callback::WebhookSigner;
use contexten_providers::github::{AppCredentials, GithubAuth};
use contexten_providers::linear::LinearAuth;
use contexten_trust::outbound::OutboundGuard;
use std::time::Duration;

/// Everything the dispatcher binary reads at start.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub worker: WorkerConfig,
    pub providers: ProviderSettings,
}

impl DispatcherConfig {
    /// Reads and validates every setting.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(DispatcherConfig {
            worker: WorkerConfig::from_env(
                env,
                "dispatcher",
                Stage::Dispatch,
                "127.0.0.1:9104",
                32,
            )?,
            providers: ProviderSettings::from_env(env)?,
        })
    }
}

/// Credentials, base URLs and limits of the platforms answers go to.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// `None` = GitHub replies are dead-lettered as not configured.
    pub github: Option<GithubAuth>,
    pub linear: Option<LinearAuth>,
    /// `SLACK_BOT_TOKEN` or `SLACK_BOT_TOKEN_FILE`, read per request.
    pub slack: Option<SecretSource>,
    /// `GITLAB_TOKEN` or `GITLAB_TOKEN_FILE`, read per request.
    pub gitlab: Option<SecretSource>,
    pub callback: Option<WebhookSigner>,
    /// Where callbacks may go (`CONTEXTEN_OUTBOUND_ALLOW`, loopback with
    /// `CONTEXTEN_ALLOW_LOCAL_REPOS`); the platforms' own URLs are configured,
    /// not requested, and do not pass it.
    pub outbound: OutboundGuard,
    pub github_url: url::Url,
    pub linear_url: url::Url,
    pub slack_url: url::Url,
    pub gitlab_url: url::Url,
    pub http: HttpSettings,
    pub limits: Limits,
    /// `SLACK_COMMAND_REPLY`: where a slash command's answers go.
    pub slack_command_reply: SlackCommandReply,
}

/// Where a slash command's answers go (`SLACK_COMMAND_REPLY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SlackCommandReply {
    /// `channel`: a chat.postMessage in the channel, found again by metadata
    /// and able to carry a long answer's file in its thread; the command's
    /// `response_url` when the bot is not in the channel.
    #[default]
    Channel,
    /// `response_url`: through the command's `response_url` (in_channel,
    /// within its 30 minutes and 5 uses; no file, the answer cut to one
    /// message), the channel when it can no longer be used.
    ResponseUrl,
}

impl std::str::FromStr for SlackCommandReply {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "channel" => Ok(SlackCommandReply::Channel),
            "response_url" => Ok(SlackCommandReply::ResponseUrl),
            _ => Err(()),
        }
    }
}

/// The fleet-wide limits the dispatcher keeps under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub github_per_minute: u32,
    pub github_per_hour: u32,
    pub slack_per_channel_per_second: u32,
    pub linear_per_hour: u32,
    pub gitlab_per_minute: u32,
    /// Longest wait inside a handler before rescheduling the reply instead.
    pub max_wait: Duration,
}

impl ProviderSettings {
    /// Reads the provider settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = HttpSettings {
            timeout: Duration::from_secs(env.ranged("DISPATCH_HTTP_TIMEOUT_SECS", 10, 1, 120)?),
            ..HttpSettings::default()
        };
        let callback = env
            .secret_source("CALLBACK_SIGNING_SECRET")?
            .map(|secret| {
                WebhookSigner::from_source(secret).map_err(|_| ConfigError {
                    var: "CALLBACK_SIGNING_SECRET".into(),
                    shown: "****".into(),
                    expected:
                        "whsec_<base64 of at least 16 bytes> or a raw secret of at least 16 bytes"
                            .into(),
                })
            })
            .transpose()?;
        Ok(ProviderSettings {
            github: github_auth(env)?,
            linear: env
                .secret_source("LINEAR_API_KEY")?
                .map(LinearAuth::from_source),
            slack: env.secret_source("SLACK_BOT_TOKEN")?,
            gitlab: env.secret_source("GITLAB_TOKEN")?,
            callback,
            // A bad allow-list entry stops the start, naming the variable and entry.
            outbound: OutboundGuard::from_env(env)?,
            github_url: env.url(
                "GITHUB_API_URL",
                "https://api.github.com",
                &["http", "https"],
            )?,
            linear_url: env.url(
                "LINEAR_API_URL",
                "https://api.linear.app/graphql",
                &["http", "https"],
            )?,
            slack_url: env.url("SLACK_API_URL", "https://slack.com/api", &["http", "https"])?,
            gitlab_url: env.url(
                "GITLAB_API_URL",
                "https://gitlab.com/api/v4",
                &["http", "https"],
            )?,
            http,
            slack_command_reply: env.parse(
                "SLACK_COMMAND_REPLY",
                SlackCommandReply::Channel,
                "channel or response_url",
            )?,
            limits: Limits {
                github_per_minute: env.ranged("GITHUB_WRITES_PER_MINUTE", 80, 1, 10_000)?,
                github_per_hour: env.ranged("GITHUB_WRITES_PER_HOUR", 500, 1, 100_000)?,
                slack_per_channel_per_second: env.ranged(
                    "SLACK_CHANNEL_MESSAGES_PER_SECOND",
                    1,
                    1,
                    100,
                )?,
                linear_per_hour: env.ranged("LINEAR_REQUESTS_PER_HOUR", 2500, 1, 100_000)?,
                gitlab_per_minute: env.ranged("GITLAB_REQUESTS_PER_MINUTE", 300, 1, 100_000)?,
                max_wait: Duration::from_millis(env.ranged(
                    "DISPATCH_LIMIT_WAIT_MS",
                    2000,
                    0,
                    60_000,
                )?),
            },
        })
    }
}

/// A GitHub App when `GITHUB_APP_ID` is set (its key is then required), else
/// `GITHUB_TOKEN`, else nothing.
fn github_auth(env: &Env) -> Result<Option<GithubAuth>, ConfigError> {
    let Some(app_id) = env.parse_opt::<u64>("GITHUB_APP_ID", "a numeric GitHub App id")? else {
        return Ok(env.secret_source("GITHUB_TOKEN")?.map(GithubAuth::Token));
    };
    let key_error = |expected: &str| ConfigError {
        var: "GITHUB_APP_PRIVATE_KEY".into(),
        shown: "****".into(),
        expected: expected.into(),
    };
    let raw = env
        .secret_source("GITHUB_APP_PRIVATE_KEY")?
        .ok_or_else(|| {
            key_error(
                "the App's RSA private key (PEM text or a file path) when GITHUB_APP_ID is set",
            )
        })?;
    // A mounted Kubernetes secret is a file; inline PEM starts with its armour.
    let value = raw.current();
    let pem = if raw.is_file() || value.expose_secret().trim_start().starts_with("-----BEGIN") {
        raw
    } else {
        let path = std::path::Path::new(value.expose_secret().trim());
        SecretSource::file("GITHUB_APP_PRIVATE_KEY", path, RELOAD_INTERVAL)
            .map_err(|_| key_error("PEM text or the path of a readable PEM file"))?
    };
    let installation =
        env.parse_opt::<u64>("GITHUB_APP_INSTALLATION_ID", "a numeric installation id")?;
    let app = AppCredentials::from_source(app_id, pem, installation)
        .map_err(|_| key_error("an RSA private key in PEM (PKCS#1 or PKCS#8)"))?;
    Ok(Some(GithubAuth::App(app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_every_platform_disabled_with_public_urls() {
        let settings = ProviderSettings::from_env(&Env::default()).unwrap();
        assert!(settings.github.is_none() && settings.linear.is_none());
        assert!(settings.slack.is_none() && settings.callback.is_none());
        assert!(settings.gitlab.is_none());
        assert_eq!(settings.github_url.as_str(), "https://api.github.com/");
        assert_eq!(settings.gitlab_url.as_str(), "https://gitlab.com/api/v4");
        assert_eq!(settings.limits.gitlab_per_minute, 300);
        assert_eq!(settings.limits.github_per_minute, 80);
        assert_eq!(settings.outbound, OutboundGuard::default());
        assert_eq!(settings.slack_command_reply, SlackCommandReply::Channel);
    }

    #[test]
    fn the_slash_command_route_is_read_and_a_bad_one_names_the_variable() {
        let env = Env::from_pairs([("SLACK_COMMAND_REPLY", "response_url")]);
        let settings = ProviderSettings::from_env(&env).unwrap();
        assert_eq!(settings.slack_command_reply, SlackCommandReply::ResponseUrl);
        let env = Env::from_pairs([("SLACK_COMMAND_REPLY", "thread")]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "SLACK_COMMAND_REPLY");
    }

    #[test]
    fn the_outbound_allow_list_is_read_and_a_bad_entry_names_the_variable() {
        let env = Env::from_pairs([(
            "CONTEXTEN_OUTBOUND_ALLOW",
            "hooks.corp.example, 10.1.0.0/16",
        )]);
        let settings = ProviderSettings::from_env(&env).unwrap();
        assert_ne!(settings.outbound, OutboundGuard::default());
        let env = Env::from_pairs([("CONTEXTEN_OUTBOUND_ALLOW", "10.1.0.0/16,10.0.0.0/33")]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "CONTEXTEN_OUTBOUND_ALLOW");
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        let env = Env::from_pairs([("CONTEXTEN_ALLOW_LOCAL_REPOS", "maybe")]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "CONTEXTEN_ALLOW_LOCAL_REPOS");
    }

    #[test]
    fn an_app_id_without_a_key_names_the_key_variable() {
        let env = Env::from_pairs([("GITHUB_APP_ID", "12")]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "GITHUB_APP_PRIVATE_KEY");
        let env = Env::from_pairs([
            ("GITHUB_APP_ID", "12"),
            ("GITHUB_APP_PRIVATE_KEY", "-----BEGIN nonsense"),
        ]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "GITHUB_APP_PRIVATE_KEY");
        assert!(!err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn credentials_are_read_from_their_files_and_not_beside_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, value).unwrap();
            path.display().to_string()
        };
        let slack = file("slack", &["xoxb", "-file-", "0001"].concat());
        let linear = file("linear", &["lin_api_", "file"].concat());
        let github = file("github", &["ghp", "_file"].concat());
        let callback = file("callback", &["callback-", "file-secret-", "0001"].concat());
        let env = Env::from_pairs([
            ("SLACK_BOT_TOKEN_FILE", slack.as_str()),
            ("LINEAR_API_KEY_FILE", linear.as_str()),
            ("GITHUB_TOKEN_FILE", github.as_str()),
            ("CALLBACK_SIGNING_SECRET_FILE", callback.as_str()),
        ]);
        let settings = ProviderSettings::from_env(&env).unwrap();
        assert!(settings.slack.as_ref().is_some_and(SecretSource::is_file));
        assert!(settings.linear.is_some() && settings.callback.is_some());
        assert!(matches!(settings.github, Some(GithubAuth::Token(ref t)) if t.is_file()));
        let shown = format!("{settings:?}");
        for value in ["-file-0001", "lin_api_file", "ghp_file", "file-secret-0001"] {
            assert!(!shown.contains(value), "{shown}");
        }

        let token = ["xoxb", "-", "0002"].concat();
        let env = Env::from_pairs([
            ("SLACK_BOT_TOKEN", token.as_str()),
            ("SLACK_BOT_TOKEN_FILE", slack.as_str()),
        ]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "SLACK_BOT_TOKEN_FILE");
    }

    #[test]
    fn a_bad_callback_secret_is_refused_without_showing_it() {
        let env = Env::from_pairs([("CALLBACK_SIGNING_SECRET", "whsec_!!")]);
        let err = ProviderSettings::from_env(&env).unwrap_err();
        assert_eq!(err.var, "CALLBACK_SIGNING_SECRET");
        assert!(!err.to_string().contains("!!"));
    }
}
