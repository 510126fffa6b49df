//! The agent stage (docs/design.md §1, §2): complex tasks through the Codegen agent REST
//! API (docs/platforms.md §5).
//!
//! - [`codegen`]: the typed client (create, get, resume, list runs), both error
//!   body shapes, the case-insensitive status mapping.
//! - [`AgentHandler`]: starts or resumes a run, records it against the task in
//!   Redis before the delivery is acked (so a redelivery never starts a second
//!   run), sends a progress answer with the run's link, and polls statelessly
//!   through the delay queues until the run ends or outlives `AGENT_MAX_RUN_SECS`.
//! - [`gate`]: the shared `codegen` circuit breaker and the fleet-wide rate
//!   limits (creations, other requests) every replica shares through Redis.
//! - [`records`]: the task → run records; [`answers`]: prompts and answers.
//! - [`slots`]: at most `AGENT_MAX_RUNS_PER_REQUESTER` runs in progress per
//!   requester, fleet-wide; more wait (rescheduled), then get an answer.
//! - [`AgentSettings`]: the stage's settings (table in [`settings`]).
//!
//! Flow: `context ─▶ agent ─▶ (status check ─▶ agent)* ─▶ dispatch`.

pub mod answers;
pub mod codegen;
pub mod gate;
mod handler;
pub mod records;
pub mod settings;
pub mod slots;

pub use handler::AgentHandler;
pub use settings::AgentSettings;
