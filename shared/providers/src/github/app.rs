//! GitHub App authentication: an RS256 JWT signed with the App's private key is
//! exchanged for an installation token, which is cached (in memory only, never
//! in Redis) until shortly before its `expires_at`.

use crate::time::{parse_rfc3339, unix_now};
use crate::{ProviderError, github::PROVIDER};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use contexten_config::SecretSource;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A cached token is replaced this long before it expires, so a request never
/// starts with a token about to die.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Installation tokens live one hour; used when `expires_at` does not parse.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// GitHub accepts JWTs valid for at most ten minutes; `iat` is backdated 60 s
/// against clock drift, as GitHub recommends.
const JWT_BACKDATE_SECS: u64 = 60;
const JWT_LIFETIME_SECS: u64 = 9 * 60;

/// An App's identity: its id and private key (PEM, PKCS#1 or PKCS#8). A key
/// read from a file (`GITHUB_APP_PRIVATE_KEY_FILE`, or a path in
/// `GITHUB_APP_PRIVATE_KEY`) is read again for each JWT (at most a few an
/// hour), so a rotated key takes effect without a restart; a file that stops
/// holding a valid key keeps the last valid one.
#[derive(Clone)]
pub struct AppCredentials {
    app_id: u64,
    pem: SecretSource,
    /// The last key that parsed (the only one for a fixed key).
    key: Arc<Mutex<AppKey>>,
    /// A fixed installation; otherwise looked up per repository.
    installation_id: Option<u64>,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

/// A GitHub App's RSA private key, and the fleet's one RS256 signer: the
/// dispatcher's installation tokens and ingest's `redeliver-failed` sign their
/// App JWTs with it. Signed with ring, the tree's one crypto provider (crate
/// `contexten-tls`; no `jsonwebtoken`, whose backends bring aws-lc-sys or the
/// `rsa` crate). Cheap to clone.
#[derive(Clone)]
pub struct AppKey(Arc<RsaKeyPair>);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

impl AppKey {
    /// The first `PRIVATE KEY` block of `pem`: PKCS#1 (`RSA PRIVATE KEY`,
    /// what GitHub hands out) or PKCS#8.
    pub fn from_pem(pem: &SecretString) -> Result<Self, ProviderError> {
        parse_key(pem).map(AppKey)
    }

    /// An App JWT for `issuer` (the App id, or its client id): `iat` = `now`
    /// − 60 s, `exp` = `now` + 9 min, RS256 over the base64url header and
    /// claims (`now` in Unix seconds).
    pub fn jwt(&self, issuer: &str, now: u64) -> Result<String, ProviderError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iat: u64,
            exp: u64,
            iss: &'a str,
        }
        let claims = Claims {
            iat: now.saturating_sub(JWT_BACKDATE_SECS),
            exp: now + JWT_LIFETIME_SECS,
            iss: issuer,
        };
        let failed = |detail: String| ProviderError::Misconfigured {
            provider: PROVIDER,
            detail: format!("cannot sign the App JWT: {detail}"),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256"}"#);
        let claims = serde_json::to_vec(&claims).map_err(|e| failed(e.to_string()))?;
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|e| failed(e.to_string()))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The first `PRIVATE KEY` block of `pem` (see [`AppKey::from_pem`]).
fn parse_key(pem: &SecretString) -> Result<Arc<RsaKeyPair>, ProviderError> {
    let misconfigured = |detail: &str| ProviderError::Misconfigured {
        provider: PROVIDER,
        detail: format!("GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM: {detail}"),
    };
    let mut lines = pem.expose_secret().lines().map(str::trim);
    let begin = lines
        .by_ref()
        .find(|l| l.starts_with("-----BEGIN") && l.ends_with("PRIVATE KEY-----"))
        .ok_or_else(|| misconfigured("no PRIVATE KEY block"))?;
    let body: String = lines.take_while(|l| !l.starts_with("-----END")).collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| misconfigured("the block is not base64"))?;
    let key = if begin.contains("RSA PRIVATE KEY") {
        RsaKeyPair::from_der(&der)
    } else {
        RsaKeyPair::from_pkcs8(&der)
    }
    .map_err(|e| misconfigured(&e.to_string()))?;
    Ok(Arc::new(key))
}

impl AppCredentials {
    /// Credentials from the App id and its PEM private key.
    pub fn new(
        app_id: u64,
        private_key_pem: &SecretString,
        installation_id: Option<u64>,
    ) -> Result<Self, ProviderError> {
        Self::from_source(
            app_id,
            SecretSource::fixed(private_key_pem.clone()),
            installation_id,
        )
    }

    /// Credentials whose key is read from `pem` (a file is re-read per JWT);
    /// its current value must be a valid key.
    pub fn from_source(
        app_id: u64,
        pem: SecretSource,
        installation_id: Option<u64>,
    ) -> Result<Self, ProviderError> {
        let key = AppKey::from_pem(&pem.current())?;
        Ok(AppCredentials {
            app_id,
            pem,
            key: Arc::new(Mutex::new(key)),
            installation_id,
        })
    }

    /// The key to sign with: the file's current key when it parses, else the last good one.
    fn signing_key(&self) -> AppKey {
        let mut last = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if self.pem.is_file() {
            match AppKey::from_pem(&self.pem.current()) {
                Ok(key) => *last = key,
                Err(_) => tracing::warn!(
                    "GITHUB_APP_PRIVATE_KEY file does not hold a valid key: signing with the last valid one"
                ),
            }
        }
        last.clone()
    }

    /// The App id.
    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// The fixed installation, if one was configured.
    pub fn installation_id(&self) -> Option<u64> {
        self.installation_id
    }

    /// A fresh App JWT (`iat` = now − 60 s, `exp` = now + 9 min, `iss` = App id).
    pub fn jwt(&self) -> Result<String, ProviderError> {
        self.signing_key().jwt(&self.app_id.to_string(), unix_now())
    }
}

/// A cached installation token.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub token: SecretString,
    pub refresh_at: Instant,
}

/// Installation tokens by installation id.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<u64, CachedToken>,
}

impl TokenCache {
    /// A token still comfortably valid.
    pub fn get(&self, installation: u64) -> Option<SecretString> {
        self.tokens
            .get(&installation)
            .filter(|cached| Instant::now() < cached.refresh_at)
            .map(|cached| cached.token.clone())
    }

    /// Stores a token that expires at `expires_at` (RFC 3339).
    pub fn put(&mut self, installation: u64, token: SecretString, expires_at: &str) {
        let lifetime = parse_rfc3339(expires_at)
            .map(|at| Duration::from_secs(at.saturating_sub(unix_now())))
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let now = Instant::now();
        let refresh_at = now + lifetime.saturating_sub(TOKEN_REFRESH_MARGIN);
        // Expired tokens go here, so the map holds only installations in use.
        self.tokens.retain(|_, cached| now < cached.refresh_at);
        self.tokens
            .insert(installation, CachedToken { token, refresh_at });
    }

    /// Forgets a token GitHub refused (revoked before it expired).
    pub fn forget(&mut self, installation: u64) {
        self.tokens.remove(&installation);
    }
}
