use crate::fixtures::*;
use crate::helpers::*;
use contexten_envelope::Stage;
use contexten_testkit::eventually;

#[tokio::test]
async fn with_rabbitmq_stopped_ingest_answers_503_and_accepts_again_when_it_is_back() {
    let ingest = TestIngest::start().await;
    ingest.proxy.stop();
    ingest.wait_for_broker(false).await;
    assert!(
        !ingest.readiness.is_ready("broker"),
        "/readyz reports the broker down"
    );

    let delivery = uuid::Uuid::now_v7().to_string();
    let body = github_comment(21, "/contexten generate a UUID parser", "octocat", "MEMBER");
    let a = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!((a.status, a.error()), (503, "broker_unavailable"));
    assert_eq!(a.headers["retry-after"], "2");
    let a = ingest
        .api(
            &token("submit"),
            &serde_json::json!({"text": "hello"}),
            None,
        )
        .await;
    assert_eq!(a.status, 503);
    // The refused GitHub delivery is recorded for `ingest redeliver-failed`.
    let recorded = ingest::failed::list(
        &ingest.state.store,
        &ingest.state.cfg.failed_deliveries_file,
        0,
    )
    .await
    .unwrap();
    assert!(
        recorded
            .iter()
            .any(|r| r.guid == delivery && r.event == "issue_comment"),
        "{recorded:?}"
    );

    ingest.proxy.resume();
    ingest.wait_for_broker(true).await;
    let a = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!(a.status, 202, "{}", a.json);
    ingest.take_task_and_ack(Stage::Generate).await;
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_failed_publish_is_retried_under_the_same_task_id() {
    let ingest = TestIngest::start().await;
    // The generate queue is gone: the mandatory publish comes back unroutable.
    ingest.delete_queue(Stage::Generate).await;
    let delivery = uuid::Uuid::now_v7().to_string();
    let body = github_comment(
        22,
        "/contexten generate a slug function",
        "octocat",
        "MEMBER",
    );
    let a = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!((a.status, a.error()), (503, "broker_unavailable"));
    // The failed attempt's acknowledgement went out beside the task (its confirm
    // is not waited for); it names the task id the attempt chose.
    ingest.redeclare_topology().await;
    let (stale_ack, _) = ingest.take(Stage::Dispatch).await;
    assert_eq!(stale_ack.reply, Some(contexten_envelope::ReplyKind::Ack));
    let mut conn = ingest.redis().await;
    let key = ingest::intake::dedup_key(
        &ingest.names,
        &contexten_envelope::SourceKind::GITHUB,
        &delivery,
    );
    let claim: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        claim,
        format!("?{}", stale_ack.task_id),
        "the claim stays, marked unconfirmed"
    );

    // The provider's retry is accepted and publishes the same task: had the
    // failed publish reached the queue after all, both copies are one task.
    let a = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let (task, ack) = ingest.take_task_and_ack(Stage::Generate).await;
    assert_eq!(task.task_id, stale_ack.task_id);
    assert_eq!(ack.task_id, stale_ack.task_id);
    assert_eq!(task.source.delivery_id.as_deref(), Some(delivery.as_str()));
    let status = ingest
        .get(
            &format!("/v1/tasks/{}", task.task_id),
            Some(&token("admin")),
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.json);
    // Once confirmed, a further retry is an ordinary duplicate.
    let again = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["task_id"], task.task_id.to_string());
    ingest.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_lost_acknowledgement_is_counted_and_does_not_fail_the_task() {
    let ingest = TestIngest::start().await;
    // The dispatch queue is gone: the acknowledgement comes back unroutable
    // while the task, published in the same write, is confirmed.
    ingest.delete_queue(Stage::Dispatch).await;
    let before = acks_lost();
    let body = github_comment(
        25,
        "/contexten generate a CSV splitter",
        "octocat",
        "MEMBER",
    );
    let a = ingest
        .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &body)
        .await;
    assert_eq!(a.status, 202, "{}", a.json);
    let (task, _) = ingest.take(Stage::Generate).await;
    assert_eq!(a.json["task_id"], task.task_id.to_string());
    eventually(WAIT, "the lost acknowledgement is counted", || async {
        acks_lost() > before
    })
    .await;
    ingest.redeclare_topology().await;
    ingest.assert_nothing_queued().await;
}

fn acks_lost() -> f64 {
    metric_total("contexten_ingest_acks_lost_total", "")
}

#[tokio::test]
async fn with_redis_down_dedup_degrades_loudly_and_the_request_is_still_accepted() {
    let ingest = TestIngest::start_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let before = degraded_count();
    let body = github_comment(23, "/contexten context explain main", "octocat", "MEMBER");
    let a = ingest
        .github("issue_comment", &uuid::Uuid::now_v7().to_string(), &body)
        .await;
    assert_eq!(a.status, 202, "{}", a.json);
    ingest.take_task_and_ack(Stage::Context).await;
    assert!(degraded_count() > before, "redis degradation is counted");
    // The status API cannot answer without Redis: 503, not a false 404.
    let status = ingest
        .get(
            &format!("/v1/tasks/{}", contexten_envelope::TaskId::new()),
            Some(&token("read")),
        )
        .await;
    assert_eq!((status.status, status.error()), (503, "store_unavailable"));
    assert!(status.headers.contains_key("retry-after"));
}

fn degraded_count() -> f64 {
    metric_total("contexten_redis_degraded_total", "what=\"dedup\"")
}

#[tokio::test]
async fn with_broker_and_redis_down_the_refused_delivery_is_recorded_in_a_file() {
    let file = std::env::temp_dir().join(format!(
        "ctx-failed-{}.jsonl",
        uuid::Uuid::now_v7().simple()
    ));
    let path = file.to_str().unwrap().to_owned();
    let ingest = TestIngest::start_with(&[
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("INGEST_FAILED_DELIVERIES_FILE", path.as_str()),
    ])
    .await;
    ingest.proxy.stop();
    ingest.wait_for_broker(false).await;
    let delivery = uuid::Uuid::now_v7().to_string();
    let body = github_comment(24, "/contexten go", "octocat", "MEMBER");
    let a = ingest.github("issue_comment", &delivery, &body).await;
    assert_eq!(a.status, 503);
    let text = std::fs::read_to_string(&file).expect("the file fallback was written");
    let entry: ingest::failed::FailedDelivery =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (entry.guid.as_str(), entry.event.as_str()),
        (delivery.as_str(), "issue_comment")
    );
    ingest.proxy.resume();
    std::fs::remove_file(file).unwrap();
}
