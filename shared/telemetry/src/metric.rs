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

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Always in seconds here (the exporter's buckets match `_seconds`).
    Histogram,
}

impl Kind {
    /// The Prometheus type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric the fleet exports: its name, kind, label names and help text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric any binary exports, the single list from which descriptions are
/// registered, the README's metrics section and `deploy/chart-check/metrics/contexten.txt`
/// are generated (the fleet test checks that each exposed name is listed here).
pub const CATALOG: &[MetricDef] = &[
    def(
        BUILD_INFO,
        Kind::Gauge,
        &["service", "version", "git_sha"],
        "Always 1; the labels name the running build",
    ),
    def(
        STAGE_RECEIVED,
        Kind::Counter,
        &["stage"],
        "Deliveries a stage received",
    ),
    def(
        STAGE_DONE,
        Kind::Counter,
        &["stage", "outcome"],
        "Deliveries a stage finished, by outcome",
    ),
    def(
        STAGE_RETRIED,
        Kind::Counter,
        &["stage", "reason"],
        "Deliveries sent to a retry delay tier",
    ),
    def(
        STAGE_DEAD_LETTERED,
        Kind::Counter,
        &["stage", "reason"],
        "Deliveries dead-lettered, by reason",
    ),
    def(
        STAGE_DUPLICATES,
        Kind::Counter,
        &["stage"],
        "Redeliveries skipped by the completion record",
    ),
    def(
        HANDLER_DURATION,
        Kind::Histogram,
        &["stage"],
        "Handler latency per stage",
    ),
    def(
        END_TO_END,
        Kind::Histogram,
        &["source", "strategy"],
        "Request received to final answer (or failure) posted, by source and strategy",
    ),
    def(
        BROKER_RECONNECTS,
        Kind::Counter,
        &["service"],
        "Broker reconnections",
    ),
    def(
        REDIS_DEGRADED,
        Kind::Counter,
        &["what"],
        "Redis-backed guarantees degraded while Redis was unreachable",
    ),
    def(
        REDIS_REFUSED,
        Kind::Counter,
        &["role"],
        "Writes Redis refused while up (OOM, MISCONF, READONLY), by role (records, cache)",
    ),
    def(
        UNANSWERED,
        Kind::Counter,
        &[],
        "Dispatch dead letters waiting for an operator",
    ),
    def(
        DISPATCH_REPLIES,
        Kind::Counter,
        &["provider", "kind", "outcome"],
        "Replies the dispatcher handled, by provider, kind and outcome (posted, duplicate, reconciled, stale, rate_limited, rejected, unavailable, not_configured, rescheduled, no_target, skipped, outbound_refused)",
    ),
    def(
        AGENT_RUNS,
        Kind::Counter,
        &["event"],
        "Codegen agent run lifecycle events",
    ),
    def(
        CODEGEN_REQUESTS,
        Kind::Counter,
        &["endpoint", "outcome"],
        "Codegen API requests by endpoint and outcome",
    ),
    def(
        AGENT_DEFERRED,
        Kind::Counter,
        &["reason"],
        "Agent tasks rescheduled by an open breaker or a rate limit",
    ),
    def(
        CACHE_REQUESTS,
        Kind::Counter,
        &["cache", "layer", "result"],
        "Cache lookups by cache, layer and result (hit ratio)",
    ),
    def(
        CACHE_PRUNED_BYTES,
        Kind::Counter,
        &["cache"],
        "Bytes removed from a disk cache to keep it under its budget",
    ),
    def(
        LLM_REQUESTS,
        Kind::Counter,
        &["provider", "outcome"],
        "LLM provider calls by provider and outcome",
    ),
    def(
        LLM_ERRORS,
        Kind::Counter,
        &["provider", "class"],
        "LLM provider calls that failed, by provider and error class",
    ),
    def(
        LLM_TOKENS,
        Kind::Counter,
        &["provider", "kind"],
        "LLM tokens spent by provider and kind",
    ),
    def(
        GENERATIONS,
        Kind::Counter,
        &["outcome"],
        "Generate-stage results by outcome",
    ),
    def(
        GENERATOR_FALLBACKS,
        Kind::Counter,
        &["reason"],
        "Generations answered by the fallback instead of the LLM, by reason",
    ),
    def(
        BREAKER_STATE,
        Kind::Gauge,
        &["breaker", "state"],
        "Circuit breaker state: 1 for the current state (closed, open, half_open), 0 for the others",
    ),
    def(
        INGEST_REQUESTS,
        Kind::Counter,
        &["provider", "outcome"],
        "Requests ingest answered, by outcome",
    ),
    def(
        INGEST_IGNORED,
        Kind::Counter,
        &["provider", "reason"],
        "Events ingest ignored, by reason",
    ),
    def(
        INGEST_REJECTED,
        Kind::Counter,
        &["provider", "reason"],
        "Requests ingest refused with a 4xx, by reason",
    ),
    def(
        INGEST_TASKS,
        Kind::Counter,
        &["source", "strategy"],
        "Tasks ingest created, by source and strategy",
    ),
    def(
        INGEST_DURATION,
        Kind::Histogram,
        &["provider"],
        "Time from request to answer at ingest",
    ),
    def(
        INGEST_FAILED_RECORDED,
        Kind::Counter,
        &["store"],
        "GitHub deliveries refused while the broker was down, recorded for redelivery",
    ),
    def(
        INGEST_ACKS_LOST,
        Kind::Counter,
        &[],
        "Acknowledgements ingest could not publish (the task itself was accepted)",
    ),
    def(
        PUBLISH_FAILED,
        Kind::Counter,
        &["reason"],
        "Publishes given up on, by reason (blocked, confirm_timeout)",
    ),
    def(
        DEAD_LETTERS_REFUSED,
        Kind::Counter,
        &["stage", "reason"],
        "Dead letters a full dead queue refused, by stage and reason (only logged)",
    ),
];

/// The catalog entry of `name`.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOG.iter().find(|m| m.name == name)
}

