//! The worker through the real broker: publish to the generate queue under a
//! unique prefix, read what arrives on the dispatch and agent queues.

use crate::helpers::*;
use contexten_envelope::{ReplyKind, ResultKind, Stage, Strategy, TaskEnvelope};
use contexten_testkit::broker::BrokerFixture;
use lapin::options::BasicGetOptions;
use wiremock::Mock;
use wiremock::matchers::{body_string_contains, method};

#[tokio::test]
async fn the_worker_sends_generated_code_to_dispatch_and_failures_to_the_agent_only_when_allowed() {
    let fx = Fixture::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("write parse_duration"))
        .respond_with(completion(&format!("```python\n{VALID_PY}```")))
        .expect(1)
        .mount(&fx.server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("write a poem"))
        .respond_with(completion("Roses are red, the code is not."))
        .expect(4)
        .mount(&fx.server)
        .await;

    // The broker side under the fixture's prefix (removed on drop).
    let bx = BrokerFixture::builder()
        .prefix(fx.prefix.as_str())
        .prefetch(4)
        .env(&[("RETRY_TIERS_MS", "200,1000")])
        .start()
        .await;
    let (settings, names, publisher) = (&bx.settings, &bx.names, &bx.publisher);

    let worker = bx.spawn_worker(
        "generator-worker",
        Stage::Generate,
        settings.clone(),
        fx.handler(&[]),
    );

    let good = envelope("write parse_duration", "python", "parse_duration");
    let mut bad = envelope("write a poem", "python", "poem");
    bad.strategy = Strategy::Agent;
    // Routed to generation only: it must not become an agent run.
    let mut bad_generation = envelope("write a poem", "python", "sonnet");
    bad_generation.strategy = Strategy::Context;
    publisher.publish(Stage::Generate, &good).await.unwrap();
    publisher.publish(Stage::Generate, &bad).await.unwrap();
    publisher
        .publish(Stage::Generate, &bad_generation)
        .await
        .unwrap();

    let mut dispatched = vec![
        bx.take_envelope(&names.stage_queue(Stage::Dispatch), WAIT)
            .await,
        bx.take_envelope(&names.stage_queue(Stage::Dispatch), WAIT)
            .await,
    ];
    dispatched.sort_by_key(|e| e.task_id != good.task_id);
    let [answered, failed] = <[TaskEnvelope; 2]>::try_from(dispatched).unwrap();
    assert_eq!(answered.task_id, good.task_id);
    let result = answered.result.unwrap();
    assert_eq!(
        (result.kind, result.text.as_deref()),
        (ResultKind::Code, Some(VALID_PY))
    );
    assert_eq!(answered.cost.llm_calls, 1);

    let fell_back = bx
        .take_envelope(&names.stage_queue(Stage::Agent), WAIT)
        .await;
    assert_eq!(fell_back.task_id, bad.task_id);
    assert!(
        fell_back
            .fallback_reason
            .unwrap()
            .starts_with("generation_invalid:")
    );

    assert_eq!(failed.task_id, bad_generation.task_id);
    assert_eq!(failed.reply, Some(ReplyKind::Failure));
    let failure = failed.result.unwrap();
    assert_eq!(failure.reason.as_deref(), Some("generation_invalid"));
    assert!(
        !failure.summary.contains("syntax error") && !failure.summary.contains("Roses"),
        "the validation detail stays in the logs: {}",
        failure.summary
    );
    let dead = bx
        .take_envelope(&names.dead_queue(Stage::Generate), WAIT)
        .await;
    assert_eq!(dead.task_id, bad_generation.task_id);
    assert_eq!(
        bx.channel
            .basic_get(
                names.stage_queue(Stage::Agent).as_str().into(),
                BasicGetOptions { no_ack: true }
            )
            .await
            .unwrap()
            .map(|m| m.delivery.data.len()),
        None,
        "only the agent-strategy task reached the agent queue"
    );

    worker.stop().await;
}
