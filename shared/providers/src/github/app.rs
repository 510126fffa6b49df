//! GitHub App authentication: an RS256 JWT signed with the App's private key is
//! exchanged for an installation token, which is cached (in memory only, never
//! in Redis) until shortly before its `expires_at`.

use crate::time::{parse_rfc3339, unix_now};
use crate::{ProviderError, github::PROVIDER};
use contexten_config::SecretSource;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
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
    key: Arc<Mutex<EncodingKey>>,
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

fn parse_key(pem: &SecretString) -> Result<EncodingKey, ProviderError> {
    EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|e| {
        ProviderError::Misconfigured {
            provider: PROVIDER,
            detail: format!("GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM: {e}"),
        }
    })
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
        let key = parse_key(&pem.current())?;
        Ok(AppCredentials {
            app_id,
            pem,
            key: Arc::new(Mutex::new(key)),
            installation_id,
        })
    }

    /// The key to sign with: the file's current key when it parses, else the last good one.
    fn signing_key(&self) -> EncodingKey {
        let mut last = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if self.pem.is_file() {
            match parse_key(&self.pem.current()) {
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
        #[derive(Serialize)]
        struct Claims {
            iat: u64,
            exp: u64,
            iss: String,
        }
        let now = unix_now();
        let claims = Claims {
            iat: now.saturating_sub(JWT_BACKDATE_SECS),
            exp: now + JWT_LIFETIME_SECS,
            iss: self.app_id.to_string(),
        };
        let key = self.signing_key();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|e| {
            ProviderError::Misconfigured {
                provider: PROVIDER,
                detail: format!("cannot sign the App JWT: {e}"),
            }
        })
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
        let refresh_at = Instant::now() + lifetime.saturating_sub(TOKEN_REFRESH_MARGIN);
        self.tokens
            .insert(installation, CachedToken { token, refresh_at });
    }

    /// Forgets a token GitHub refused (revoked before it expired).
    pub fn forget(&mut self, installation: u64) {
        self.tokens.remove(&installation);
    }
}
