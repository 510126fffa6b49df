//! Per-file analysis stores behind one small trait, so the worker can plug Redis
//! in next to the memory and disk layers the [`crate::Engine`] always has.
//!
//! Values are compact serde JSON of [`crate::parse::FileAnalysis`]; they hold
//! signatures and docs of already-redacted content, never raw secrets.

use std::path::{Path, PathBuf};

use crate::error::CodemapError;

/// A key-value store of serialised per-file analyses.
pub trait AnalysisStore: Send + Sync + std::fmt::Debug {
    /// Reads a value.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError>;
    /// Writes a value (best effort; callers log and go on when it fails).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError>;
}

/// One file per key under a directory, written atomically (temp file + rename).
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let shard = safe.get(..2).unwrap_or("xx");
        self.dir.join(shard).join(format!("{safe}.json"))
    }
}

impl AnalysisStore for DiskStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
        let p = self.path(key);
        match std::fs::read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CodemapError::io(&p, e)),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
        let p = self.path(key);
        let dir = p.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| CodemapError::io(dir, e))?;
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, value).map_err(|e| CodemapError::io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| CodemapError::io(&p, e))
    }
}

#[cfg(feature = "redis")]
pub use redis_store::RedisStore;

#[cfg(feature = "redis")]
mod redis_store {
    use std::sync::Mutex;

    use super::{AnalysisStore, CodemapError};

    /// Redis-backed store shared by all replicas; keys are `<prefix>:codemap:<key>`.
    pub struct RedisStore {
        client: redis::Client,
        conn: Mutex<Option<redis::Connection>>,
        prefix: String,
        ttl_secs: u64,
    }

    impl std::fmt::Debug for RedisStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // The client's address may carry a password; show only the key prefix.
            f.debug_struct("RedisStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    impl RedisStore {
        /// Connects lazily to `url`; entries expire after `ttl_secs`.
        pub fn new(url: &str, prefix: &str, ttl_secs: u64) -> Result<Self, CodemapError> {
            let client =
                redis::Client::open(url).map_err(|e| CodemapError::Cache(e.to_string()))?;
            Ok(Self {
                client,
                conn: Mutex::new(None),
                prefix: prefix.to_owned(),
                ttl_secs,
            })
        }

        fn with_conn<T>(
            &self,
            f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
        ) -> Result<T, CodemapError> {
            let mut guard = self
                .conn
                .lock()
                .map_err(|_| CodemapError::Cache("redis lock poisoned".into()))?;
            if guard.is_none() {
                *guard = Some(
                    self.client
                        .get_connection()
                        .map_err(|e| CodemapError::Cache(e.to_string()))?,
                );
            }
            let Some(conn) = guard.as_mut() else {
                return Err(CodemapError::Cache("no redis connection".into()));
            };
            f(conn).map_err(|e| {
                // Drop a broken connection so the next call reconnects.
                *guard = None;
                CodemapError::Cache(e.to_string())
            })
        }

        fn key(&self, key: &str) -> String {
            format!("{}:codemap:{key}", self.prefix)
        }
    }

    impl AnalysisStore for RedisStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
            let k = self.key(key);
            self.with_conn(|c| redis::cmd("GET").arg(&k).query(c))
        }

        fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
            let k = self.key(key);
            self.with_conn(|c| {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("EX")
                    .arg(self.ttl_secs)
                    .query(c)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_store_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = DiskStore::new(dir.path());
        assert_eq!(s.get("abc:rust:1").expect("get"), None);
        s.put("abc:rust:1", b"{}").expect("put");
        assert_eq!(
            s.get("abc:rust:1").expect("get").as_deref(),
            Some(&b"{}"[..])
        );
    }
}
