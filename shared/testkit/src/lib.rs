//! Test support: throwaway RabbitMQ and Redis nodes that a test owns (it may
//! kill, restart, pause or starve them without touching the machine's own
//! services), per-test prefixes whose Redis keys and broker topology are
//! removed on drop (even when the test panics), polling with a deadline, a
//! TCP proxy whose connections a test can cut, git test repositories,
//! certificates for TLS tests, and free loopback ports.
//!
//! Needs `/usr/lib/rabbitmq/bin/rabbitmq-server` (Debian's `rabbitmq-server`
//! package), `redis-server`, `git` and `openssl` on the machine; `make
//! services` installs them (see README.md).

#[cfg(feature = "broker")]
pub mod broker;
mod certs;
mod cluster;
mod eventually;
mod git;
#[cfg(feature = "git-http")]
pub mod git_http;
mod port;
mod prefix;
mod process;
mod proxy;
mod rabbit;
mod redis_node;

pub use certs::TestCerts;
pub use cluster::{RabbitCluster, RedisSentinelGroup};
pub use eventually::{Check, eventually, eventually_blocking, poll};
pub use git::{GitRepo, git};
pub use port::free_port;
pub use prefix::{TestPrefix, delete_keys, keys_matching, machine_amqp_url, machine_redis_url};
pub use proxy::TcpProxy;
pub use rabbit::{RabbitNode, RabbitOptions};
pub use redis_node::{RedisNode, RedisOptions};

/// Runs `program` with `args`, panicking with its stderr when it fails;
/// returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Replaces the file at `path` with `content` in one step (written beside it,
/// then renamed over it), as a Kubernetes Secret volume swaps its files.
pub fn replace_file(path: &std::path::Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap_or_else(|e| panic!("writing {}: {e}", next.display()));
    std::fs::rename(&next, path)
        .unwrap_or_else(|e| panic!("renaming onto {}: {e}", path.display()));
}

/// The variable `name` parsed as `T`, or `default` when unset or unreadable
/// (benchmark knobs such as `BENCH_MESSAGES`).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A RabbitMQ and a Redis node, each with a TLS listener on `certs` (and its
/// plain one), started together.
pub async fn tls_nodes(certs: &TestCerts) -> anyhow::Result<(RabbitNode, RedisNode)> {
    let (rabbit, redis) = tokio::join!(
        RabbitNode::start(RabbitOptions::default().tls(certs)),
        RedisNode::start(RedisOptions::default().tls(certs)),
    );
    Ok((rabbit?, redis?))
}

/// How long ago `path` was last modified; panics when it cannot be read.
pub fn file_age(path: &std::path::Path) -> std::time::Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("the file's modification time")
        .elapsed()
        .unwrap_or_default()
}
