//! ingest against the real RabbitMQ and Redis, each test under its own prefix.

mod alarm;
mod api;
mod bounds;
mod broker_down;
mod console;
mod fixtures;
mod fuzz;
mod github;
mod gitlab;
mod helpers;
mod linear;
mod records;
mod redeliver;
mod rotation;
mod slack;
mod trust;
