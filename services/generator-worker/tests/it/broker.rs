//! The worker through the real broker: publish to the generate queue under a
//! unique prefix, read what arrives on the dispatch and agent queues.

use crate::helpers::*;
use contexten_broker::{CancellationToken, Publisher, WorkerOptions, run_worker, topology};
use contexten_config::{BrokerSettings, Env, ExposeSecret};
use contexten_envelope::{ReplyKind, ResultKind, Stage, Strategy, TaskEnvelope};
use contexten_telemetry::health::Readiness;
use lapin::options::BasicGetOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::Duration;
use wiremock::Mock;
use wiremock::matchers::{body_string_contains, method};

/// How often `take` looks at a queue.
const POLL: Duration = Duration::from_millis(25);

async fn take(channel: &Channel, queue: &str) -> TaskEnvelope {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(message) = got {
            return TaskEnvelope::from_json(&message.delivery.data).expect("an envelope");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {queue}"
        );
        tokio::time::sleep(POLL).await;
    }
}

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

    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let redis = redis_url();
    let env = Env::from_pairs([
        ("AMQP_URL", amqp.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("CONTEXTEN_PREFIX", fx.prefix.as_str()),
        ("RETRY_TIERS_MS", "200,1000"),
    ]);
    let settings = BrokerSettings::from_env(&env, 4).unwrap();
    let names = fx.store.names().clone();
    let connection = Connection::connect(
        settings.amqp_url.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ on AMQP_URL (run `make services`)");
    let channel = connection.create_channel().await.unwrap();
    topology::declare(&channel, &names, &settings.retry_tiers)
        .await
        .unwrap();
    let publisher = Publisher::new(
        &connection,
        names.clone(),
        Some(fx.store.clone()),
        settings.payload_inline_limit,
    )
    .await
    .unwrap();

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        WorkerOptions {
            service: "generator-worker",
            stage: Stage::Generate,
            broker: settings.clone(),
            readiness: Readiness::new(&["broker"]),
        },
        fx.store.clone(),
        fx.handler(&[]),
        shutdown.clone(),
    ));

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
        take(&channel, &names.stage_queue(Stage::Dispatch)).await,
        take(&channel, &names.stage_queue(Stage::Dispatch)).await,
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

    let fell_back = take(&channel, &names.stage_queue(Stage::Agent)).await;
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
    let dead = take(&channel, &names.dead_queue(Stage::Generate)).await;
    assert_eq!(dead.task_id, bad_generation.task_id);
    assert_eq!(
        channel
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

    shutdown.cancel();
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("worker stops in time")
        .unwrap()
        .unwrap();
    let _ = topology::delete(&channel, &names, &settings.retry_tiers).await;
    let _ = connection.close(200, "test done".into()).await;
    fx.cleanup().await;
}
