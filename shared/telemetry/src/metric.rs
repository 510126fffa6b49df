//! Metric names (one place, never retyped) and the small functions that count.
//! Labels stay low-cardinality: stage, outcome, reason; never a task id.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use std::time::Duration;

/// Deliveries a stage received.
pub const STAGE_RECEIVED: &str = "contexten_stage_received_total";
/// Deliveries a stage finished (forwarded or done).
pub const STAGE_DONE: &str = "contexten_stage_done_total";
/// Deliveries sent to a retry tier.
pub const STAGE_RETRIED: &str = "contexten_stage_retried_total";
/// Deliveries dead-lettered, by reason.
pub const STAGE_DEAD_LETTERED: &str = "contexten_stage_dead_lettered_total";
/// Redeliveries skipped because the stage had already completed the task.
pub const STAGE_DUPLICATES: &str = "contexten_stage_duplicates_skipped_total";
/// Handler latency per stage.
pub const HANDLER_DURATION: &str = "contexten_handler_duration_seconds";
/// Broker reconnections.
pub const BROKER_RECONNECTS: &str = "contexten_broker_reconnects_total";
/// Times a Redis-backed guarantee degraded because Redis was unreachable.
pub const REDIS_DEGRADED: &str = "contexten_redis_degraded_total";
/// Writes a Redis refused while up (`OOM`, `MISCONF`, `READONLY`), by role
/// (`records`, `cache`).
pub const REDIS_REFUSED: &str = "contexten_redis_refused_total";
/// Failure answers that could not be delivered because dispatch itself failed.
pub const UNANSWERED: &str = "contexten_dispatch_dead_letters_waiting_total";
/// Replies the dispatcher handled, by provider, reply kind and outcome.
pub const DISPATCH_REPLIES: &str = "contexten_dispatch_replies_total";
/// Depth of a queue as last seen.
pub const QUEUE_DEPTH: &str = "contexten_queue_depth";
/// Agent run lifecycle events (created, resumed, adopted, succeeded, failed, …).
pub const AGENT_RUNS: &str = "contexten_agent_runs_total";
/// Codegen API requests by endpoint and outcome.
pub const CODEGEN_REQUESTS: &str = "contexten_codegen_requests_total";
/// Agent tasks rescheduled without an attempt (breaker open, rate limit).
pub const AGENT_DEFERRED: &str = "contexten_agent_deferred_total";
/// Requests ingest answered, by provider and outcome (accepted, duplicate,
/// ignored, rejected, unavailable).
pub const INGEST_REQUESTS: &str = "contexten_ingest_requests_total";
/// Requests ingest ignored (answered 2xx, no task), by provider and reason.
pub const INGEST_IGNORED: &str = "contexten_ingest_ignored_total";
/// Requests ingest refused with a 4xx, by provider and reason.
pub const INGEST_REJECTED: &str = "contexten_ingest_rejected_total";
/// Tasks ingest created, by source and strategy.
pub const INGEST_TASKS: &str = "contexten_ingest_tasks_total";
/// Time from request to answer at ingest.
pub const INGEST_DURATION: &str = "contexten_ingest_request_duration_seconds";
/// GitHub deliveries refused while the broker was down, recorded for redelivery.
pub const INGEST_FAILED_RECORDED: &str = "contexten_ingest_failed_deliveries_recorded_total";
/// Acknowledgements ingest could not publish (the task itself was accepted).
pub const INGEST_ACKS_LOST: &str = "contexten_ingest_acks_lost_total";
/// Publishes given up on, by reason (`blocked`: the broker blocks publishers;
/// `confirm_timeout`: no confirm within `PUBLISH_CONFIRM_TIMEOUT_MS`).
pub const PUBLISH_FAILED: &str = "contexten_publish_failed_total";
/// Dead letters a full dead queue refused (`DEAD_QUEUE_MAX_LENGTH`), by stage
/// and reason: logged, never kept.
pub const DEAD_LETTERS_REFUSED: &str = "contexten_dead_letters_refused_total";

