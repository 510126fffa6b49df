//! Integration tests of the worker runtime against the real RabbitMQ and Redis.
//! Each test uses its own prefix, so they run in parallel and leave nothing behind.

mod alarm;
mod dead_queue;
mod helpers;
mod poison;
mod quorum;
mod roles;
mod runtime;
mod tls;
