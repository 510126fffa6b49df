//! Who may ask: the requester allow-lists checked after a webhook's signature
//! and before it is classified (README "Security model"). A signature proves
//! the platform sent the event, not that the sender belongs to the team that
//! runs the fleet: a Slack app can be installed in another workspace or reached
//! by a Slack Connect guest, a Linear webhook can be pointed at us by another
//! organisation. An event that fails a list is ignored (2xx with the reason),
//! so it creates nothing.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SLACK_TEAM_IDS` | Slack workspaces (team ids) whose events are accepted; the event's own team and, for Slack Connect, the sender's team must be listed | unset: no filtering (warned at start) |
//! | `SLACK_APP_ID` | the app id events must carry (`api_app_id`) | unset: no filtering (warned at start) |
//! | `SLACK_USER_IDS`, `SLACK_CHANNEL_IDS` | optional: only these users / channels | unset: any |
//! | `LINEAR_ORGANIZATION_ID` | the Linear organisation whose webhooks are accepted | unset: no filtering (warned at start) |
//! | `LINEAR_TEAM_IDS` | optional: only issues of these teams (ids) | unset: any |
//! | `GITHUB_ALLOWED_REPOSITORIES` | optional: `owner/repo` or `owner/*` entries whose events are accepted | unset: any (the App's installation decides) |

use crate::sources::slack::SlashCommand;
use crate::sources::str_at;
use contexten_config::Env;
use serde_json::Value;

/// The allow-lists; an empty list means no filtering on that field.
#[derive(Debug, Clone, Default)]
pub struct RequesterGate {
    pub slack_teams: Vec<String>,
    pub slack_app_id: Option<String>,
    pub slack_users: Vec<String>,
    pub slack_channels: Vec<String>,
    pub linear_organization: Option<String>,
    pub linear_teams: Vec<String>,
    /// Lower-cased `owner/repo` or `owner/*`.
    pub github_repositories: Vec<String>,
}

