//! Bearer tokens of the `/v1` API, stored as SHA-256 hashes with scopes
//! (`submit`, `read`, `admin`; admin implies the others).
//!
//! `CONTEXTEN_API_TOKENS_FILE` (TOML, reloaded when its content changes, so a
//! rotated Kubernetes secret takes effect without a restart):
//! ```toml
//! [[tokens]]
//! name = "ci"                       # shown in logs and requested_by, never the token
//! sha256 = "<hex sha256 of the token>"   # e.g. `printf %s "$TOKEN" | sha256sum`
//! scopes = ["submit", "read"]
//! repositories = ["acme/api", "acme/tools-*"]   # optional: what this token may name
//! ```
//! A name is 1–64 of `A-Z a-z 0-9 . _ -`; two entries with the same name or the
//! same hash are refused at load (one of them would silently shadow the other).
//! A file that disappears means no file tokens, not the old ones: removing the
//! file revokes them.
//! `CONTEXTEN_API_TOKENS` holds the same inline: `ci:<hex>:submit+read,ops:<hex>:admin`.
//! Tokens are long random strings, so one SHA-256 is a sufficient hash; the
//! lookup compares hashes, so the time taken says nothing about a token.

use contexten_broker::CancellationToken;
use contexten_config::{ExposeSecret, Secret};
use contexten_trust::policy::RepoPattern;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the tokens file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// One scope of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Submit,
    Read,
    Admin,
}

impl Scope {
    /// The scope's name in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "submit" => Some(Scope::Submit),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who a token belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Repositories this token may name besides what the policy file grants
    /// (see README "Security model").
    pub repositories: Vec<RepoPattern>,
}

impl Principal {
    /// Whether this principal holds `scope` (admin holds every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Why a token list is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid token list: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    repositories: Vec<String>,
}

type Table = HashMap<[u8; 32], Principal>;

/// The current token table, shared by every request (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    table: Arc<RwLock<Table>>,
    file: Option<PathBuf>,
    inline: Option<Secret>,
    /// The file content the table was built from, to notice changes.
    loaded: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

