//! GitHub App authentication against a fake GitHub that verifies the RS256 JWT
//! with the App's public key. The key pair is generated at test time; no
//! private key is committed.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use contexten_providers::github::{AppCredentials, GithubAuth, GithubClient};
use contexten_providers::time::{rfc3339, unix_now};
use contexten_providers::{HttpSettings, ProviderError};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde_json::json;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const APP_ID: u64 = 123_456;
const INSTALLATION: u64 = 42;

/// A fresh RSA key pair: the App's private key as PKCS#8 PEM, and the public
/// key (PKCS#1 DER) the fake verifies with.
fn app_key() -> (SecretString, Vec<u8>) {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der = AsDer::as_der(&pair).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let armour = ["-----BEGIN ", "PRIVATE KEY-----"].concat();
    let end = ["-----END ", "PRIVATE KEY-----"].concat();
    let pem = format!("{armour}\n{}\n{end}\n", lines.join("\n"));
    (SecretString::from(pem), pair.public_key().as_ref().to_vec())
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
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        let key = DecodingKey::from_rsa_der(&self.public_key);
        let unauthorized = ResponseTemplate::new(401).set_body_json(json!({
            "message": "A JSON web token could not be decoded",
            "documentation_url": "https://docs.github.com/rest"
        }));
        let Ok(token) = jsonwebtoken::decode::<Claims>(bearer, &key, &validation) else {
            return unauthorized;
        };
        let now = unix_now();
        let claims = token.claims;
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