/// Registers descriptions so `/metrics` explains each series.
pub fn describe_all() {
    describe_counter!(STAGE_RECEIVED, "Deliveries a stage received");
    describe_counter!(STAGE_DONE, "Deliveries a stage finished, by outcome");
    describe_counter!(STAGE_RETRIED, "Deliveries sent to a retry delay tier");
    describe_counter!(STAGE_DEAD_LETTERED, "Deliveries dead-lettered, by reason");
    describe_counter!(
        STAGE_DUPLICATES,
        "Redeliveries skipped by the completion record"
    );
    describe_histogram!(
        HANDLER_DURATION,
        metrics::Unit::Seconds,
        "Handler latency per stage"
    );
    describe_counter!(BROKER_RECONNECTS, "Broker reconnections");
    describe_counter!(
        REDIS_DEGRADED,
        "Redis-backed guarantees degraded while Redis was unreachable"
    );
    describe_counter!(
        REDIS_REFUSED,
        "Writes Redis refused while up (OOM, MISCONF, READONLY), by role (records, cache)"
    );
    describe_counter!(UNANSWERED, "Dispatch dead letters waiting for an operator");
    describe_gauge!(QUEUE_DEPTH, "Messages ready in a queue");
    describe_counter!(
        DISPATCH_REPLIES,
        "Replies the dispatcher handled, by provider, kind and outcome (posted, duplicate, reconciled, stale, rate_limited, rejected, unavailable, not_configured, rescheduled, no_target, skipped, outbound_refused)"
    );
    describe_counter!(AGENT_RUNS, "Codegen agent run lifecycle events");
    describe_counter!(
        CODEGEN_REQUESTS,
        "Codegen API requests by endpoint and outcome"
    );
    describe_counter!(
        AGENT_DEFERRED,
        "Agent tasks rescheduled by an open breaker or a rate limit"
    );
    describe_counter!(
        CACHE_REQUESTS,
        "Cache lookups by cache, layer and result (hit ratio)"
    );
    describe_counter!(
        CACHE_PRUNED_BYTES,
        "Bytes removed from a disk cache to keep it under its budget"
    );
    describe_counter!(LLM_REQUESTS, "LLM provider calls by provider and outcome");
    describe_counter!(LLM_TOKENS, "LLM tokens spent by provider and kind");
    describe_counter!(GENERATIONS, "Generate-stage results by outcome");
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(INGEST_REQUESTS, "Requests ingest answered, by outcome");
    describe_counter!(INGEST_IGNORED, "Events ingest ignored, by reason");
    describe_counter!(
        INGEST_REJECTED,
        "Requests ingest refused with a 4xx, by reason"
    );
    describe_counter!(INGEST_TASKS, "Tasks ingest created, by source and strategy");
    describe_histogram!(
        INGEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request to answer at ingest"
    );
    describe_counter!(
        INGEST_FAILED_RECORDED,
        "GitHub deliveries refused while the broker was down, recorded for redelivery"
    );
    describe_counter!(
        INGEST_ACKS_LOST,
        "Acknowledgements ingest could not publish (the task itself was accepted)"
    );
    describe_counter!(
        PUBLISH_FAILED,
        "Publishes given up on, by reason (blocked, confirm_timeout)"
    );
    describe_counter!(
        DEAD_LETTERS_REFUSED,
        "Dead letters a full dead queue refused, by stage and reason (only logged)"
    );
}

/// A delivery arrived at `stage`.
pub fn received(stage: &'static str) {
    counter!(STAGE_RECEIVED, "stage" => stage).increment(1);
}

/// A handler finished with `outcome` (`forward`, `done`, `later`) after `elapsed`.
pub fn finished(stage: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(STAGE_DONE, "stage" => stage, "outcome" => outcome).increment(1);
    histogram!(HANDLER_DURATION, "stage" => stage).record(elapsed.as_secs_f64());
}

/// A delivery went to a retry tier.
pub fn retried(stage: &'static str, reason: &str) {
    counter!(STAGE_RETRIED, "stage" => stage, "reason" => reason.to_owned()).increment(1);
}

/// A delivery was dead-lettered.
pub fn dead_lettered(stage: &'static str, reason: &str) {
    counter!(STAGE_DEAD_LETTERED, "stage" => stage, "reason" => reason.to_owned()).increment(1);
    if stage == "dispatch" {
        counter!(UNANSWERED).increment(1);
    }
}

/// A redelivery was skipped because the stage had completed the task.
pub fn duplicate_skipped(stage: &'static str) {
    counter!(STAGE_DUPLICATES, "stage" => stage).increment(1);
}

/// The broker connection was re-established.
pub fn broker_reconnected(service: &str) {
    counter!(BROKER_RECONNECTS, "service" => service.to_owned()).increment(1);
}

/// A Redis-backed guarantee (`completion`, `status`, `dedup`, …) degraded.
pub fn redis_degraded(what: &'static str) {
    tracing::warn!(what, "redis unreachable: guarantee degraded");
    counter!(REDIS_DEGRADED, "what" => what).increment(1);
}

/// Redis refused a write on the `role` Redis (`records` or `cache`).
pub fn redis_refused(role: &'static str) {
    counter!(REDIS_REFUSED, "role" => role).increment(1);
}

