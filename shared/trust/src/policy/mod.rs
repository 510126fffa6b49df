//! The repository access policy: which requester may make the fleet read which
//! repository. Without it, anyone who can post in a Slack channel or a Linear
//! team could have any repository the fleet's credentials reach read, ranked
//! and quoted back to them.
//!
//! `CONTEXTEN_POLICY_FILE` names one TOML file (unset: no policy). Every table is
//! optional and may repeat; unknown keys are an error.
//!
//! ```toml
//! # A Slack workspace (team), optionally one channel of it.
//! [[slack]]
//! team = "T0001"
//! channel = "C0123"            # optional: omit for every channel of the team
//! repositories = ["acme/api", "acme/*"]
//!
//! # A Linear organisation, optionally one team of it (its id or its key).
//! [[linear]]
//! organization = "<organization id>"
//! team = "ENG"                 # optional: omit for every team
//! repositories = ["acme/web"]
//!
//! # What the events of a GitHub owner or App installation may read besides
//! # their own repository (which they may always read).
//! [[github]]
//! owner = "acme"               # and/or: installation = 123
//! repositories = ["acme/docs"]
//!
//! # API tokens, by the name they carry in the API token file; "*" = any token.
//! [[api]]
//! token = "ci-bot"
//! repositories = ["acme/*", "gitlab.com/acme/tools/*"]
//! ```
//!
//! Repository patterns: `owner/repo` and `owner/*` on github.com;
//! `host/path/to/repo`, `host/group/*` (everything below the group, subgroups
//! included) and `host/*` on other hosts. A URL (`https://github.com/Acme/API.git`,
//! `git@github.com:acme/api.git`) names the same repository as `acme/api`: host
//! and github.com owner/name compare case-insensitively, `.git`, trailing
//! slashes, users and ports are dropped (see [`RepoId`]).
//!
//! Decisions ([`Policy::decide`]):
//! - a GitHub event may always read its own repository, plus what a `[[github]]`
//!   entry for its owner or installation lists;
//! - an API token may read what its entry in the API token file lists, plus what
//!   `[[api]]` entries for its name (or `"*"`) list;
//! - a Slack channel or Linear team may read what its entries list;
//! - anything else is refused, naming the missing permission. With no policy
//!   file that leaves only a GitHub event's own repository (and an API token's
//!   own list from the token file, which the operator wrote too).
//!
//! [`PolicyStore`] reloads the file when its content changes: a file that
//! disappears means no policy (the safe default), not the old one; a file that
//! becomes invalid keeps the previous valid policy and logs an error.

mod repo;
mod store;

pub use repo::{GITHUB_HOST, RepoId, RepoIdError, RepoPattern};
pub use store::{POLICY_FILE_VAR, PolicyStore, RELOAD_INTERVAL, Reload};

use serde::Deserialize;
use std::path::Path;

/// Who is asking, as the request's source identifies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A Slack workspace and the channel the request came from.
    Slack {
        team: &'a str,
        channel: Option<&'a str>,
    },
    /// A Linear organisation and team; an entry's `team` may name either the id
    /// or the key, so both are given when known.
    Linear {
        organization: &'a str,
        team_id: Option<&'a str>,
        team_key: Option<&'a str>,
    },
    /// An API token by name, with the repositories its token-file entry lists.
    Api {
        token: &'a str,
        token_repositories: &'a [RepoPattern],
    },
    /// A GitHub event: the repository's owner, the App installation (if any)
    /// and the repository the event is about.
    Github {
        owner: &'a str,
        installation: Option<u64>,
        own_repository: &'a RepoId,
    },
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// The missing permission, in words an operator can act on.
    Refused {
        permission: String,
    },
}

