//! The whole fleet over TLS: all five binaries reach a RabbitMQ node and a
//! Redis the test starts with TLS listeners, through `amqps://` / `rediss://`
//! and `CONTEXTEN_CA_FILE` (README "TLS"), and answer a task.

use super::{github_comment, github_comments, sample_repo};
use contexten_fleet_tests::harness::*;
use contexten_fleet_tests::process::bin_dir;
use contexten_testkit::{TestCerts, tls_nodes};
use std::time::Duration;

/// The five services, as built next to this test.
const BINARIES: [&str; 5] = [
    "ingest",
    "context-worker",
    "generator-worker",
    "agent-worker",
    "dispatcher",
];
/// How long ingest may answer 503 while its broker connection comes up.
const ACCEPTED_WITHIN: Duration = Duration::from_secs(30);
/// How long a binary may take to give up on an unusable setting.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_fleet_answers_a_task_over_amqps_and_rediss_with_the_ca_file() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(certs_dir.path()).unwrap();
    let (rabbit, redis) = tls_nodes(&certs).await.unwrap();
    let extra = [
        ("REDIS_RECORDS_URL", redis.tls_url().unwrap()),
        ("CONTEXTEN_CA_FILE", certs.ca.display().to_string()),
    ];
    // Start-up waits for every service's /readyz; a worker is ready with its
    // broker connection and Redis, all over TLS here.
    let fleet = Fleet::start(FleetOptions {
        amqp_url: rabbit.amqps_url(),
        redis_url: redis.tls_url(),
        extra: extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts over TLS");
    let repo = sample_repo(fleet.dir.path());
    let payload = github_comment(
        &repo,
        9,
        4901,
        "/contexten generate add a parse_duration function to app/timeutil.py next to format_duration",
    );
    // ingest is in service before its broker connection is up (it answers 503
    // + Retry-After then, README "How ingest bounds its resources"): redeliver
    // as an operator would until it is accepted.
    let accepted = eventually(ACCEPTED_WITHIN, || async {
        let response = fleet
            .github_webhook("issue_comment", "d-gh-tls-1", &payload)
            .await;
        response.status().is_success().then_some(())
    })
    .await;
    assert!(accepted.is_some(), "not accepted\n{}", fleet.logs(40));
    let answered = eventually(FLOW_WITHIN, || async {
        github_comments(&fleet.fakes)
            .await
            .iter()
            .any(|c| {
                c["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("def parse_duration")
            })
            .then_some(())
    })
    .await;
    assert!(answered.is_some(), "no answer\n{}", fleet.logs(40));

    // The operator CLI over the same TLS broker.
    let out = tokio::process::Command::new(bin_dir().join("contexten"))
        .arg("queues")
        .env("AMQP_URL", rabbit.amqps_url().unwrap())
        .env("REDIS_URL", redis.tls_url().unwrap())
        .env("CONTEXTEN_CA_FILE", &certs.ca)
        .env("CONTEXTEN_PREFIX", &fleet.prefix)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&fleet.prefix),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.stop().await;
}

/// Runs `binary` with `env` (and nothing of the test's own environment
/// that names a broker) and returns its stderr once it has exited, failing.
async fn failed_start(binary: &str, env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(bin_dir().join(binary));
    command
        .env_remove("AMQP_URL")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_RECORDS_URL")
        .env("HEALTH_ADDR", "127.0.0.1:0")
        .env("INGEST_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(EXIT_WITHIN, command.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} kept running"))
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    assert!(!out.status.success(), "{binary} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn an_unusable_ca_file_or_an_unsupported_scheme_stops_every_binary_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    for binary in BINARIES {
        let error = failed_start(binary, &[("CONTEXTEN_CA_FILE", missing)]).await;
        assert!(
            error.contains("CONTEXTEN_CA_FILE=") && error.contains("no-such-ca.pem"),
            "{binary}: {error}"
        );
        let error =
            failed_start(binary, &[("AMQP_URL", "https://guest:s3cret@127.0.0.1:1/")]).await;
        assert!(
            error.contains("AMQP_URL") && error.contains("amqp or amqps"),
            "{binary}: {error}"
        );
        assert!(!error.contains("s3cret"), "{binary}: {error}");
    }
}
