//! generator-worker integration tests: the handler against a fake
//! OpenAI-compatible server and the real Redis, and the worker through the real
//! broker.

mod broker;
mod diff;
mod generate;
mod helpers;
mod secrets;
