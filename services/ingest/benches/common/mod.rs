//! What both ingest benchmarks share: the binary's allocator and the knobs
//! they read from the environment.

// The allocator of the ingest binary (see its main.rs), so memory and speed
// are measured as deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `name` from the environment as a number; `default` when unset or not one.
pub fn env_usize(name: &str, default: usize) -> usize {
    contexten_testkit::env_or(name, default)
}
