//! Strategy and priority choice (the original "method selection"): explicit
//! commands, then labels, then the rules of a TOML file (shipped defaults in
//! `routing.toml`), then the default. Also command/mention detection; hint
//! extraction lives in [`crate::hints`].

pub use crate::hints::{
    PUBLIC_GIT_SERVERS, extract_hints, repository_in_text, repository_on_servers,
};
use contexten_envelope::{Hints, Priority, SourceKind, Strategy};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The rules shipped with the crate.
pub const DEFAULT_RULES: &str = include_str!("../routing.toml");

/// Why a rules file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read routing rules {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid routing rules: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    defaults: Defaults,
    #[serde(default)]
    priorities: HashMap<SourceKind, Priority>,
    #[serde(default)]
    labels: HashMap<String, Strategy>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    repositories: Repositories,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    strategy: Strategy,
}

/// Repository URLs for sources that do not carry one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repositories {
    #[serde(default)]
    pub linear_teams: HashMap<String, String>,
    #[serde(default)]
    pub slack_channels: HashMap<String, String>,
}

/// One rule: every condition given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    strategy: Strategy,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    sources: Vec<SourceKind>,
    has_repository: Option<bool>,
    has_code_block: Option<bool>,
    min_paths: Option<usize>,
    max_paths: Option<usize>,
    min_symbols: Option<usize>,
    max_symbols: Option<usize>,
}

/// What the rules look at.
#[derive(Debug, Clone)]
pub struct RouteInput<'a> {
    pub kind: SourceKind,
    pub text: &'a str,
    /// A strategy named explicitly, with the rule to record (`command:agent`).
    pub explicit: Option<(Strategy, String)>,
    pub labels: &'a [String],
    pub has_repository: bool,
    pub hints: &'a Hints,
}

/// The choice and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub strategy: Strategy,
    pub rule: String,
    pub priority: Priority,
}

/// The loaded rules.
#[derive(Debug, Clone)]
pub struct Routing {
    file: RulesFile,
    /// Base URLs (ending in `/`) of the git servers whose repository URLs are
    /// recognised in message text: github.com, gitlab.com and
    /// `CONTEXTEN_GIT_SERVERS`.
    git_servers: Vec<String>,
}

impl Routing {
    /// Parses rules from TOML text.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let mut file: RulesFile =
            toml::from_str(text).map_err(|e| RulesError::Invalid(e.to_string()))?;
        file.labels = file
            .labels
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        for rule in &mut file.rules {
            rule.keywords = rule.keywords.iter().map(|k| k.to_lowercase()).collect();
        }
        Ok(Routing {
            file,
            git_servers: PUBLIC_GIT_SERVERS.map(str::to_owned).to_vec(),
        })
    }

    /// Also recognises repository URLs on these servers (on-premises GitHub
    /// Enterprise, GitLab or Gitea), given as base URLs.
    pub fn with_git_servers(mut self, servers: &[String]) -> Self {
        for server in servers {
            let base = format!("{}/", server.trim().trim_end_matches('/'));
            if !self.git_servers.contains(&base) {
                self.git_servers.push(base);
            }
        }
        self
    }

    /// A repository URL the text names, on a recognised git server.
    pub fn repository_in_text(&self, text: &str) -> Option<String> {
        repository_on_servers(text, &self.git_servers)
    }

    /// The shipped defaults.
    pub fn shipped() -> Self {
        // The shipped file is covered by a unit test, so it always parses.
        Self::parse(DEFAULT_RULES).unwrap_or_else(|e| unreachable!("shipped rules: {e}"))
    }

    /// Rules from `path`, or the shipped defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, RulesError> {
        match path {
            None => Ok(Self::shipped()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// Repository URLs for sources without one.
    pub fn repositories(&self) -> &Repositories {
        &self.file.repositories
    }

    /// Whether `label` (any case) chooses a strategy.
    pub fn label_strategy(&self, label: &str) -> Option<Strategy> {
        self.file.labels.get(&label.to_lowercase()).copied()
    }

    /// The default priority of a source.
    pub fn source_priority(&self, kind: &SourceKind) -> Priority {
        self.file
            .priorities
            .get(kind)
            .copied()
            .unwrap_or(Priority::Normal)
    }

    /// Chooses strategy and priority for a request.
    pub fn decide(&self, input: &RouteInput<'_>) -> Decision {
        let priority = self.source_priority(&input.kind);
        if let Some((strategy, rule)) = &input.explicit {
            return Decision {
                strategy: *strategy,
                rule: rule.clone(),
                priority,
            };
        }
        for label in input.labels {
            if let Some(strategy) = self.label_strategy(label) {
                return Decision {
                    strategy,
                    rule: format!("label:{}", label.to_lowercase()),
                    priority,
                };
            }
        }
        let text = input.text.to_lowercase();
        for rule in &self.file.rules {
            if rule.matches(input, &text) {
                return Decision {
                    strategy: rule.strategy,
                    rule: format!("rules:{}", rule.name),
                    priority: rule.priority.unwrap_or(priority),
                };
            }
        }
        Decision {
            strategy: self.file.defaults.strategy,
            rule: "default".into(),
            priority,
        }
    }
}

impl Rule {
    fn matches(&self, input: &RouteInput<'_>, lower_text: &str) -> bool {
        let within = |n: usize, min: Option<usize>, max: Option<usize>| {
            min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)
        };
        (self.keywords.is_empty() || self.keywords.iter().any(|k| lower_text.contains(k)))
            && (self.sources.is_empty() || self.sources.contains(&input.kind))
            && self
                .has_repository
                .is_none_or(|h| h == input.has_repository)
            && self
                .has_code_block
                .is_none_or(|h| h == input.text.contains("```"))
            && within(input.hints.paths.len(), self.min_paths, self.max_paths)
            && within(
                input.hints.symbols.len(),
                self.min_symbols,
                self.max_symbols,
            )
    }
}

