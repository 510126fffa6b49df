//! A multi-level cache for generated code and context (docs/design.md §6–7): memory
//! (moka) → disk → Redis, each with a TTL, values sealed with AES-256-GCM before
//! they reach disk or Redis when a key is configured, and every lookup counted in
//! `contexten_cache_requests_total{cache, layer, result}`.
//!
//! - [`Cache`]: `get` walks the layers and promotes a hit to the faster layers;
//!   `put` writes all of them. Redis being down degrades to memory + disk.
//! - [`SingleFlight`]: in-process coalescing of identical computations;
//!   [`Cache::try_lock`] / [`Cache::wait_for`] extend it across replicas with a
//!   short Redis lock (`SET NX PX`) and a bounded wait for the holder's entry.
//! - [`EncryptionKey`] / [`Sealer`]: `CACHE_ENCRYPTION_KEY` is 32 bytes given as
//!   64 hex characters or base64 (e.g. `openssl rand -base64 32`).
//!
//! Callers choose the keys (the generator hashes its inputs); values are bytes.

pub mod budget;
mod disk;
mod flight;
mod seal;

pub use budget::{DiskBudget, PruneReport};
pub use flight::SingleFlight;
pub use seal::{EncryptionKey, KEY_FORMS, Sealer};

use contexten_store::{Store, StoreError, redis_error};
use contexten_telemetry::metric;
use disk::DiskLayer;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the encryption key must be {KEY_FORMS}")]
    BadKey,
    #[error("sealing a cache entry failed")]
    Seal,
    #[error("a cache entry could not be opened (other key, tampered or stored in clear)")]
    Open,
}

/// The layer that answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Memory,
    Disk,
    Redis,
}

impl Layer {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Memory => "memory",
            Layer::Disk => "disk",
            Layer::Redis => "redis",
        }
    }
}

/// How a cache is set up.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The cache's name: metric label, disk sub-directory, Redis key part.
    pub name: &'static str,
    /// Entries kept in memory.
    pub memory_entries: u64,
    /// Time to live of every entry in every layer.
    pub ttl: Duration,
    /// Disk layer directory; `None` disables the disk layer.
    pub disk_dir: Option<PathBuf>,
    /// Seals disk and Redis entries when set.
    pub encryption: Option<EncryptionKey>,
}

/// A value found in the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    pub value: Arc<[u8]>,
    pub layer: Layer,
}

/// Memory → disk → Redis.
#[derive(Clone)]
pub struct Cache {
    name: &'static str,
    ttl: Duration,
    memory: moka::future::Cache<String, Arc<[u8]>>,
    disk: Option<DiskLayer>,
    redis: Option<Store>,
    sealer: Sealer,
    /// Whether a write the cache Redis refused (full, `OOM`) was logged at warn
    /// level already: later ones are logged at debug (README "Redis: records and caches").
    refusal_warned: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.name)
            .field("disk", &self.disk.is_some())
            .field("redis", &self.redis.is_some())
            .field("sealer", &self.sealer)
            .finish()
    }
}

/// Upper bound of one Redis round trip before the cache treats Redis as down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often [`Cache::wait_for`] looks for another replica's entry.
const WAIT_POLL: Duration = Duration::from_millis(50);

impl Cache {
    /// A cache with the layers `config` and `redis` enable; `redis` is used
    /// through its cache handle ([`Store::cache`], `REDIS_URL`), never the records one.
    /// (The worker runtime's handle becomes one with [`Store::retyped`].)
    pub fn new(config: CacheConfig, redis: Option<Store>) -> Self {
        let memory = moka::future::Cache::builder()
            .max_capacity(config.memory_entries.max(1))
            .time_to_live(config.ttl)
            .build();
        Cache {
            name: config.name,
            ttl: config.ttl,
            memory,
            disk: config.disk_dir.map(|dir| DiskLayer::new(&dir, config.name)),
            redis: redis.map(|store| store.cache()),
            sealer: Sealer::new(config.encryption.as_ref()),
            refusal_warned: Arc::default(),
        }
    }

    /// Whether entries at rest are encrypted.
    pub fn encrypts(&self) -> bool {
        self.sealer.encrypts()
    }

