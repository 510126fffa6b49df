//! The generate stage (docs/design.md §1 "Autogenlib"; docs/platforms.md §6.1, §6.2):
//! context-aware code generation with an LLM, cached, validated, with fallback to
//! the agent.
//!
//! Flow of one task through [`GenerateHandler`]:
//! 1. [`job`]: gather what to generate from the envelope (request, hints, the
//!    context worker's prompt) and the repository snapshot ([`repo`]): the kind
//!    (new code, or a diff when the target file exists), language, symbol, the
//!    target file's code and usage snippets, read only through [`files`]
//!    (codemap's sensitive-path filter before any read, codemap's redactor on
//!    everything that reaches a prompt).
//! 2. [`prompt`]: render the versioned templates (`templates/v1/`).
//! 3. No provider configured → a labelled context-only answer ([`answer`]).
//! 4. Cache key (prompt, context fingerprint, model, temperature, language,
//!    template version) → memory/disk/Redis cache (`contexten-cache`); identical
//!    tasks in flight share one generation (single flight + Redis lock).
//! 5. [`engine`]: the call under concurrency, rate and token limits, the shared
//!    circuit breaker and retries honouring `Retry-After`.
//! 6. [`extract`] + [`validate`]: whole text → fenced blocks → diff; tree-sitter
//!    ([`syntax`]) with no ERROR/MISSING nodes; diffs must apply ([`patch`]).
//!    One repair round with the error; then fallback to the agent.

pub mod answer;
pub mod config;
pub mod engine;
pub mod extract;
pub mod files;
pub mod handler;
pub mod job;
pub mod patch;
pub mod prompt;
pub mod repo;
pub mod syntax;
pub mod validate;

pub use config::GeneratorConfig;
pub use handler::{Answer, GenerateHandler, GeneratorError, GeneratorStats, Provenance};
