//! Analysis stores behind one small trait, so the worker can plug Redis in next
//! to the memory and disk layers the [`crate::Engine`] always has.
//!
//! Per-file values are zstd-compressed serde JSON of [`crate::parse::FileAnalysis`]
//! (plain JSON written before is still read); whole-repository maps (shared store
//! only) are compressed postcard ([`crate::snapshot`]). Both hold signatures, docs and terms of already-redacted
//! content, never raw secrets, and no file contents.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::CodemapError;
use crate::parse::FileAnalysis;

/// Marks a compressed per-file value; plain JSON starts with `{`.
const PACKED: &[u8; 4] = b"CXA1";
/// The fastest level: values are small and written once per parsed file; it
/// still makes them about five times smaller than the JSON (52 -> ~10 MB for the
/// Python standard library), which is what Redis memory is about.
const PACK_LEVEL: i32 = 1;
/// A per-file value never decodes to more than this.
const MAX_UNPACKED_BYTES: u64 = 64 << 20;

/// A per-file analysis as stored.
pub(crate) fn pack_analysis(a: &FileAnalysis) -> Result<Vec<u8>, CodemapError> {
    let json = serde_json::to_vec(a).map_err(|e| CodemapError::Cache(e.to_string()))?;
    let mut out = PACKED.to_vec();
    zstd::stream::copy_encode(json.as_slice(), &mut out, PACK_LEVEL)
        .map_err(|e| CodemapError::Cache(e.to_string()))?;
    Ok(out)
}

/// A stored per-file analysis, compressed or (written before) plain JSON.
pub(crate) fn unpack_analysis(bytes: &[u8]) -> Result<FileAnalysis, CodemapError> {
    let bad = |e: &dyn std::fmt::Display| CodemapError::Cache(e.to_string());
    match bytes.strip_prefix(PACKED) {
        Some(body) => {
            let mut json = Vec::new();
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| bad(&e))?
                .take(MAX_UNPACKED_BYTES)
                .read_to_end(&mut json)
                .map_err(|e| bad(&e))?;
            serde_json::from_slice(&json).map_err(|e| bad(&e))
        }
        None => serde_json::from_slice(bytes).map_err(|e| bad(&e)),
    }
}

/// A key-value store of serialised per-file analyses.
pub trait AnalysisStore: Send + Sync + std::fmt::Debug {
    /// Reads a value.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError>;
    /// Writes a value (best effort; callers log and go on when it fails).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError>;