    fn aad(&self, key: &str) -> String {
        format!("{}:{}", self.name, key)
    }

    /// The Redis key of an entry.
    pub fn redis_key(&self, key: &str) -> Option<String> {
        self.redis
            .as_ref()
            .map(|s| s.names().redis_key(&["cache", self.name, key]))
    }

    /// The disk file of an entry.
    pub fn disk_path(&self, key: &str) -> Option<PathBuf> {
        self.disk.as_ref().map(|d| d.path(key))
    }

    /// Looks `key` up in memory, then disk, then Redis; a hit in a slower layer
    /// is copied into the faster ones.
    pub async fn get(&self, key: &str) -> Option<Hit> {
        if let Some(value) = self.memory.get(key).await {
            metric::cache_request(self.name, "memory", true);
            return Some(Hit {
                value,
                layer: Layer::Memory,
            });
        }
        metric::cache_request(self.name, "memory", false);
        if let Some(disk) = &self.disk {
            let found = match disk.get(key).await {
                Some(sealed) => match self.sealer.open(&self.aad(key), &sealed) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        tracing::debug!(cache = self.name, error = %e, "dropping unreadable disk entry");
                        disk.remove(key).await;
                        None
                    }
                },
                None => None,
            };
            metric::cache_request(self.name, "disk", found.is_some());
            if let Some(value) = found {
                let value: Arc<[u8]> = value.into();
                self.memory.insert(key.to_owned(), value.clone()).await;
                return Some(Hit {
                    value,
                    layer: Layer::Disk,
                });
            }
        }
        if self.redis.is_some() {
            let found = self
                .redis_get(key)
                .await
                .and_then(|sealed| self.sealer.open(&self.aad(key), &sealed).ok());
            metric::cache_request(self.name, "redis", found.is_some());
            if let Some(value) = found {
                let value: Arc<[u8]> = value.into();
                self.memory.insert(key.to_owned(), value.clone()).await;
                if let Some(disk) = &self.disk {
                    self.write_disk(disk, key, &value).await;
                }
                return Some(Hit {
                    value,
                    layer: Layer::Redis,
                });
            }
        }
        None
    }

    /// Stores `value` under `key` in every layer.
    pub async fn put(&self, key: &str, value: &[u8]) {
        let value: Arc<[u8]> = value.into();
        self.memory.insert(key.to_owned(), value.clone()).await;
        if let Some(disk) = &self.disk {
            self.write_disk(disk, key, &value).await;
        }
        if self.redis.is_some() {
            match self.sealer.seal(&self.aad(key), &value) {
                Ok(sealed) => self.redis_set(key, &sealed).await,
                Err(e) => tracing::warn!(cache = self.name, error = %e, "cache entry not stored"),
            }
        }
    }

    async fn write_disk(&self, disk: &DiskLayer, key: &str, value: &[u8]) {
        let sealed = match self.sealer.seal(&self.aad(key), value) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(cache = self.name, error = %e, "cache entry not stored");
                return;
            }
        };
        if let Err(e) = disk.put(key, &sealed, self.ttl).await {
            tracing::warn!(cache = self.name, error = %e, "disk cache write failed");
        }
    }

    async fn redis_get(&self, key: &str) -> Option<Vec<u8>> {
        let store = self.redis.as_ref()?;
        let redis_key = store.names().redis_key(&["cache", self.name, key]);
        let result: Result<(Option<Vec<u8>>,), _> = store
            .run(|| {
                let mut p = redis::pipe();
                p.get(&redis_key);
                p
            })
            .await;
        match result {
            Ok((value,)) => value,
            Err(_) => {
                metric::redis_degraded("cache");
                None
            }
        }
    }

    async fn redis_set(&self, key: &str, sealed: &[u8]) {
        let Some(store) = &self.redis else { return };
        let redis_key = store.names().redis_key(&["cache", self.name, key]);
        let ttl_ms = self.ttl.as_millis().max(1) as u64;
        let result: Result<(), _> = store
            .run(|| {
                let mut p = redis::pipe();
                p.cmd("SET")
                    .arg(&redis_key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore();
                p
            })
            .await;
        match result {
            Ok(()) => {}
            Err(error) if error.is_refused() => {
                // A full cache Redis is not an outage: the entry is recomputed later.
                if !self.refusal_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(cache = self.name, %error, "the cache redis refuses writes (full?); entries stay in memory and on disk");
                } else {
                    tracing::debug!(cache = self.name, %error, "cache entry not stored in redis");
                }
            }
            Err(_) => metric::redis_degraded("cache"),
        }
    }

    /// Takes the cross-replica lock of `key` for `ttl` (`SET NX PX`). `true` when
    /// this caller should compute: it holds the lock, or Redis is unavailable
    /// (then only the in-process coalescing applies).
    pub async fn try_lock(&self, key: &str, ttl: Duration) -> bool {
        let Some(store) = &self.redis else {
            return true;
        };
        let lock_key = store.names().redis_key(&["cache", self.name, "lock", key]);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let attempt = async {
            let mut connection = store.connection().await?;
            let reply: Option<String> = redis::cmd("SET")
                .arg(&lock_key)
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            Ok::<_, StoreError>(reply.is_some())
        };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok(acquired)) => acquired,
            Ok(Err(error)) if error.is_refused() => {
                tracing::debug!(cache = self.name, %error, "cache lock not taken (the cache redis refuses writes)");
                true
            }
            _ => {
                metric::redis_degraded("cache_lock");
                true
            }
        }
    }

    /// Releases the lock taken with [`Cache::try_lock`].
    pub async fn unlock(&self, key: &str) {
        let Some(store) = &self.redis else { return };
        let lock_key = store.names().redis_key(&["cache", self.name, "lock", key]);
        let _: Result<(), _> = store
            .run(|| {
                let mut p = redis::pipe();
                p.del(&lock_key).ignore();
                p
            })
            .await;
    }

    /// Keeps a held lock alive for another `lease` (the holder calls this while it
    /// works, so a holder that dies releases the lock within one lease).
    pub async fn extend_lock(&self, key: &str, lease: Duration) {
        let Some(store) = &self.redis else { return };
        let lock_key = store.names().redis_key(&["cache", self.name, "lock", key]);
        let _: Result<(), _> = store
            .run(|| {
                let mut p = redis::pipe();
                p.pexpire(&lock_key, lease.as_millis().max(1) as i64)
                    .ignore();
                p
            })
            .await;
    }

    async fn lock_held(&self, key: &str) -> bool {
        let Some(store) = &self.redis else {
            return false;
        };
        let lock_key = store.names().redis_key(&["cache", self.name, "lock", key]);
        let held: Result<(bool,), _> = store
            .run(|| {
                let mut p = redis::pipe();
                p.exists(&lock_key);
                p
            })
            .await;
        // Unknown (Redis unreachable): keep waiting until the deadline.
        held.map(|(h,)| h).unwrap_or(true)
    }

    async fn redis_hit(&self, key: &str) -> Option<Hit> {
        let sealed = self.redis_get(key).await?;
        let value = self.sealer.open(&self.aad(key), &sealed).ok()?;
        let value: Arc<[u8]> = value.into();
        self.memory.insert(key.to_owned(), value.clone()).await;
        Some(Hit {
            value,
            layer: Layer::Redis,
        })
    }

    /// Waits up to `max_wait` for another replica to store `key` (Redis only).
    /// Stops early, with `None`, once the other replica's lock is gone without an
    /// entry (it failed, or died and its lease ran out): the caller does the work.
    pub async fn wait_for(&self, key: &str, max_wait: Duration) -> Option<Hit> {
        self.redis.as_ref()?;
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if let Some(hit) = self.redis_hit(key).await {
                return Some(hit);
            }
            if !self.lock_held(key).await {
                // The holder may have stored the entry just before releasing.
                return self.redis_hit(key).await;
            }
            if tokio::time::Instant::now() + WAIT_POLL > deadline {
                return None;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Drops `key` from memory only (tests and operators exercising the slower layers).
    pub async fn evict_memory(&self, key: &str) {
        self.memory.invalidate(key).await;
    }
}