/// The dispatcher handled a reply of `kind` for `provider` with `outcome`.
pub fn reply_dispatched(provider: &str, kind: &'static str, outcome: &'static str) {
    counter!(DISPATCH_REPLIES, "provider" => provider.to_owned(), "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// The depth of a queue.
pub fn queue_depth(queue: &str, depth: u32) {
    gauge!(QUEUE_DEPTH, "queue" => queue.to_owned()).set(depth as f64);
}

/// Breaker state gauge: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "contexten_breaker_state";

/// The state of breaker `name`.
pub fn breaker_state(name: &str, value: f64) {
    gauge!(BREAKER_STATE, "breaker" => name.to_owned()).set(value);
}

/// An agent run event (`created`, `resumed`, `adopted`, `succeeded`, `failed`,
/// `cancelled`, `limit_reached`, `timed_out`).
pub fn agent_run(event: &'static str) {
    counter!(AGENT_RUNS, "event" => event).increment(1);
}

/// A Codegen request to `endpoint` (`create`, `get`, `resume`, `list`) ended with
/// `outcome` (`ok` or an error class).
pub fn codegen_request(endpoint: &'static str, outcome: &'static str) {
    counter!(CODEGEN_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
}

/// An agent task was rescheduled for `reason` (`breaker_open`, `create_limit`,
/// `request_limit`, `create_in_flight`).
pub fn agent_deferred(reason: &'static str) {
    counter!(AGENT_DEFERRED, "reason" => reason).increment(1);
}

/// Cache lookups by cache, layer (`memory`, `disk`, `redis`) and result (`hit`, `miss`).
pub const CACHE_REQUESTS: &str = "contexten_cache_requests_total";

/// One lookup in one layer of a cache.
pub fn cache_request(cache: &'static str, layer: &'static str, hit: bool) {
    cache_requests(cache, layer, hit, 1);
}

/// `n` lookups with the same cache, layer and result (a worker reporting a batch).
pub fn cache_requests(cache: &'static str, layer: &'static str, hit: bool, n: u64) {
    let result = if hit { "hit" } else { "miss" };
    counter!(CACHE_REQUESTS, "cache" => cache, "layer" => layer, "result" => result).increment(n);
}

/// Bytes removed from a disk cache to keep it under its budget, by cache.
pub const CACHE_PRUNED_BYTES: &str = "contexten_cache_pruned_bytes_total";

/// A prune of a disk cache freed `bytes`.
pub fn cache_pruned(cache: &'static str, bytes: u64) {
    counter!(CACHE_PRUNED_BYTES, "cache" => cache).increment(bytes);
}

/// LLM calls by provider and outcome (`ok`, `rate_limited`, `server_error`, …).
pub const LLM_REQUESTS: &str = "contexten_llm_requests_total";
/// LLM tokens by provider and kind (`prompt`, `completion`).
pub const LLM_TOKENS: &str = "contexten_llm_tokens_total";
/// Generation results by outcome (`generated`, `cached`, `coalesced`, `fallback`,
/// `failed` (no fallback for the task's strategy), `context_only`, `rescheduled`).
pub const GENERATIONS: &str = "contexten_generations_total";

/// One call to an LLM provider and the tokens it spent.
pub fn llm_call(provider: &'static str, outcome: &'static str, prompt: u64, completion: u64) {
    counter!(LLM_REQUESTS, "provider" => provider, "outcome" => outcome).increment(1);
    if prompt > 0 {
        counter!(LLM_TOKENS, "provider" => provider, "kind" => "prompt").increment(prompt);
    }
    if completion > 0 {
        counter!(LLM_TOKENS, "provider" => provider, "kind" => "completion").increment(completion);
    }
}

/// A generate-stage task finished with `outcome`.
pub fn generation(outcome: &'static str) {
    counter!(GENERATIONS, "outcome" => outcome).increment(1);
}

/// ingest answered a request from `provider` with `outcome` after `elapsed`.
pub fn ingest_answered(provider: &str, outcome: &'static str, elapsed: Duration) {
    counter!(INGEST_REQUESTS, "provider" => provider.to_owned(), "outcome" => outcome).increment(1);
    histogram!(INGEST_DURATION, "provider" => provider.to_owned()).record(elapsed.as_secs_f64());
}

/// ingest ignored an event (no task) for `reason`.
pub fn ingest_ignored(provider: &str, reason: &'static str) {
    counter!(INGEST_IGNORED, "provider" => provider.to_owned(), "reason" => reason).increment(1);
}

/// ingest refused a request with a 4xx for `reason`.
pub fn ingest_rejected(provider: &str, reason: &'static str) {
    counter!(INGEST_REJECTED, "provider" => provider.to_owned(), "reason" => reason).increment(1);
}

/// ingest created a task.
pub fn ingest_task(source: &str, strategy: &'static str) {
    counter!(INGEST_TASKS, "source" => source.to_owned(), "strategy" => strategy).increment(1);
}

/// A refused GitHub delivery was recorded (`store` = `redis` or `file`).
pub fn ingest_failed_recorded(store: &'static str) {
    counter!(INGEST_FAILED_RECORDED, "store" => store).increment(1);
}

/// An acknowledgement could not be published (the task was).
pub fn ingest_ack_lost() {
    counter!(INGEST_ACKS_LOST).increment(1);
}

/// A publish was given up on: `blocked` or `confirm_timeout`.
pub fn publish_failed(reason: &'static str) {
    counter!(PUBLISH_FAILED, "reason" => reason).increment(1);
}

/// A full dead queue refused a dead letter of `stage` with `reason`.
pub fn dead_letter_refused(stage: &'static str, reason: &str) {
    counter!(DEAD_LETTERS_REFUSED, "stage" => stage, "reason" => reason.to_owned()).increment(1);
}
