//! Integration tests of the agent worker against a fake Codegen server and the
//! real RabbitMQ and Redis (each test under its own prefix).

mod breaker;
mod failures;
mod fake;
mod follow_up;
mod helpers;
mod idempotency;
mod lifecycle;
mod limits;
mod requester;