/// A request addressed to the bot: what is left once the prefix or mention is
/// removed, and the strategy named by its first word, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub text: String,
    pub explicit: Option<(Strategy, String)>,
}

/// Finds a command in `text`: a line starting with `prefix` (`/contexten`), or an
/// `@mention` of `mention` (the bot's login). `None` when neither is there.
pub fn find_command(text: &str, prefix: &str, mention: Option<&str>) -> Option<Command> {
    let by_prefix = text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.trim_start().strip_prefix(prefix)?;
        // `/contextenfoo` is not our command.
        if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
            return None;
        }
        let mut out: Vec<&str> = text.lines().collect();
        out[i] = rest;
        Some(out[i..].join("\n"))
    });
    let rest = by_prefix.or_else(|| {
        let login = mention?;
        let needle = format!("@{login}");
        // Compared ASCII-case-insensitively on the text's own bytes: lower-casing
        // the whole text first would change byte offsets (`İ` becomes three
        // bytes, the Kelvin sign one) and slice the text off a char boundary.
        // A match starts at `@` and ends with the needle's last byte, so both
        // ends are char boundaries.
        let (bytes, wanted) = (text.as_bytes(), needle.as_bytes());
        (0..bytes.len().saturating_sub(wanted.len() - 1)).find_map(|start| {
            let end = start + wanted.len();
            if !bytes[start..end].eq_ignore_ascii_case(wanted) {
                return None;
            }
            let before_ok = !is_login_char(text[..start].chars().next_back());
            let after_ok = !is_login_char(text[end..].chars().next());
            (before_ok && after_ok).then(|| format!("{}{}", &text[..start], &text[end..]))
        })
    })?;
    Some(command_words(&rest))
}

fn is_login_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Splits off a leading strategy word.
pub fn command_words(rest: &str) -> Command {
    let trimmed = rest.trim();
    let (first, tail) = match trimmed.split_once(char::is_whitespace) {
        Some((first, tail)) => (first, tail.trim()),
        None => (trimmed, ""),
    };
    let strategy = match first.to_lowercase().as_str() {
        "generate" => Some(Strategy::Simple),
        "context" => Some(Strategy::Context),
        "agent" => Some(Strategy::Agent),
        _ => None,
    };
    match strategy {
        Some(s) => Command {
            text: tail.to_owned(),
            explicit: Some((s, format!("command:{}", first.to_lowercase()))),
        },
        None => Command {
            text: trimmed.to_owned(),
            explicit: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(kind: SourceKind, text: &str, repo: bool, labels: &[String]) -> Decision {
        let hints = extract_hints(text);
        let cmd = command_words(text);
        Routing::shipped().decide(&RouteInput {
            kind,
            text: &cmd.text,
            explicit: cmd.explicit,
            labels,
            has_repository: repo,
            hints: &hints,
        })
    }

    #[test]
    fn shipped_rules_parse_and_choose_as_documented() {
        let d = decide(SourceKind::GITHUB, "agent fix the flaky test", true, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Agent, "command:agent")
        );
        let d = decide(SourceKind::GITHUB, "please refactor the parser", true, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Agent, "rules:agent-work")
        );
        let d = decide(SourceKind::SLACK, "please refactor the parser", false, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Simple, "rules:no-repository")
        );
        assert_eq!(d.priority, Priority::Interactive);
        let d = decide(SourceKind::API, "speed up `parse_duration`", true, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Context, "rules:one-function")
        );
        assert_eq!(d.priority, Priority::Batch);
        let d = decide(SourceKind::GITHUB, "touch src/a.rs and src/b.rs", true, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Agent, "rules:multi-file")
        );
        let labels = vec!["Contexten:Agent".to_owned()];
        let d = decide(
            SourceKind::GITHUB,
            "speed up `parse_duration`",
            true,
            &labels,
        );
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Agent, "label:contexten:agent")
        );
        let d = decide(SourceKind::LINEAR, "make it faster", true, &[]);
        assert_eq!(
            (d.strategy, d.rule.as_str()),
            (Strategy::Context, "default")
        );
        assert_eq!(d.priority, Priority::Normal);
    }

    #[test]
    fn commands_are_found_by_prefix_or_mention_only() {
        let c = find_command("hi\n/contexten generate a parser", "/contexten", None).unwrap();
        assert_eq!(c.text, "a parser");
        assert_eq!(c.explicit.unwrap().1, "command:generate");
        assert!(find_command("/contextenx do it", "/contexten", None).is_none());
        assert!(find_command("no command here", "/contexten", Some("ctx-bot")).is_none());
        let c = find_command(
            "Hey @Ctx-Bot please add tests",
            "/contexten",
            Some("ctx-bot"),
        )
        .unwrap();
        assert_eq!(c.text, "Hey  please add tests");
        assert!(find_command("mail @ctx-botty", "/contexten", Some("ctx-bot")).is_none());
    }
}
