use crate::helpers::*;
use contexten_config::{Env, ExposeSecret};
use contexten_envelope::now_ms;
use ingest::redeliver::{self, Hook, HookClient};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const HOOK_PATH: &str = "/repos/octo-org/hello-world/hooks/4242/deliveries";

fn iso(unix: u64) -> String {
    contexten_envelope::time::rfc3339(unix)
}

fn delivery(id: u64, guid: &str, at: u64, status_code: u16) -> serde_json::Value {
    json!({
        "id": id, "guid": guid, "delivered_at": iso(at), "redelivery": false, "duration": 0.27,
        "status": if status_code == 200 { "OK" } else { "Service Unavailable" },
        "status_code": status_code, "event": "issue_comment", "action": "created",
        "installation_id": null, "repository_id": 1296269,
        "throttled_at": null
    })
}

/// Two pages, newest first: A failed then succeeded on redelivery, B failed,
/// C timed out (status 0), D succeeded, E failed but is older than the window.
async fn github_with_deliveries(auth: &'static str) -> MockServer {
    let server = MockServer::start().await;
    let now = now_ms() / 1000;
    let page1 = json!([
        delivery(110, "guid-a", now - 60, 200),
        delivery(109, "guid-b", now - 120, 503),
        delivery(108, "guid-a", now - 180, 503),
    ]);
    let page2 = json!([
        delivery(107, "guid-c", now - 240, 0),
        delivery(106, "guid-d", now - 300, 200),
        delivery(105, "guid-e", now - 7200, 503),
    ]);
    let next = format!(
        "<{}{HOOK_PATH}?per_page=100&cursor=v1_105>; rel=\"next\"",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path(HOOK_PATH))
        .and(query_param("cursor", "v1_105"))
        .and(header("authorization", auth))
        .respond_with(ResponseTemplate::new(200).set_body_json(page2))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(HOOK_PATH))
        .and(query_param("per_page", "100"))
        .and(header("authorization", auth))
        .and(header("x-github-api-version", "2022-11-28"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page1)
                .insert_header("link", next.as_str()),
        )
        .expect(1)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // The first redelivery hits a secondary rate limit and is retried after Retry-After.
    Mock::given(method("POST"))
        .and(path(format!("{HOOK_PATH}/107/attempts")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit.", "documentation_url": "https://docs.github.com/rest"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    for id in [107, 109] {
        Mock::given(method("POST"))
            .and(path(format!("{HOOK_PATH}/{id}/attempts")))
            .respond_with(ResponseTemplate::new(202).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn failed_deliveries_are_picked_and_redelivered_once_each() {
    let token = ["ghp_", "test", "0123456789"].concat();
    let auth: &'static str = Box::leak(format!("Bearer {token}").into_boxed_str());
    let server = github_with_deliveries(auth).await;
    let client = HookClient::new(
        &server.uri(),
        Hook::Repo {
            repo: "octo-org/hello-world".into(),
            hook_id: 4242,
            token: secret(&token),
        },
    )
    .unwrap();
    let report = redeliver::run(&client, Duration::from_secs(3600), now_ms() / 1000, false)
        .await
        .unwrap();
    assert_eq!(report.listed, 5);
    assert_eq!(
        report.failed.keys().collect::<Vec<_>>(),
        vec!["guid-b", "guid-c"]
    );
    assert_eq!(report.redelivered, vec!["guid-b", "guid-c"]);
    server.verify().await;
}

#[tokio::test]
async fn the_command_clears_the_deliveries_it_recorded_once_redelivered() {
    let token = ["ghp_", "cli", "0123456789"].concat();
    let auth: &'static str = Box::leak(format!("Bearer {token}").into_boxed_str());
    let server = github_with_deliveries(auth).await;
    let ingest = TestIngest::start().await;
    ingest.proxy.stop();
    ingest.wait_for_broker(false).await;
    let body = crate::fixtures::github_comment(30, "/contexten go", "octocat", "MEMBER");
    let a = ingest.github("issue_comment", "guid-b", &body).await;
    assert_eq!(a.status, 503);
    ingest.proxy.resume();

    let uri = server.uri();
    let redis = redis_url();
    let env = Env::from_pairs([
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", token.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("CONTEXTEN_PREFIX", ingest.names.prefix()),
    ]);
    let cfg = ingest::IngestConfig::from_env(&env).unwrap();
    let args = redeliver::cli::Args {
        since: "1h".into(),
        repo: Some("octo-org/hello-world".into()),
        hook_id: Some(4242),
        dry_run: false,
    };
    redeliver::cli::run(&cfg, &env, args).await.unwrap();
    let left = ingest::failed::list(
        &ingest.state.store,
        &ingest.state.cfg.failed_deliveries_file,
        0,
    )
    .await
    .unwrap();
    assert!(left.iter().all(|d| d.guid != "guid-b"), "{left:?}");
    server.verify().await;
}

#[tokio::test]
async fn the_app_hook_is_read_with_a_verifiable_app_jwt() {
    let dir = std::env::temp_dir().join(format!("ctx-app-key-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("app.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .expect("openssl to make a throwaway RSA key");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let now = now_ms() / 1000;
    let jwt = redeliver::app_jwt("12345", &pem, now).unwrap();

    // The signature verifies with the key's public half, and the claims are GitHub's.
    let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "12345");
    assert_eq!(claims["iat"], now - 60);
    assert_eq!(claims["exp"], now + 540);
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec(),
    );
    public
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64.decode(parts[2]).unwrap(),
        )
        .expect("JWT signature verifies");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/app/hook/deliveries"))
        .and(header(
            "authorization",
            format!("Bearer {}", jwt.expose_secret()).as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([delivery(
            1,
            "guid-z",
            now - 10,
            502
        )])))
        .expect(1)
        .mount(&server)
        .await;
    let client = HookClient::new(&server.uri(), Hook::App { jwt }).unwrap();
    let report = redeliver::run(&client, Duration::from_secs(600), now, true)
        .await
        .unwrap();
    assert_eq!(report.failed.keys().collect::<Vec<_>>(), vec!["guid-z"]);
    assert!(report.redelivered.is_empty(), "dry run");
    server.verify().await;
    std::fs::remove_dir_all(dir).unwrap();
}