fn list(env: &Env, var: &str) -> Vec<String> {
    env.raw(var)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn listed(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
}

impl RequesterGate {
    /// Reads the lists from `env`.
    pub fn from_env(env: &Env) -> Self {
        let one = |var: &str| {
            env.raw(var)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        RequesterGate {
            slack_teams: list(env, "SLACK_TEAM_IDS"),
            slack_app_id: one("SLACK_APP_ID"),
            slack_users: list(env, "SLACK_USER_IDS"),
            slack_channels: list(env, "SLACK_CHANNEL_IDS"),
            linear_organization: one("LINEAR_ORGANIZATION_ID"),
            linear_teams: list(env, "LINEAR_TEAM_IDS"),
            github_repositories: list(env, "GITHUB_ALLOWED_REPOSITORIES")
                .into_iter()
                .map(|r| r.to_lowercase())
                .collect(),
        }
    }

    /// Says at start which providers accept events from anyone who can reach them.
    pub fn log_unfiltered(&self, slack_enabled: bool, linear_enabled: bool) {
        if slack_enabled && (self.slack_teams.is_empty() || self.slack_app_id.is_none()) {
            tracing::warn!(
                "Slack events are not filtered by workspace or app: set SLACK_TEAM_IDS and SLACK_APP_ID so other workspaces and Slack Connect guests cannot use the fleet"
            );
        }
        if linear_enabled && self.linear_organization.is_none() {
            tracing::warn!(
                "Linear webhooks are not filtered by organisation: set LINEAR_ORGANIZATION_ID"
            );
        }
    }

    /// An Events API callback: workspace, app, and the sender's own workspace
    /// (a Slack Connect guest's `user_team` / `team` is theirs, not ours).
    pub fn slack_event(&self, payload: &Value) -> Result<(), &'static str> {
        if str_at(payload, &["type"]) == Some("url_verification") {
            return Ok(());
        }
        let event = payload.get("event").unwrap_or(&Value::Null);
        if !listed(&self.slack_teams, str_at(payload, &["team_id"])) {
            return Err("foreign_team");
        }
        for sender_team in [str_at(event, &["user_team"]), str_at(event, &["team"])]
            .into_iter()
            .flatten()
        {
            if !listed(&self.slack_teams, Some(sender_team)) {
                return Err("foreign_team");
            }
        }
        self.slack_rest(
            str_at(payload, &["api_app_id"]),
            str_at(event, &["user"]),
            str_at(event, &["channel"]),
        )
    }

    /// A slash command's form fields.
    pub fn slack_command(&self, command: &SlashCommand) -> Result<(), &'static str> {
        if !listed(&self.slack_teams, command.team_id.as_deref()) {
            return Err("foreign_team");
        }
        self.slack_rest(
            command.api_app_id.as_deref(),
            Some(&command.user_id),
            Some(&command.channel_id),
        )
    }

    fn slack_rest(
        &self,
        app: Option<&str>,
        user: Option<&str>,
        channel: Option<&str>,
    ) -> Result<(), &'static str> {
        if let Some(expected) = &self.slack_app_id
            && app != Some(expected.as_str())
        {
            return Err("foreign_app");
        }
        if !listed(&self.slack_users, user) {
            return Err("user_not_allowed");
        }
        if !listed(&self.slack_channels, channel) {
            return Err("channel_not_allowed");
        }
        Ok(())
    }

    /// A Linear delivery: organisation, then the issue's team.
    pub fn linear(&self, payload: &Value) -> Result<(), &'static str> {
        if let Some(expected) = &self.linear_organization
            && str_at(payload, &["organizationId"]) != Some(expected.as_str())
        {
            return Err("foreign_organization");
        }
        let data = payload.get("data").unwrap_or(&Value::Null);
        let team = str_at(data, &["teamId"]).or_else(|| str_at(data, &["issue", "teamId"]));
        if !listed(&self.linear_teams, team) {
            return Err("team_not_allowed");
        }
        Ok(())
    }

    /// A GitHub delivery: the repository it comes from.
    pub fn github(&self, payload: &Value) -> Result<(), &'static str> {
        if self.github_repositories.is_empty() || str_at(payload, &["zen"]).is_some() {
            return Ok(());
        }
        let Some(full_name) = str_at(payload, &["repository", "full_name"]) else {
            return Err("repository_not_allowed");
        };
        let full_name = full_name.to_lowercase();
        let owner = full_name.split('/').next().unwrap_or("");
        let allowed = self.github_repositories.iter().any(|entry| {
            *entry == full_name || entry.strip_suffix("/*").is_some_and(|o| o == owner)
        });
        if allowed {
            Ok(())
        } else {
            Err("repository_not_allowed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(pairs: &[(&str, &str)]) -> RequesterGate {
        RequesterGate::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    fn slack_event(team: &str, app: &str, user_team: Option<&str>) -> Value {
        let mut event = json!({"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.2", "text": "hi"});
        if let Some(t) = user_team {
            event["user_team"] = t.into();
        }
        json!({"type": "event_callback", "team_id": team, "api_app_id": app, "event": event})
    }

    #[test]
    fn slack_events_from_other_workspaces_apps_and_connect_guests_are_refused() {
        let gate = gate(&[("SLACK_TEAM_IDS", "T1, T2"), ("SLACK_APP_ID", "A1")]);
        assert_eq!(gate.slack_event(&slack_event("T1", "A1", None)), Ok(()));
        assert_eq!(
            gate.slack_event(&slack_event("T2", "A1", Some("T1"))),
            Ok(())
        );
        assert_eq!(
            gate.slack_event(&slack_event("T9", "A1", None)),
            Err("foreign_team")
        );
        assert_eq!(
            gate.slack_event(&slack_event("T1", "A9", None)),
            Err("foreign_app")
        );
        assert_eq!(
            gate.slack_event(&slack_event("T1", "A1", Some("TGUEST"))),
            Err("foreign_team")
        );
        // The URL handshake carries no team and must still be answered.
        assert_eq!(
            gate.slack_event(&json!({"type": "url_verification"})),
            Ok(())
        );
    }

    #[test]
    fn optional_slack_user_and_channel_lists() {
        let gate = gate(&[("SLACK_USER_IDS", "U1"), ("SLACK_CHANNEL_IDS", "C2")]);
        assert_eq!(
            gate.slack_event(&slack_event("T1", "A1", None)),
            Err("channel_not_allowed")
        );
        let gate = super::RequesterGate {
            slack_channels: vec!["C1".into()],
            ..gate
        };
        assert_eq!(gate.slack_event(&slack_event("T1", "A1", None)), Ok(()));
    }

    #[test]
    fn without_lists_nothing_is_filtered() {
        let gate = gate(&[]);
        assert_eq!(
            gate.slack_event(&slack_event("T9", "A9", Some("T8"))),
            Ok(())
        );
        assert_eq!(gate.linear(&json!({"organizationId": "o"})), Ok(()));
        assert_eq!(
            gate.github(&json!({"repository": {"full_name": "x/y"}})),
            Ok(())
        );
    }

    #[test]
    fn linear_organisation_and_team() {
        let gate = gate(&[
            ("LINEAR_ORGANIZATION_ID", "org-1"),
            ("LINEAR_TEAM_IDS", "team-a"),
        ]);
        let issue =
            |org: &str, team: &str| json!({"organizationId": org, "data": {"teamId": team}});
        assert_eq!(gate.linear(&issue("org-1", "team-a")), Ok(()));
        assert_eq!(
            gate.linear(&issue("org-2", "team-a")),
            Err("foreign_organization")
        );
        assert_eq!(
            gate.linear(&issue("org-1", "team-b")),
            Err("team_not_allowed")
        );
        let comment = json!({"organizationId": "org-1", "data": {"issue": {"teamId": "team-a"}}});
        assert_eq!(gate.linear(&comment), Ok(()));
    }

    #[test]
    fn github_owner_and_repository_entries() {
        let gate = gate(&[("GITHUB_ALLOWED_REPOSITORIES", "Acme/*, other/one")]);
        let from = |name: &str| json!({"repository": {"full_name": name}});
        assert_eq!(gate.github(&from("acme/api")), Ok(()));
        assert_eq!(gate.github(&from("Other/One")), Ok(()));
        assert_eq!(
            gate.github(&from("other/two")),
            Err("repository_not_allowed")
        );
        assert_eq!(
            gate.github(&from("acmex/api")),
            Err("repository_not_allowed")
        );
        assert_eq!(gate.github(&json!({"zen": "ping"})), Ok(()));
    }
}
