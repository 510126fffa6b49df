//! The context stage. Until codemap lands (issue 5) the handler is a pass-through:
//! it forwards each task to the next stage of its strategy unchanged.

use contexten_broker::Outcome;
use contexten_envelope::{Stage, TaskEnvelope};

/// Forwards the task to generate or agent, as its strategy says.
pub async fn handle(envelope: TaskEnvelope) -> Outcome {
    let next = envelope.strategy.next_after(Stage::Context);
    Outcome::forward(next, envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_envelope::{ReplyTarget, Request, Source, SourceKind, Strategy};

    fn task(strategy: Strategy) -> TaskEnvelope {
        let source = Source {
            kind: SourceKind::Api,
            delivery_id: None,
            requested_by: None,
            reply_to: ReplyTarget::None,
            extra: Default::default(),
        };
        let mut env = TaskEnvelope::new(
            source,
            Request {
                text: "explain".into(),
                ..Request::default()
            },
        );
        env.strategy = strategy;
        env
    }

    #[tokio::test]
    async fn tasks_go_where_their_strategy_says() {
        match handle(task(Strategy::Agent)).await {
            Outcome::Forward(next) => assert_eq!(next[0].stage, Stage::Agent),
            other => panic!("{other:?}"),
        }
        match handle(task(Strategy::Context)).await {
            Outcome::Forward(next) => assert_eq!(next[0].stage, Stage::Generate),
            other => panic!("{other:?}"),
        }
    }
}