impl Decision {
    /// Whether the read may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy file {path}: {source}")]
    Toml {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid policy file {path}: {entry}: {reason}")]
    Entry {
        path: String,
        /// The table and its position, e.g. `[[slack]] #2`.
        entry: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    slack: Vec<SlackEntry>,
    #[serde(default)]
    linear: Vec<LinearEntry>,
    #[serde(default)]
    github: Vec<GithubEntry>,
    #[serde(default)]
    api: Vec<ApiEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackEntry {
    team: String,
    channel: Option<String>,
    repositories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearEntry {
    organization: String,
    team: Option<String>,
    repositories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GithubEntry {
    owner: Option<String>,
    installation: Option<u64>,
    repositories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiEntry {
    token: String,
    repositories: Vec<String>,
}

/// Who one entry of the file is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grantee {
    Slack {
        team: String,
        channel: Option<String>,
    },
    Linear {
        organization: String,
        team: Option<String>,
    },
    Github {
        owner: Option<String>,
        installation: Option<u64>,
    },
    /// `None`: any token (`"*"`).
    Api { token: Option<String> },
}

impl Grantee {
    fn covers(&self, scope: &Scope<'_>) -> bool {
        match (self, scope) {
            (
                Grantee::Slack { team, channel },
                Scope::Slack {
                    team: t,
                    channel: c,
                },
            ) => team == t && channel.as_deref().is_none_or(|ch| Some(ch) == *c),
            (
                Grantee::Linear { organization, team },
                Scope::Linear {
                    organization: o,
                    team_id,
                    team_key,
                },
            ) => {
                organization == o
                    && team.as_deref().is_none_or(|t| {
                        Some(t) == *team_id || team_key.is_some_and(|k| k.eq_ignore_ascii_case(t))
                    })
            }
            (
                Grantee::Github {
                    owner,
                    installation,
                },
                Scope::Github {
                    owner: o,
                    installation: i,
                    ..
                },
            ) => {
                owner.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(o))
                    || installation.is_some_and(|x| Some(x) == *i)
            }
            (Grantee::Api { token }, Scope::Api { token: t, .. }) => {
                token.as_deref().is_none_or(|x| x == *t)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    grantee: Grantee,
    repositories: Vec<RepoPattern>,
}

/// A parsed policy file, or none (the safe default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    grants: Vec<Grant>,
    /// Whether a file was loaded: the refusal says how to fix it either way.
    from_file: bool,
}

impl Policy {
    /// No policy file: only a GitHub event's own repository (and a token's own list).
    pub fn none() -> Self {
        Policy::default()
    }

    /// Parses the file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let doc: PolicyDoc = toml::from_str(text).map_err(|source| PolicyError::Toml {
            path: shown.clone(),
            source,
        })?;
        let mut grants = Vec::new();
        let mut add = |table: &str, index: usize, grantee, patterns: Vec<String>| {
            let entry_error = |reason: String| PolicyError::Entry {
                path: shown.clone(),
                entry: format!("[[{table}]] #{}", index + 1),
                reason,
            };
            if let Grantee::Github {
                owner: None,
                installation: None,
            } = grantee
            {
                return Err(entry_error("needs `owner` or `installation`".into()));
            }
            let repositories = patterns
                .iter()
                .map(|p| RepoPattern::parse(p).map_err(|e| entry_error(e.to_string())))
                .collect::<Result<_, _>>()?;
            grants.push(Grant {
                grantee,
                repositories,
            });
            Ok(())
        };
        for (i, e) in doc.slack.into_iter().enumerate() {
            let grantee = Grantee::Slack {
                team: e.team,
                channel: e.channel,
            };
            add("slack", i, grantee, e.repositories)?;
        }
        for (i, e) in doc.linear.into_iter().enumerate() {
            let grantee = Grantee::Linear {
                organization: e.organization,
                team: e.team,
            };
            add("linear", i, grantee, e.repositories)?;
        }
        for (i, e) in doc.github.into_iter().enumerate() {
            let grantee = Grantee::Github {
                owner: e.owner,
                installation: e.installation,
            };
            add("github", i, grantee, e.repositories)?;
        }
        for (i, e) in doc.api.into_iter().enumerate() {
            let token = (e.token != "*").then_some(e.token);
            add("api", i, Grantee::Api { token }, e.repositories)?;
        }
        Ok(Policy {
            grants,
            from_file: true,
        })
    }

    /// Whether `scope` may read `repo`, and if not, what permission is missing.
    pub fn decide(&self, scope: &Scope<'_>, repo: &RepoId) -> Decision {
        let own = match scope {
            Scope::Github { own_repository, .. } => *own_repository == repo,
            Scope::Api {
                token_repositories, ..
            } => token_repositories.iter().any(|p| p.matches(repo)),
            _ => false,
        };
        let granted = self
            .grants
            .iter()
            .filter(|g| g.grantee.covers(scope))
            .any(|g| g.repositories.iter().any(|p| p.matches(repo)));
        if own || granted {
            return Decision::Allowed;
        }
        Decision::Refused {
            permission: self.missing_permission(scope, repo),
        }
    }

    fn missing_permission(&self, scope: &Scope<'_>, repo: &RepoId) -> String {
        let (who, fix) = match scope {
            Scope::Slack {
                team,
                channel: Some(channel),
            } => (
                format!("Slack channel {channel} in team {team}"),
                "a [[slack]] entry",
            ),
            Scope::Slack {
                team,
                channel: None,
            } => (format!("Slack team {team}"), "a [[slack]] entry"),
            Scope::Linear {
                organization,
                team_id,
                team_key,
            } => match team_key.or(*team_id) {
                Some(team) => (
                    format!("Linear team {team} of organization {organization}"),
                    "a [[linear]] entry",
                ),
                None => (
                    format!("Linear organization {organization}"),
                    "a [[linear]] entry",
                ),
            },
            Scope::Api { token, .. } => (
                format!("API token {token}"),
                "the token's repositories in the API token file or to an [[api]] entry",
            ),
            Scope::Github {
                owner,
                installation,
                own_repository,
            } => {
                let installation = installation
                    .map(|i| format!(" (installation {i})"))
                    .unwrap_or_default();
                (
                    format!(
                        "GitHub events of {owner}{installation} read their own repository {own_repository} and"
                    ),
                    "a [[github]] entry",
                )
            }
        };
        let file = if self.from_file {
            String::new()
        } else {
            format!(
                " ({POLICY_FILE_VAR} is not set, so only a GitHub event's own repository may be read)"
            )
        };
        format!("{who} may not read {repo}: add it to {fix} of the policy file{file}")
    }
}

#[cfg(test)]
mod tests;
