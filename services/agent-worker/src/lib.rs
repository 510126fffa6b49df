//! The agent stage. Until its own issue lands the handler is a pass-through: it
//! answers with a clearly labelled placeholder and forwards to dispatch, so the
//! whole flow runs end to end.

use contexten_broker::Outcome;
use contexten_envelope::{Extra, ReplyKind, ResultKind, Stage, TaskEnvelope, TaskResult};

/// Labels the task as not handled by this build and forwards it to dispatch.
pub async fn handle(mut envelope: TaskEnvelope) -> Outcome {
    envelope.result = Some(TaskResult {
        kind: ResultKind::ContextOnly,
        produced_by: Stage::Agent,
        summary: "pass-through: the agent stage is not implemented in this build".into(),
        text: envelope.context.as_ref().map(|c| c.prompt.clone()),
        language: None,
        web_url: None,
        pull_requests: Vec::new(),
        reason: None,
        extra: Extra::new(),
    });
    envelope.reply = Some(ReplyKind::Final);
    Outcome::forward(Stage::Dispatch, envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{ReplyTarget, Request, Source, SourceKind};

    #[tokio::test]
    async fn the_placeholder_answer_goes_to_dispatch() {
        let source = Source {
            kind: SourceKind::Api,
            delivery_id: None,
            requested_by: None,
            reply_to: ReplyTarget::None,
            extra: Default::default(),
        };
        let env = TaskEnvelope::new(
            source,
            Request {
                text: "write".into(),
                ..Request::default()
            },
        );
        match handle(env).await {
            Outcome::Forward(next) => {
                assert_eq!(next[0].stage, Stage::Dispatch);
                assert_eq!(next[0].envelope.reply, Some(ReplyKind::Final));
                assert!(
                    next[0]
                        .envelope
                        .result
                        .as_ref()
                        .unwrap()
                        .summary
                        .starts_with("pass-through")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
