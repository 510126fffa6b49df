//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` over https), the session itself in Redis under the prefix with a
//! TTL, keyed by the SHA-256 of the id so a read of Redis yields no usable
//! cookie. Each session holds the admin token's name and its CSRF token.

use crate::AppState;
use axum::http::{HeaderMap, HeaderValue, header};
use contexten_broker::BrokerError;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The session cookie's name.
pub const COOKIE: &str = "contexten_console";

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin token's name (never the token).
    pub principal: String,
    /// The per-session CSRF token every POST must carry.
    pub csrf: String,
    /// The cookie's value.
    id: String,
}

/// 32 random bytes as hex.
fn random_hex() -> Result<String, BrokerError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| BrokerError::Redis("no randomness for a session id".into()))?;
    Ok(hex::encode(bytes))
}

fn key(state: &AppState, id: &str) -> String {
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    state.names.redis_key(&["console", "session", &digest])
}

/// The session id the request's cookie names, if any.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Starts a session for `principal`; returns it (with its cookie id).
pub async fn create(state: &AppState, principal: &str) -> Result<Session, BrokerError> {
    let session = Session {
        principal: principal.to_owned(),
        csrf: random_hex()?,
        id: random_hex()?,
    };
    let key = key(state, &session.id);
    let ttl = state.cfg.console.session_ttl.as_secs();
    state
        .store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.hset_multiple(
                &key,
                &[
                    ("principal", session.principal.as_str()),
                    ("csrf", session.csrf.as_str()),
                ],
            )
            .ignore();
            p.expire(&key, ttl as i64).ignore();
            p
        })
        .await?;
    Ok(session)
}

/// The session of the request's cookie, `None` when absent, unknown or expired.
pub async fn load(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, BrokerError> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let key = key(state, &id);
    let (mut fields,): (HashMap<String, String>,) = state
        .store
        .run(|| {
            let mut p = redis::pipe();
            p.hgetall(&key);
            p
        })
        .await?;
    Ok(match (fields.remove("principal"), fields.remove("csrf")) {
        (Some(principal), Some(csrf)) => Some(Session {
            principal,
            csrf,
            id,
        }),
        _ => None,
    })
}

/// Ends `session`.
pub async fn destroy(state: &AppState, session: &Session) -> Result<(), BrokerError> {
    let key = key(state, &session.id);
    state
        .store
        .run::<()>(|| {
            let mut p = redis::pipe();
            p.del(&key).ignore();
            p
        })
        .await
}

/// Whether the request reached us over https: the configured public URL says
/// so, or the proxy in front does (`X-Forwarded-Proto`). Either only makes the
/// cookie stricter.
pub fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state
        .cfg
        .console
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value that holds `session` (or clears the cookie).
pub fn cookie(session: Option<&Session>, secure: bool, ttl_secs: u64) -> HeaderValue {
    let (value, max_age) = match session {
        Some(s) => (s.id.as_str(), ttl_secs),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("contexten_console=; Path=/console; Max-Age=0"))
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let session = Session {
            principal: "ops".into(),
            csrf: "c".into(),
            id: "ab".repeat(32),
        };
        let plain = cookie(Some(&session), false, 60);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(
            cookie(Some(&session), true, 60)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={}", "ab".repeat(32))).unwrap(),
        );
        assert_eq!(
            cookie_id(&headers).as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("ab", "abc"));
    }
}
