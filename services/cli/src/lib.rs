//! The `contexten` CLI: its operations live in `contexten-operations` (shared
//! with ingest's console); this crate adds the exit codes and output formats.

pub mod error;
pub mod output;

pub use contexten_operations::*;
pub use error::{CliError, ExitCode};
