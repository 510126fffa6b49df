//! Integration tests of the worker runtime against the real RabbitMQ and Redis.
//! Each test uses its own prefix, so they run in parallel and leave nothing behind.

mod helpers;
mod poison;
mod runtime;