    /// Writes a whole-repository map. A store may keep these for less time than
    /// per-file entries: there is one per commit, megabytes each, and it is wanted
    /// for hours, while a blob's analysis serves every commit that keeps the blob.
    fn put_map(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
        self.put(key, value)
    }
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
        let mut file = match std::fs::File::open(&p) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CodemapError::io(&p, e)),
        };
        let mut value = Vec::new();
        file.read_to_end(&mut value)
            .map_err(|e| CodemapError::io(&p, e))?;
        // A hit marks the entry used, so pruning removes the least recently
        // used entries first (best effort: a read-only cache still serves).
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(Some(value))
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
    use std::time::{Duration, Instant};

    use super::{AnalysisStore, CodemapError};

    /// Bounds a connect attempt, so an unreachable Redis costs one short wait.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Bounds one command; a whole-repository map is a few MB.
    const IO_TIMEOUT: Duration = Duration::from_secs(5);
    /// After a failure the store answers "not cached" without trying Redis for
    /// this long: one analysis touches thousands of keys, and each would
    /// otherwise wait for its own timeout and log its own warning.
    const RETRY_PAUSE: Duration = Duration::from_secs(15);

    /// Redis-backed store shared by all replicas; keys are `<prefix>:codemap:<key>`
    /// and expire `ttl` (maps: `map_ttl`) after they were written.
    ///
    /// A failing Redis never fails an analysis: the failed call returns its error
    /// (the engine logs it as a warning), then for 15 s every call
    /// returns [`CodemapError::CachePaused`] at once (logged at debug level) and
    /// the memory and disk layers carry on alone.
    pub struct RedisStore {
        client: redis::Client,
        /// With `REDIS_SENTINELS`: the master is asked of these on every
        /// (re)connect, so the cache follows a failover after its pause.
        sentinels: Option<Sentinels>,
        retry_pause: Duration,
        state: Mutex<State>,
        prefix: String,
        ttl_secs: u64,
        map_ttl_secs: u64,
    }

    /// The sentinels of the cache Redis and its master's name; the login
    /// (password, user, database, TLS) is the store's URL's.
    struct Sentinels {
        addresses: Vec<String>,
        master: String,
        login: redis::ConnectionInfo,
    }

    #[derive(Default)]
    struct State {
        conn: Option<redis::Connection>,
        paused_until: Option<Instant>,
    }

    impl std::fmt::Debug for RedisStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // The client's address may carry a password; show only the key prefix.
            f.debug_struct("RedisStore")
                .field("prefix", &self.prefix)
                .field("ttl_secs", &self.ttl_secs)
                .field("map_ttl_secs", &self.map_ttl_secs)
                .finish_non_exhaustive()
        }
    }

    impl RedisStore {
        /// Connects lazily to `url`; entries (maps too, unless [`Self::with_map_ttl`])
        /// expire `ttl` after they are written.
        pub fn new(url: &str, prefix: &str, ttl: Duration) -> Result<Self, CodemapError> {
            // `rediss://` gets CONTEXTEN_CA_FILE and the client certificate (contexten-tls).
            let client = contexten_tls::global()
                .and_then(|tls| tls.redis_client(url))
                .map_err(|e| CodemapError::Cache(e.to_string()))?;
            let ttl_secs = ttl.as_secs().max(1);
            Ok(Self {
                client,
                sentinels: None,
                retry_pause: RETRY_PAUSE,
                state: Mutex::new(State::default()),
                prefix: prefix.to_owned(),
                ttl_secs,
                map_ttl_secs: ttl_secs,
            })
        }

        /// Whole-repository maps expire `ttl` after they are written.
        pub fn with_map_ttl(mut self, ttl: Duration) -> Self {
            self.map_ttl_secs = ttl.as_secs().max(1);
            self
        }

        /// Finds the master through `sentinels` (`host:port`, the
        /// `REDIS_SENTINELS` of `docs/operations.md` §3.1) under the name
        /// `master`, asking again on every reconnect; the URL given to
        /// [`Self::new`] then gives only the login and TLS settings (its host
        /// is ignored).
        pub fn through_sentinels(mut self, sentinels: &[String], master: &str) -> Self {
            self.sentinels = Some(Sentinels {
                addresses: sentinels.to_vec(),
                master: master.to_owned(),
                login: self.client.get_connection_info().clone(),
            });
            self
        }

        /// How long the store answers "not cached" after a failure (default
        /// 15 s) before it tries Redis again.
        pub fn with_retry_pause(mut self, pause: Duration) -> Self {
            self.retry_pause = pause;
            self
        }

        fn set(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), CodemapError> {
            let k = self.key(key);
            self.with_conn(|c| {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("EX")
                    .arg(ttl_secs)
                    .query(c)
            })
        }

        /// Runs `f` on the connection, unless paused after a failure.
        fn with_conn<T>(
            &self,
            f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
        ) -> Result<T, CodemapError> {
            let mut state = self
                .state
                .lock()
                .map_err(|_| CodemapError::Cache("redis lock poisoned".into()))?;
            if state.paused_until.is_some_and(|t| Instant::now() < t) {
                return Err(CodemapError::CachePaused);
            }
            state.paused_until = None;
            let result = match state.conn.as_mut() {
                Some(conn) => f(conn),
                None => self.connect().and_then(|mut conn| {
                    let r = f(&mut conn);
                    state.conn = Some(conn);
                    r
                }),
            };
            result.map_err(|e| {
                // Drop a broken connection: the next call after the pause reconnects.
                state.conn = None;
                state.paused_until = Some(Instant::now() + self.retry_pause);
                CodemapError::Cache(format!(
                    "redis: {e} (not used for {:.1}s)",
                    self.retry_pause.as_secs_f32()
                ))
            })
        }

        fn connect(&self) -> redis::RedisResult<redis::Connection> {
            let conn = match &self.sentinels {
                None => self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?,
                Some(s) => s.master()?.get_connection_with_timeout(CONNECT_TIMEOUT)?,
            };
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            conn.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(conn)
        }

        fn key(&self, key: &str) -> String {
            format!("{}:codemap:{key}", self.prefix)
        }
    }

    impl Sentinels {
        /// A client for the master the first answering sentinel names. Asked
        /// here rather than through redis's blocking `SentinelClient`, which
        /// has no connect timeout: a dead sentinel costs [`CONNECT_TIMEOUT`].
        fn master(&self) -> redis::RedisResult<redis::Client> {
            let mut last = None;
            for address in &self.addresses {
                let asked = redis::Client::open(format!("redis://{address}"))
                    .and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT))
                    .and_then(|mut c| {
                        c.set_read_timeout(Some(IO_TIMEOUT))?;
                        redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg(&self.master)
                            .query::<Option<(String, u16)>>(&mut c)
                    });
                match asked {
                    Ok(Some((host, port))) => {
                        let addr = match self.login.addr() {
                            redis::ConnectionAddr::TcpTls {
                                insecure,
                                tls_params,
                                ..
                            } => redis::ConnectionAddr::TcpTls {
                                host,
                                port,
                                insecure: *insecure,
                                tls_params: tls_params.clone(),
                            },
                            _ => redis::ConnectionAddr::Tcp(host, port),
                        };
                        return redis::Client::open(self.login.clone().set_addr(addr));
                    }
                    Ok(None) => {
                        last = Some(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "sentinel does not know the master",
                            format!("{} at {address}", self.master),
                        )));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "no sentinels given"))
            }))
        }
    }

    impl AnalysisStore for RedisStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
            let k = self.key(key);
            self.with_conn(|c| redis::cmd("GET").arg(&k).query(c))
        }

        fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
            self.set(key, value, self.ttl_secs)
        }

        fn put_map(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
            self.set(key, value, self.map_ttl_secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyses_are_packed_and_plain_json_still_reads() {
        let a = crate::parse::analyse("def f(x):\n    return g(x)\n", crate::Language::Python);
        let packed = pack_analysis(&a).expect("pack");
        assert!(packed.starts_with(PACKED));
        assert_eq!(unpack_analysis(&packed).expect("unpack"), a);
        let plain = serde_json::to_vec(&a).expect("json");
        assert_eq!(unpack_analysis(&plain).expect("plain"), a);
        assert!(unpack_analysis(b"CXA1garbage").is_err());
    }

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
