//! Integration tests: small real-shaped repositories written into temp dirs.

mod caching;
mod cross_file;
mod helpers;
mod languages;
mod local_reads;
mod memory;
mod overview;
mod prompt;
mod ranking;
mod secrets;
#[cfg(feature = "redis")]
mod shared_map;
