//! Test support: throwaway RabbitMQ and Redis nodes that a test owns (it may
//! kill, restart, pause or starve them without touching the machine's own
//! services), certificates for TLS tests, and free loopback ports.
//!
//! Needs `/usr/lib/rabbitmq/bin/rabbitmq-server` (Debian's `rabbitmq-server`
//! package), `redis-server` and `openssl` on the machine; `make services`
//! installs them (see README.md).

mod certs;
mod port;
mod process;
mod rabbit;
mod redis;

pub use certs::TestCerts;
pub use port::free_port;
pub use rabbit::{RabbitNode, RabbitOptions};
pub use redis::{RedisNode, RedisOptions};
