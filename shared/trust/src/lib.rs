//! Trust boundaries (see README "Security model"): what a request may make the
//! fleet reach and read.
//!
//! - [`outbound`]: the outbound URL guard. Every URL that comes from a request
//!   (a task's repository, an API callback) is checked before anything connects to
//!   it: https (or allow-listed http), no credentials, and only public addresses
//!   unless `CONTEXTEN_OUTBOUND_ALLOW` says otherwise. It hands back the checked
//!   addresses so the caller connects to exactly them.
//! - [`policy`]: the repository access policy (`CONTEXTEN_POLICY_FILE`): which
//!   requester scopes (a Slack channel, a Linear team, an API token, a GitHub
//!   owner) may read which repositories, reloaded when the file changes.
//! - [`redact`]: what may leave the fleet: secrets are masked in file contents
//!   before they are parsed, cached or put into a prompt, in generated files,
//!   and in what the operator console shows.
//!
//! All three are pure libraries: ingest and the workers call them at the edge.

pub mod outbound;
pub mod policy;
pub mod redact;
