//! GitHub App authentication against a fake GitHub that verifies the RS256 JWT
//! with the App's public key. The key pair is generated at test time; no
//! private key is committed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use contexten_providers::github::{AppCredentials, GithubAuth, GithubClient};
use contexten_providers::time::{rfc3339, unix_now};
use contexten_providers::{HttpSettings, ProviderError};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use secrecy::SecretString;
use serde_json::json;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const APP_ID: u64 = 123_456;
const INSTALLATION: u64 = 42;

/// Runs openssl (ring cannot generate RSA keys), failing the test with its stderr.
fn openssl(args: &[&str]) -> Vec<u8> {
    contexten_testkit::run_ok("openssl", args)
}

/// A fresh RSA key pair: the App's private key as PKCS#8 PEM, and the public
/// key (PKCS#1 DER) the fake verifies with.
fn app_key() -> (SecretString, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    let key = key.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key,
    ]);
    let public = openssl(&["rsa", "-in", key, "-RSAPublicKey_out", "-outform", "DER"]);
    let pem = std::fs::read_to_string(key).unwrap();
    (SecretString::from(pem), public)
}

/// The claims of an RS256 JWT whose signature `public_key` verifies.
fn verified_claims<T: serde::de::DeserializeOwned>(token: &str, public_key: &[u8]) -> Option<T> {
    let (message, signature) = token.rsplit_once('.')?;
    let (header, claims) = message.split_once('.')?;
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(message.as_bytes(), &signature)
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

fn installation_token(n: usize) -> String {
    ["ghs", "_", "installation", &n.to_string()].concat()
}

/// The fake's JWT check: RS256, signed by the App key, `iss` = App id, and a
/// lifetime within GitHub's ten minutes with `iat` backdated.
#[derive(Clone)]
struct VerifiesJwt {
    public_key: Vec<u8>,
    answer: Arc<dyn Fn(usize) -> ResponseTemplate + Send + Sync>,
    calls: Arc<Mutex<usize>>,
}

impl Respond for VerifiesJwt {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        #[derive(serde::Deserialize)]
        struct Claims {
            iat: u64,
            exp: u64,
            iss: String,
        }
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let unauthorized = ResponseTemplate::new(401).set_body_json(json!({
            "message": "A JSON web token could not be decoded",
            "documentation_url": "https://docs.github.com/rest"
        }));
        let Some(claims) = verified_claims::<Claims>(bearer, &self.public_key) else {
            return unauthorized;
        };
        let now = unix_now();
        let fresh = claims.iss == APP_ID.to_string()
            && claims.iat <= now.saturating_sub(50)
            && claims.exp > now
            && claims.exp - claims.iat <= 600;
        if !fresh {
            return unauthorized;
        }
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        (self.answer)(*calls)
    }
}

struct FakeGithub {
    server: MockServer,
    exchanges: Arc<Mutex<usize>>,
}

/// A fake GitHub whose installation tokens expire `lifetime_secs` after issue.
async fn fake_github(public_key: Vec<u8>, lifetime_secs: u64) -> FakeGithub {
    let server = MockServer::start().await;
    let lookups = VerifiesJwt {
        public_key: public_key.clone(),
        answer: Arc::new(|_| {
            ResponseTemplate::new(200).set_body_json(json!({
                "id": INSTALLATION, "app_id": APP_ID, "target_type": "Organization",
                "account": {"login": "octo", "type": "Organization"}
            }))
        }),
        calls: Arc::default(),
    };
    let exchanges = VerifiesJwt {
        public_key,
        answer: Arc::new(move |n| {
            ResponseTemplate::new(201).set_body_json(json!({
                "token": installation_token(n),
                "expires_at": rfc3339(unix_now() + lifetime_secs),
                "permissions": {"issues": "write"},
                "repository_selection": "all"
            }))
        }),
        calls: Arc::default(),
    };
    let exchange_count = exchanges.calls.clone();
    Mock::given(method("GET"))
        .and(path("/repos/octo/hello/installation"))
        .respond_with(lookups)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(exchanges)
        .mount(&server)
        .await;
    FakeGithub {
        server,
        exchanges: exchange_count,
    }
}

fn client(server: &MockServer, key: &SecretString) -> GithubClient {
    let app = AppCredentials::new(APP_ID, key, None).unwrap();
    let base = url::Url::parse(&server.uri()).unwrap();
    GithubClient::new(&base, GithubAuth::App(app), HttpSettings::default())
}

async fn mount_comments(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": 1, "html_url": "https://github.com/x", "body": "hi"})),
        )
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn an_app_exchanges_a_jwt_for_an_installation_token_and_reuses_it_until_it_expires() {
    let (private_key, public_key) = app_key();
    let fake = fake_github(public_key, 3600).await;
    mount_comments(&fake.server, &installation_token(1), 3).await;
    let github = client(&fake.server, &private_key);

    assert_eq!(
        github.credential_scope("octo/hello").await.unwrap(),
        "installation-42"
    );
    for _ in 0..3 {
        github.create_comment("octo/hello", 7, "hi").await.unwrap();
    }
    assert_eq!(
        *fake.exchanges.lock().unwrap(),
        1,
        "one exchange for three comments"
    );
    fake.server.verify().await;
}

#[tokio::test]
async fn a_token_about_to_expire_is_exchanged_again() {
    let (private_key, public_key) = app_key();
    // Two minutes left is inside the refresh margin: never start with it.
    let fake = fake_github(public_key, 120).await;
    mount_comments(&fake.server, &installation_token(1), 1).await;
    mount_comments(&fake.server, &installation_token(2), 1).await;
    let github = client(&fake.server, &private_key);
    github.create_comment("octo/hello", 7, "one").await.unwrap();
    github.create_comment("octo/hello", 7, "two").await.unwrap();
    assert_eq!(*fake.exchanges.lock().unwrap(), 2);
    fake.server.verify().await;
}

#[tokio::test]
async fn a_revoked_installation_token_is_replaced_on_the_next_call() {
    let (private_key, public_key) = app_key();
    let fake = fake_github(public_key, 3600).await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/hello/issues/7/comments"))
        .and(header(
            "authorization",
            format!("Bearer {}", installation_token(1)).as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .mount(&fake.server)
        .await;
    mount_comments(&fake.server, &installation_token(2), 1).await;
    let github = client(&fake.server, &private_key);
    let first = github
        .create_comment("octo/hello", 7, "hi")
        .await
        .unwrap_err();
    assert!(
        matches!(
            first,
            ProviderError::Unavailable {
                maybe_applied: false,
                ..
            }
        ),
        "{first:?}"
    );
    github.create_comment("octo/hello", 7, "hi").await.unwrap();
    assert_eq!(*fake.exchanges.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused_by_the_fake() {
    let (_, public_key) = app_key();
    let (other_private_key, _) = app_key();
    let fake = fake_github(public_key, 3600).await;
    let github = client(&fake.server, &other_private_key);
    let error = github
        .create_comment("octo/hello", 7, "hi")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "unauthorized", "{error:?}");
    assert_eq!(*fake.exchanges.lock().unwrap(), 0);
}
