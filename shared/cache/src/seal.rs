//! Encryption at rest: AES-256-GCM with a random 96-bit nonce per entry and the
//! entry's cache key as associated data, so a sealed value cannot be moved to
//! another key unnoticed.
//!
//! Sealed layout: `b"CXC1"`, a mode byte (`0` plain, `1` AES-256-GCM), then for
//! mode 1 the 12-byte nonce followed by ciphertext and tag.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use contexten_config::{ConfigError, Env, ExposeSecret};

const MAGIC: &[u8; 4] = b"CXC1";
const MODE_PLAIN: u8 = 0;
const MODE_AES_GCM: u8 = 1;
const NONCE_LEN: usize = 12;

/// A 256-bit key for [`Sealer`]; `Debug` never prints it.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(****)")
    }
}

/// The accepted forms of `CACHE_ENCRYPTION_KEY`, for error messages.
pub const KEY_FORMS: &str =
    "32 bytes as 64 hex characters or as base64 (standard or URL-safe, padding optional)";

impl EncryptionKey {
    /// Parses 32 bytes given as 64 hex characters or base64 (standard or URL-safe
    /// alphabet, with or without padding), e.g. `openssl rand -base64 32`.
    pub fn parse(text: &str) -> Result<Self, crate::CacheError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        let bytes = bytes.ok_or(crate::CacheError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| crate::CacheError::BadKey)?;
        Ok(EncryptionKey(key))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(bytes)
    }

    /// `CACHE_ENCRYPTION_KEY` (or `CACHE_ENCRYPTION_KEY_FILE`, read once:
    /// sealed entries need the key they were sealed with) from `env`, if set; a
    /// malformed key is a configuration error that never shows the value.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(secret) = env.secret_value("CACHE_ENCRYPTION_KEY")? else {
            return Ok(None);
        };
        Self::parse(secret.expose_secret())
            .map(Some)
            .map_err(|_| ConfigError {
                var: "CACHE_ENCRYPTION_KEY".into(),
                shown: "****".into(),
                expected: KEY_FORMS.into(),
            })
    }
}

/// Seals values before they leave the process (disk, Redis) and opens them again.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

impl Sealer {
    /// Encrypts with `key`, or stores plain bytes when there is none.
    pub fn new(key: Option<&EncryptionKey>) -> Self {
        Sealer {
            cipher: key.map(|k| Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&k.0))),
        }
    }

    /// Whether values are encrypted.
    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// Seals `value` for the cache entry `aad` (the entry's key).
    pub fn seal(&self, aad: &str, value: &[u8]) -> Result<Vec<u8>, crate::CacheError> {
        let mut out = Vec::with_capacity(value.len() + 5 + NONCE_LEN + 16);
        out.extend_from_slice(MAGIC);
        match &self.cipher {
            None => {
                out.push(MODE_PLAIN);
                out.extend_from_slice(value);
            }
            Some(cipher) => {
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                let sealed = cipher
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: value,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| crate::CacheError::Seal)?;
                out.push(MODE_AES_GCM);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    /// Opens a sealed value. A plain entry is refused while a key is set (so
    /// enabling encryption never serves what was stored in clear), and an
    /// encrypted one without the right key is refused.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, crate::CacheError> {
        let body = sealed
            .strip_prefix(MAGIC.as_slice())
            .ok_or(crate::CacheError::Open)?;
        match (body.split_first(), &self.cipher) {
            (Some((&MODE_PLAIN, rest)), None) => Ok(rest.to_vec()),
            (Some((&MODE_AES_GCM, rest)), Some(cipher)) if rest.len() > NONCE_LEN => {
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                cipher
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| crate::CacheError::Open)
            }
            _ => Err(crate::CacheError::Open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_refuse_other_lengths() {
        let hex_form = "00".repeat(31) + "ff";
        assert_eq!(EncryptionKey::parse(&hex_form).unwrap().0[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(EncryptionKey::parse(&b64).unwrap().0, [7u8; 32]);
        let b64_no_pad = b64.trim_end_matches('=');
        assert_eq!(EncryptionKey::parse(b64_no_pad).unwrap().0, [7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(EncryptionKey::parse(&short).is_err());
        assert!(EncryptionKey::parse("not a key").is_err());
        assert_eq!(format!("{:?}", key(1)), "EncryptionKey(****)");
    }

    #[test]
    fn sealed_values_round_trip_and_hide_the_plaintext() {
        let sealer = Sealer::new(Some(&key(3)));
        let secret = b"fn parse_duration() -> Duration { todo() }";
        let sealed = sealer.seal("k1", secret).unwrap();
        assert!(
            !sealed
                .windows(10)
                .any(|w| secret.windows(10).any(|s| s == w))
        );
        assert_eq!(sealer.open("k1", &sealed).unwrap(), secret);
        // Another key, another entry name, or a flipped bit: refused.
        assert!(Sealer::new(Some(&key(4))).open("k1", &sealed).is_err());
        assert!(sealer.open("k2", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open("k1", &tampered).is_err());
    }

    #[test]
    fn plain_entries_are_refused_once_a_key_is_set() {
        let plain = Sealer::new(None).seal("k", b"hello").unwrap();
        assert_eq!(Sealer::new(None).open("k", &plain).unwrap(), b"hello");
        assert!(Sealer::new(Some(&key(1))).open("k", &plain).is_err());
        let sealed = Sealer::new(Some(&key(1))).seal("k", b"hello").unwrap();
        assert!(Sealer::new(None).open("k", &sealed).is_err());
    }
}