/// The catalog entry an exposed series belongs to: `name` itself, or a
/// histogram's `_bucket`, `_sum` or `_count` series.
pub fn owner_of(series: &str) -> Option<&'static MetricDef> {
    find(series).or_else(|| {
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            series
                .strip_suffix(suffix)
                .and_then(find)
                .filter(|m| m.kind == Kind::Histogram)
        })
    })
}

/// The catalog as `name label1,label2` lines, sorted by name (the format of
/// `deploy/chart-check/metrics/contexten.txt`).
pub fn names_file() -> String {
    let mut lines: Vec<String> = CATALOG
        .iter()
        .map(|m| {
            format!("{} {}", m.name, m.labels.join(","))
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The README's metrics table, sorted by name (between `<!-- metrics:begin -->`
/// and `<!-- metrics:end -->`).
pub fn readme_section() -> String {
    let mut metrics: Vec<&MetricDef> = CATALOG.iter().collect();
    metrics.sort_by_key(|m| m.name);
    let mut out = String::from("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n");
    for m in metrics {
        let labels = if m.labels.is_empty() {
            "—".to_owned()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels,
            m.help
        ));
    }
    out
}

/// Registers descriptions so `/metrics` explains each series.
pub fn describe_all() {
    for m in CATALOG {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.help),
            Kind::Histogram => describe_histogram!(m.name, metrics::Unit::Seconds, m.help),
        }
    }
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

/// Breaker state, one series per state: 1 for the current one, 0 for the others.
pub const BREAKER_STATE: &str = "contexten_breaker_state";
/// The states a breaker reports, as label values.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// Breaker `name` is now in `state` (one of [`BREAKER_STATES`]).
pub fn breaker_state(name: &str, state: &str) {
    for s in BREAKER_STATES {
        let value = if s == state { 1.0 } else { 0.0 };
        gauge!(BREAKER_STATE, "breaker" => name.to_owned(), "state" => s).set(value);
    }
}

/// Build information, always 1 (`git_sha` is `unknown` unless the build set
/// `CONTEXTEN_GIT_SHA`).
pub const BUILD_INFO: &str = "contexten_build_info";
/// Request received (the envelope's `created_at_ms`) to final answer posted.
pub const END_TO_END: &str = "contexten_task_end_to_end_seconds";
/// LLM calls that failed, by provider and class (`LlmError::code`).
pub const LLM_ERRORS: &str = "contexten_llm_errors_total";
/// Generations the fallback answered, by reason.
pub const GENERATOR_FALLBACKS: &str = "contexten_generator_fallbacks_total";

/// The git commit baked in at build time, if the build set `CONTEXTEN_GIT_SHA`.
pub const GIT_SHA: &str = match option_env!("CONTEXTEN_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// Sets `contexten_build_info` for `service` at `version` (the binary's
/// `CARGO_PKG_VERSION`).
pub fn build_info(service: &str, version: &'static str) {
    gauge!(BUILD_INFO, "service" => service.to_owned(), "version" => version, "git_sha" => GIT_SHA)
        .set(1.0);
}

/// A task's final answer (or failure answer) was posted `elapsed` after its
/// request was received.
pub fn end_to_end(source: &str, strategy: &str, elapsed: Duration) {
    histogram!(END_TO_END, "source" => source.to_owned(), "strategy" => strategy.to_owned())
        .record(elapsed.as_secs_f64());
}

/// An LLM call to `provider` failed with `class` (`LlmError::code`).
pub fn llm_error(provider: &'static str, class: &'static str) {
    counter!(LLM_ERRORS, "provider" => provider, "class" => class).increment(1);
}

/// The generator answered with its fallback for `reason`.
pub fn generator_fallback(reason: &str) {
    counter!(GENERATOR_FALLBACKS, "reason" => reason.to_owned()).increment(1);
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
