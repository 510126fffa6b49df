//! The task envelope: one versioned JSON document (`"v": 1`) that travels through
//! every stage of the fleet, and the names (exchanges, queues, headers, Redis keys)
//! that every service derives from one prefix.
//!
//! Flow: ingest creates a [`TaskEnvelope`]; the context worker fills
//! [`TaskEnvelope::context`]; the generator or agent worker fills
//! [`TaskEnvelope::result`]; the dispatcher posts [`TaskEnvelope::reply`] back to
//! [`Source::reply_to`]. Each stage appends a [`StageTiming`] and adds to the
//! [`CostLedger`].
//!
//! # Schema (version 1)
//!
//! | field | type | set by |
//! |---|---|---|
//! | `v` | integer, always `1` | creator |
//! | `task_id` | UUIDv7 string | ingest |
//! | `correlation_id` | string (the provider's delivery id or a UUID) | ingest |
//! | `created_at_ms` | unix milliseconds | ingest |
//! | `source` | `{kind, delivery_id, requested_by, reply_to}` | ingest |
//! | `request` | `{text, repository: {url, ref}, hints}`; a GitHub pull request's `ref` is `refs/pull/{n}/head` and its `extra` holds `github_pull_request` (the number) and, when the event has them, `github_pull_base` `{ref, sha}`, `github_pull_head_sha`, `github_default_branch`, `github_review_line` | ingest |
//! | `strategy` | `simple` \| `context` \| `agent` | ingest |
//! | `strategy_rule` | the rule that chose the strategy | ingest |
//! | `priority` | `batch` \| `normal` \| `interactive` \| `operator` | ingest |
//! | `conversation` | `{id, previous_task_id}` | ingest |
//! | `attempt` | retries spent in the current stage | broker runtime |
//! | `hop` | messages published for the task so far | broker runtime |
//! | `context` | ranked files, assembled prompt, redaction counts; `extra.commit` (the commit read), `extra.pull_request` (`{number, base_ref, base_from, base_commit, against_merge_base, changed_files, diff_truncated}`) | context worker |
//! | `result` | the answer: code, diff, agent run, or failure | generator / agent |
//! | `reply` | what the dispatcher posts: `ack` \| `progress` \| `final` \| `failure` | any stage |
//! | `timings` | `[{stage, started_at_ms, finished_at_ms}]` | broker runtime |
//! | `cost` | tokens and API calls | generator / agent |
//! | `fallback_reason` | why generation fell back to the agent, `<code>: <one sentence>` without internals (only strategies that allow it: [`Strategy::allows_agent_fallback`]); the agent's last answer repeats it | generator |
//! | `agent_run` | `{run_id, created_at_ms, polls, web_url}`: the Codegen run a status check polls (agent stage's own messages only) | agent |
//!
//! Fields this version does not know are kept in `extra` maps and written back
//! unchanged, so an older worker never strips what a newer one added.

mod envelope;
mod names;
mod reason;
mod stage;
pub mod time;

pub use envelope::*;
pub use names::*;
pub use reason::Reason;
pub use stage::*;
