//! Every exchange, queue, header and Redis key name, derived from one prefix
//! (`CONTEXTEN_PREFIX`) so tests can run side by side with unique prefixes.

use crate::{ReplyKind, Stage, TaskId};
use std::time::Duration;

/// Header: attempts spent in the current stage.
pub const HEADER_ATTEMPT: &str = "x-contexten-attempt";
/// Header: the retry tier a delayed message waits in (headers-exchange binding).
/// No `x-` prefix: RabbitMQ's headers exchange ignores `x-` binding arguments
/// when matching, so such a binding matches every message.
pub const HEADER_RETRY_TIER: &str = "contexten-retry-tier";
/// Header: snake_case dead-letter reason code.
pub const HEADER_DEAD_REASON: &str = "x-contexten-dead-reason";
/// Header: human-readable dead-letter detail.
pub const HEADER_DEAD_DETAIL: &str = "x-contexten-dead-detail";
/// Header: the stage a dead letter came from.
pub const HEADER_DEAD_STAGE: &str = "x-contexten-dead-stage";
/// Header: when the message was dead-lettered, unix milliseconds (the operator
/// CLI's `--older-than`).
pub const HEADER_DEAD_AT_MS: &str = "x-contexten-dead-at-ms";
/// Header: the Redis key holding a payload too large to travel inline.
pub const HEADER_PAYLOAD_REF: &str = "x-contexten-payload-ref";
/// Header: W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header: W3C trace state.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// Names derived from the fleet prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

/// Redis: the field of a task's status record that holds its final answer
/// (written by the broker runtime when dispatch handles the final reply, read
/// by ingest's `GET /v1/tasks/{id}`).
pub const STATUS_RESULT_FIELD: &str = "result";

impl Names {
    /// Names under `prefix` (`contexten` in production, `test-<uuid>` in tests).
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The direct exchange every stage queue is bound to.
    pub fn work_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }

    /// The headers exchange that routes delayed messages to their tier.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// The dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The work queue of a stage.
    pub fn stage_queue(&self, stage: Stage) -> String {
        format!("{}.{}", self.prefix, stage.as_str())
    }

    /// The dead queue of a stage.
    pub fn dead_queue(&self, stage: Stage) -> String {
        format!("{}.{}.dead", self.prefix, stage.as_str())
    }

    /// The delay queue of a retry tier.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, tier_label(delay))
    }

    /// Redis: the field of a task's status record that marks one message (stage
    /// and hop) as completed.
    pub fn completion_field(stage: Stage, hop: u32) -> String {
        format!("done:{}:{}", stage.as_str(), hop)
    }

    /// Redis: a task's status record (hash of state, per-stage timings and
    /// completion marks).
    pub fn status_key(&self, task: TaskId) -> String {
        format!("{}:task:{}", self.prefix, task)
    }

    /// Redis: a payload too large to travel inline.
    pub fn payload_key(&self, id: &str) -> String {
        format!("{}:payload:{}", self.prefix, id)
    }

    /// Redis: the dispatcher's record of a posted reply.
    pub fn reply_key(&self, task: TaskId, kind: ReplyKind) -> String {
        format!("{}:reply:{}:{}", self.prefix, task, kind.as_str())
    }

    /// Redis: any other key of a component (`dedup`, `breaker`, `cache`, …).
    pub fn redis_key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }
}

/// The label of a retry tier in names and headers (`5s`, `250ms`).
pub fn tier_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let names = Names::new("contexten");
        assert_eq!(names.work_exchange(), "contexten.tasks");
        assert_eq!(names.dead_letter_exchange(), "contexten.dlx");
        assert_eq!(names.stage_queue(Stage::Generate), "contexten.generate");
        assert_eq!(names.dead_queue(Stage::Dispatch), "contexten.dispatch.dead");
        assert_eq!(
            names.retry_queue(Duration::from_secs(30)),
            "contexten.retry.30s"
        );
        assert_eq!(
            names.retry_queue(Duration::from_millis(250)),
            "contexten.retry.250ms"
        );
        assert_eq!(
            names.redis_key(&["dedup", "github", "x"]),
            "contexten:dedup:github:x"
        );
    }
}