/// The SHA-256 of a token, as stored in the lists.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hash(hex_hash: &str, name: &str) -> Result<[u8; 32], TokensError> {
    let bytes = hex::decode(hex_hash.trim())
        .map_err(|_| TokensError::Invalid(format!("token {name:?}: sha256 is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| TokensError::Invalid(format!("token {name:?}: sha256 is not 32 bytes")))
}

/// Whether `name` is a valid token name: it shows in logs, `requested_by` and
/// task ownership, so it stays short and plain.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Adds one token, refusing a bad name, a second use of a name or of a hash.
fn insert(table: &mut Table, hash: [u8; 32], principal: Principal) -> Result<(), TokensError> {
    let name = &principal.name;
    if !valid_name(name) {
        return Err(TokensError::Invalid(format!(
            "token name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"
        )));
    }
    if table.values().any(|p| p.name == *name) {
        return Err(TokensError::Invalid(format!(
            "token name {name:?} is used twice"
        )));
    }
    if let Some(other) = table.get(&hash) {
        return Err(TokensError::Invalid(format!(
            "tokens {:?} and {name:?} have the same sha256",
            other.name
        )));
    }
    table.insert(hash, principal);
    Ok(())
}

fn parse_file(text: &str, table: &mut Table) -> Result<(), TokensError> {
    let file: TokensFile = toml::from_str(text).map_err(|e| TokensError::Invalid(e.to_string()))?;
    for entry in file.tokens {
        let hash = parse_hash(&entry.sha256, &entry.name)?;
        let repositories = entry
            .repositories
            .iter()
            .map(|r| {
                RepoPattern::parse(r).map_err(|e| {
                    TokensError::Invalid(format!("token {:?}: repository {e}", entry.name))
                })
            })
            .collect::<Result<_, _>>()?;
        insert(
            table,
            hash,
            Principal {
                name: entry.name,
                scopes: entry.scopes,
                repositories,
            },
        )?;
    }
    Ok(())
}

fn parse_inline(text: &str) -> Result<Table, TokensError> {
    let mut table = Table::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.splitn(3, ':');
        let (Some(name), Some(hash), Some(scopes)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokensError::Invalid(
                "CONTEXTEN_API_TOKENS entries are name:sha256hex:scope+scope".into(),
            ));
        };
        let scopes = scopes
            .split('+')
            .map(|s| {
                Scope::parse(s)
                    .ok_or_else(|| TokensError::Invalid(format!("token {name:?}: scope {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        insert(
            &mut table,
            parse_hash(hash, name)?,
            Principal {
                name: name.to_owned(),
                scopes,
                repositories: Vec::new(),
            },
        )?;
    }
    Ok(table)
}

impl TokenStore {
    /// Loads the inline list and the file; an error stops the start.
    pub fn load(file: Option<PathBuf>, inline: Option<Secret>) -> Result<Self, TokensError> {
        let store = TokenStore {
            table: Arc::default(),
            file,
            inline,
            loaded: Arc::default(),
        };
        store.reload()?;
        Ok(store)
    }

    /// A store with fixed tokens, for tests.
    pub fn from_tokens(tokens: &[(&str, &str, &[Scope])]) -> Self {
        let table = tokens
            .iter()
            .map(|(name, token, scopes)| {
                (
                    hash_token(token),
                    Principal {
                        name: (*name).to_owned(),
                        scopes: scopes.to_vec(),
                        repositories: Vec::new(),
                    },
                )
            })
            .collect();
        TokenStore {
            table: Arc::new(RwLock::new(table)),
            file: None,
            inline: None,
            loaded: Arc::default(),
        }
    }

    /// The principal holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        self.table.read().ok()?.get(&hash).cloned()
    }

    /// Re-reads the sources and swaps the table in.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let mut table = match &self.inline {
            Some(inline) => parse_inline(inline.expose_secret())?,
            None => Table::new(),
        };
        if let Some(path) = &self.file {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => Some(bytes),
                // Deleting the file revokes its tokens (a start without it too:
                // the deployment may mount it later).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(TokensError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            if let Ok(mut loaded) = self.loaded.lock() {
                *loaded = bytes.clone();
            }
            match bytes {
                Some(bytes) => {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| TokensError::Invalid("the file is not UTF-8".into()))?;
                    parse_file(&text, &mut table)?;
                }
                None => {
                    tracing::warn!(path = %path.display(), "API token file absent: no file tokens")
                }
            }
        }
        let count = table.len();
        if let Ok(mut current) = self.table.write() {
            *current = table;
        }
        Ok(count)
    }

    /// Reloads the file whenever its content changes, until `shutdown`. A broken
    /// file keeps the previous tokens (and says so) rather than locking everyone out.
    pub async fn watch(self, shutdown: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            let now = std::fs::read(&path).ok();
            let unchanged = self
                .loaded
                .lock()
                .map(|loaded| *loaded == now)
                .unwrap_or(true);
            if unchanged {
                continue;
            }
            match self.reload() {
                Ok(count) => tracing::info!(count, "API tokens reloaded"),
                Err(error) => {
                    tracing::error!(%error, "API tokens not reloaded; keeping the previous list")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_inline_lists_map_hashes_to_scopes() {
        let token = ["ctx_", "0123456789abcdef"].concat();
        let hash = hex::encode(hash_token(&token));
        let file =
            format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"submit\"]\n");
        let mut table = Table::new();
        parse_file(&file, &mut table).unwrap();
        let who = table.get(&hash_token(&token)).unwrap();
        assert_eq!(who.name, "ci");
        assert!(who.allows(Scope::Submit) && !who.allows(Scope::Read));
        let table = parse_inline(&format!("ops:{hash}:admin")).unwrap();
        assert!(table.get(&hash_token(&token)).unwrap().allows(Scope::Read));
        assert!(parse_inline("ops:nothex:admin").is_err());
        assert!(parse_inline(&format!("ops:{hash}:root")).is_err());
    }

    fn file_with(entries: &[(&str, &str)]) -> String {
        entries
            .iter()
            .map(|(name, token)| {
                format!(
                    "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n",
                    hex::encode(hash_token(token))
                )
            })
            .collect()
    }

    #[test]
    fn bad_names_and_duplicate_names_or_hashes_are_refused_at_load() {
        let (a, b) = (
            ["tok_", "aaaaaaaaaaaaaaaa"].concat(),
            ["tok_", "bbbbbbbbbbbbbbbb"].concat(),
        );
        for (entries, expected) in [
            (vec![("ci bot", a.as_str())], "must be 1-64"),
            (vec![("", a.as_str())], "must be 1-64"),
            (vec![("ci", a.as_str()), ("ci", b.as_str())], "used twice"),
            (vec![("ci", a.as_str()), ("ops", a.as_str())], "same sha256"),
        ] {
            let err = parse_file(&file_with(&entries), &mut Table::new()).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let mut table = Table::new();
        parse_file(&file_with(&[("ci", &a), ("ops.team-1", &b)]), &mut table).unwrap();
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_token_file_that_disappears_means_no_file_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let token = ["tok_", "cccccccccccccccc"].concat();
        std::fs::write(&path, file_with(&[("ci", &token)])).unwrap();
        let store = TokenStore::load(Some(path.clone()), None).unwrap();
        assert!(store.authenticate(&token).is_some());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.reload().unwrap(), 0);
        assert!(store.authenticate(&token).is_none());
    }

    #[test]
    fn token_entries_carry_their_repositories() {
        let token = ["tok_", "dddddddddddddddd"].concat();
        let file = format!(
            "[[tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"submit\"]\nrepositories = [\"acme/*\"]\n",
            hex::encode(hash_token(&token))
        );
        let mut table = Table::new();
        parse_file(&file, &mut table).unwrap();
        assert_eq!(
            table[&hash_token(&token)].repositories,
            vec![RepoPattern::parse("acme/*").unwrap()]
        );
        let bad = file.replace("acme/*", "acme/*/x");
        assert!(parse_file(&bad, &mut Table::new()).is_err());
    }
}
