//! The dispatch stage. Until the provider clients land (issue 8) the handler logs
//! each answer with its target and kind, which is what `make up` shows.

use contexten_broker::Outcome;
use contexten_envelope::TaskEnvelope;

/// Logs the answer and completes the task.
pub async fn handle(envelope: TaskEnvelope) -> Outcome {
    let (kind, summary) = match &envelope.result {
        Some(result) => (format!("{:?}", result.kind), result.summary.clone()),
        None => ("none".to_owned(), String::new()),
    };
    tracing::info!(
        reply = ?envelope.reply,
        target = ?envelope.source.reply_to,
        result = %kind,
        summary = %summary,
        "answer ready (delivery to providers is not implemented in this build)"
    );
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{ReplyTarget, Request, Source, SourceKind};

    #[tokio::test]
    async fn an_answer_completes_the_task() {
        let source = Source {
            kind: SourceKind::Api,
            delivery_id: None,
            requested_by: None,
            reply_to: ReplyTarget::None,
            extra: Default::default(),
        };
        let env = TaskEnvelope::new(source, Request::default());
        assert_eq!(handle(env).await, Outcome::Done);
    }
}
