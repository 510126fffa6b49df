//! The disk layer: one file per entry under `<dir>/<cache>/<xx>/<sha256(key)>`,
//! holding the expiry (unix ms, big-endian) and the sealed value. Writes go to a
//! temporary file first and are renamed into place, so a reader never sees half
//! an entry.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone)]
pub(crate) struct DiskLayer {
    root: PathBuf,
}

static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl DiskLayer {
    pub(crate) fn new(dir: &Path, cache: &str) -> Self {
        DiskLayer {
            root: dir.join(cache),
        }
    }

    /// The file of `key`.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        self.root.join(&name[..2]).join(name)
    }

    /// The sealed value, or `None` when absent, expired or unreadable.
    pub(crate) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key);
        let mut file = tokio::fs::File::open(&path).await.ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.ok()?;
        // A hit marks the entry used: a budget prunes least recently used first.
        let _ = file.into_std().await.set_modified(SystemTime::now());
        if bytes.len() < 8 {
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        let (expiry, sealed) = bytes.split_at(8);
        let mut expiry_bytes = [0u8; 8];
        expiry_bytes.copy_from_slice(expiry);
        if u64::from_be_bytes(expiry_bytes) <= now_ms() {
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        Some(sealed.to_vec())
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        sealed: &[u8],
        ttl: std::time::Duration,
    ) -> std::io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir).await?;
        let mut bytes = Vec::with_capacity(sealed.len() + 8);
        bytes.extend_from_slice(&(now_ms() + ttl.as_millis() as u64).to_be_bytes());
        bytes.extend_from_slice(sealed);
        // Unique per write: concurrent writers of one key never share a temp file.
        let unique = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    }

    pub(crate) async fn remove(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.path(key)).await;
    }
}
