use super::*;

const POLICY: &str = r#"
[[slack]]
team = "T0001"
channel = "C0123"
repositories = ["acme/api", "gitlab.com/acme/tools/*"]

[[slack]]
team = "T0002"
repositories = ["acme/*"]

[[linear]]
organization = "org-1"
team = "ENG"
repositories = ["acme/web"]

[[linear]]
organization = "org-2"
repositories = ["git.corp.example/*"]

[[github]]
owner = "Acme"
repositories = ["acme/docs"]

[[github]]
installation = 77
repositories = ["other/shared"]

[[api]]
token = "ci-bot"
repositories = ["acme/*"]

[[api]]
token = "*"
repositories = ["acme/public"]
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, Path::new("policy.toml")).unwrap()
}

fn repo(text: &str) -> RepoId {
    RepoId::parse(text).unwrap()
}

fn allowed(policy: &Policy, scope: Scope<'_>, repository: &str) -> bool {
    policy.decide(&scope, &repo(repository)).is_allowed()
}

fn refusal(policy: &Policy, scope: Scope<'_>, repository: &str) -> String {
    match policy.decide(&scope, &repo(repository)) {
        Decision::Allowed => panic!("{repository} was allowed"),
        Decision::Refused { permission } => permission,
    }
}

fn slack<'a>(team: &'a str, channel: &'a str) -> Scope<'a> {
    Scope::Slack {
        team,
        channel: Some(channel),
    }
}

#[test]
fn slack_channels_and_teams_read_what_their_entries_list() {
    let p = policy();
    assert!(allowed(
        &p,
        slack("T0001", "C0123"),
        "https://github.com/Acme/API.git"
    ));
    assert!(allowed(
        &p,
        slack("T0001", "C0123"),
        "gitlab.com/acme/tools/sub/x"
    ));
    assert!(!allowed(&p, slack("T0001", "C0999"), "acme/api"));
    assert!(!allowed(&p, slack("T0001", "C0123"), "acme/secret"));
    // A team-wide entry covers every channel, and a request without a channel.
    assert!(allowed(
        &p,
        slack("T0002", "Cxyz"),
        "git@github.com:acme/secret.git"
    ));
    let no_channel = Scope::Slack {
        team: "T0002",
        channel: None,
    };
    assert!(allowed(&p, no_channel, "acme/secret"));
    assert!(!allowed(&p, slack("T0003", "C0123"), "acme/api"));
    assert_eq!(
        refusal(&p, slack("T0001", "C0123"), "acme/secret"),
        "Slack channel C0123 in team T0001 may not read github.com/acme/secret: add it to a [[slack]] entry of the policy file"
    );
}

#[test]
fn linear_teams_match_by_id_or_key() {
    let p = policy();
    let by_key = Scope::Linear {
        organization: "org-1",
        team_id: Some("team-uuid"),
        team_key: Some("eng"),
    };
    assert!(allowed(&p, by_key, "acme/web"));
    assert!(!allowed(&p, by_key, "acme/api"));
    let other_team = Scope::Linear {
        organization: "org-1",
        team_id: Some("x"),
        team_key: Some("OPS"),
    };
    assert!(!allowed(&p, other_team, "acme/web"));
    let any_team = Scope::Linear {
        organization: "org-2",
        team_id: None,
        team_key: None,
    };
    assert!(allowed(&p, any_team, "https://git.corp.example/a/b.git"));
    assert!(refusal(&p, other_team, "acme/web").starts_with("Linear team OPS of organization org-1 may not read github.com/acme/web: add it to a [[linear]] entry"));
}

#[test]
fn github_events_read_their_own_repository_and_their_entry() {
    let p = policy();
    let own = repo("acme/api");
    let event = Scope::Github {
        owner: "acme",
        installation: Some(5),
        own_repository: &own,
    };
    assert!(allowed(&p, event, "https://github.com/acme/API"));
    assert!(allowed(&p, event, "acme/docs"));
    assert!(!allowed(&p, event, "acme/secret"));
    assert!(!allowed(&p, event, "other/shared"));
    let installed = Scope::Github {
        owner: "someone",
        installation: Some(77),
        own_repository: &own,
    };
    assert!(allowed(&p, installed, "other/shared"));
    assert_eq!(
        refusal(&p, event, "acme/secret"),
        "GitHub events of acme (installation 5) read their own repository github.com/acme/api and may not read github.com/acme/secret: add it to a [[github]] entry of the policy file"
    );
}

#[test]
fn api_tokens_read_their_token_file_list_or_their_entries() {
    let p = policy();
    let own = [RepoPattern::parse("gitlab.com/ci/*").unwrap()];
    let ci = Scope::Api {
        token: "ci-bot",
        token_repositories: &[],
    };
    assert!(allowed(&p, ci, "acme/anything"));
    let other = Scope::Api {
        token: "other",
        token_repositories: &own,
    };
    assert!(allowed(&p, other, "gitlab.com/ci/runner"));
    assert!(allowed(&p, other, "acme/public"));
    assert!(!allowed(&p, other, "acme/anything"));
    assert_eq!(
        refusal(&p, other, "acme/anything"),
        "API token other may not read github.com/acme/anything: add it to the token's repositories in the API token file or to an [[api]] entry of the policy file"
    );
}

#[test]
fn without_a_policy_only_a_github_event_reads_its_own_repository() {
    let none = Policy::none();
    let own = repo("acme/api");
    let event = Scope::Github {
        owner: "acme",
        installation: None,
        own_repository: &own,
    };
    assert!(allowed(&none, event, "git@github.com:Acme/api.git"));
    assert!(!allowed(&none, event, "acme/docs"));
    let ci = Scope::Api {
        token: "ci-bot",
        token_repositories: &[],
    };
    assert!(!allowed(&none, ci, "acme/api"));
    let refused = refusal(&none, slack("T0001", "C0123"), "acme/api");
    assert!(
        refused.contains("CONTEXTEN_POLICY_FILE is not set"),
        "{refused}"
    );
}

#[test]
fn scopes_do_not_borrow_each_others_entries() {
    // The [[api]] "*" entry is for API tokens only.
    let p = policy();
    assert!(!allowed(&p, slack("T0009", "C1"), "acme/public"));
    let own = repo("x/y");
    let event = Scope::Github {
        owner: "x",
        installation: None,
        own_repository: &own,
    };
    assert!(!allowed(&p, event, "acme/public"));
}

#[test]
fn malformed_files_name_the_file_and_the_problem() {
    let path = Path::new("/etc/contexten/policy.toml");
    for (text, expected) in [
        (
            "[[slack]]\nteam = \"T1\"\nrepositories = []\nextra = 1\n",
            "unknown field `extra`",
        ),
        ("[[gitlab]]\nrepositories = []\n", "unknown field `gitlab`"),
        ("[[slack]]\nrepositories = []\n", "missing field `team`"),
        (
            "[[github]]\nrepositories = [\"acme/x\"]\n",
            "[[github]] #1: needs `owner` or `installation`",
        ),
        (
            "[[api]]\ntoken = \"a\"\nrepositories = [\"ok/x\"]\n[[api]]\ntoken = \"b\"\nrepositories = [\"*\"]\n",
            "[[api]] #2: \"*\" is not a repository",
        ),
        ("slack = 3", "invalid type"),
    ] {
        let error = Policy::parse(text, path).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid policy file /etc/contexten/policy.toml: "),
            "{error}"
        );
        assert!(error.contains(expected), "{expected}: {error}");
    }
    assert_eq!(Policy::parse("", path).unwrap().grants.len(), 0);
}
