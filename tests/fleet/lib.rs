//! The whole-fleet harness: starts the five real binaries as child processes on a
//! unique prefix and free ports, points every provider base URL at local fakes,
//! and lets a test kill (SIGKILL) and restart any of them.

pub mod cleanup;
pub mod fakes;
pub mod harness;
pub mod load;
pub mod otlp;
pub mod process;
