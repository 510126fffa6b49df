//! Stages, strategies and priorities, and the route each strategy takes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A step of the flow. Every stage but `Ingest` has its own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Ingest,
    Context,
    Generate,
    Agent,
    Dispatch,
}

impl Stage {
    /// The stages that own a queue, in flow order.
    pub const QUEUED: [Stage; 4] = [
        Stage::Context,
        Stage::Generate,
        Stage::Agent,
        Stage::Dispatch,
    ];

    /// The lowercase name used in queue names, routing keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Context => "context",
            Stage::Generate => "generate",
            Stage::Agent => "agent",
            Stage::Dispatch => "dispatch",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown stage {0:?} (expected ingest, context, generate, agent or dispatch)")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Stage::Ingest),
            "context" => Ok(Stage::Context),
            "generate" => Ok(Stage::Generate),
            "agent" => Ok(Stage::Agent),
            "dispatch" => Ok(Stage::Dispatch),
            other => Err(UnknownStage(other.to_owned())),
        }
    }
}

/// How a task is answered (docs/design.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// ingest → generate → dispatch (no repository to read).
    Simple,
    /// ingest → context → generate → dispatch.
    #[default]
    Context,
    /// ingest → context → agent → (poll → agent)* → dispatch.
    Agent,
}

impl Strategy {
    /// The lowercase name used in JSON, status records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Simple => "simple",
            Strategy::Context => "context",
            Strategy::Agent => "agent",
        }
    }

    /// The first queued stage of this strategy.
    pub fn first_stage(self) -> Stage {
        match self {
            Strategy::Simple => Stage::Generate,
            Strategy::Context | Strategy::Agent => Stage::Context,
        }
    }

    /// Whether a failed generation may hand this task to the agent stage. A
    /// Codegen run can write to repositories (branches, pull requests), so only
    /// a strategy that already routes through the agent may fall back to it; a
    /// request routed to plain generation gets a failure answer instead. This is
    /// the one place a strategy is marked as allowing the fallback.
    pub fn allows_agent_fallback(self) -> bool {
        match self {
            Strategy::Agent => true,
            Strategy::Simple | Strategy::Context => false,
        }
    }

    /// The stage after `stage` on the normal path; the fallback from generate to
    /// agent is the generator's own decision (see [`Strategy::allows_agent_fallback`]),
    /// not part of the route.
    pub fn next_after(self, stage: Stage) -> Stage {
        match (self, stage) {
            (Strategy::Simple, Stage::Ingest) => Stage::Generate,
            (_, Stage::Ingest) => Stage::Context,
            (Strategy::Agent, Stage::Context) => Stage::Agent,
            (_, Stage::Context) => Stage::Generate,
            (_, Stage::Generate | Stage::Agent | Stage::Dispatch) => Stage::Dispatch,
        }
    }
}

/// Queue priority: few levels on purpose (each is a sub-queue in the broker).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// API batches.
    Batch,
    /// A GitHub or Linear comment.
    #[default]
    Normal,
    /// A person waiting in a chat.
    Interactive,
    /// Replays and operator actions.
    Operator,
}

impl Priority {
    /// The highest AMQP priority a stage queue accepts (`x-max-priority`).
    pub const MAX_AMQP: u8 = 3;

    /// The lowercase name used in JSON, status records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Batch => "batch",
            Priority::Normal => "normal",
            Priority::Interactive => "interactive",
            Priority::Operator => "operator",
        }
    }

    /// The AMQP `priority` property for this level.
    pub fn amqp(self) -> u8 {
        match self {
            Priority::Batch => 0,
            Priority::Normal => 1,
            Priority::Interactive => 2,
            Priority::Operator => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_ends_in_dispatch() {
        for strategy in [Strategy::Simple, Strategy::Context, Strategy::Agent] {
            let mut stage = Stage::Ingest;
            let mut hops = 0;
            while stage != Stage::Dispatch {
                stage = strategy.next_after(stage);
                hops += 1;
                assert!(hops <= 3, "{strategy:?} loops");
            }
        }
        assert_eq!(Strategy::Agent.next_after(Stage::Context), Stage::Agent);
        assert_eq!(
            Strategy::Context.next_after(Stage::Context),
            Stage::Generate
        );
        assert_eq!(Strategy::Simple.first_stage(), Stage::Generate);
    }

    #[test]
    fn only_a_strategy_that_includes_the_agent_may_fall_back_to_it() {
        assert!(Strategy::Agent.allows_agent_fallback());
        assert!(!Strategy::Simple.allows_agent_fallback());
        assert!(!Strategy::Context.allows_agent_fallback());
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in [
            Stage::Ingest,
            Stage::Context,
            Stage::Generate,
            Stage::Agent,
            Stage::Dispatch,
        ] {
            assert_eq!(stage.as_str().parse::<Stage>().unwrap(), stage);
        }
        assert!("nope".parse::<Stage>().is_err());
    }

    #[test]
    fn priorities_fit_the_queue_maximum() {
        assert_eq!(Priority::Operator.amqp(), Priority::MAX_AMQP);
        assert!(Priority::Batch.amqp() < Priority::Interactive.amqp());
    }
}
