//! Test helpers: write a repository from (path, content) pairs and analyse it.

use std::path::Path;
use std::sync::Arc;

use contexten_codemap::{CodeMap, Engine, EngineConfig, RepoSource};
use tempfile::TempDir;

/// Writes files under a fresh temp dir.
pub fn write_repo(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, content) in files {
        write(dir.path(), path, content);
    }
    dir
}

/// Writes one file, creating parent directories.
pub fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

/// An engine that accepts local paths.
pub fn engine() -> Engine {
    Engine::new(EngineConfig {
        allow_local: true,
        ..EngineConfig::default()
    })
}

/// Analyses a directory with a fresh engine.
pub fn analyse(dir: &TempDir) -> Arc<CodeMap> {
    engine()
        .analyse(&RepoSource::Local(dir.path().to_path_buf()))
        .expect("analyse")
}

/// Runs git in `dir`, panicking on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A unique key prefix in the real Redis (`REDIS_URL`, default the local one);
/// its keys are deleted on drop.
#[cfg(feature = "redis")]
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

#[cfg(feature = "redis")]
impl TestRedis {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        Self {
            url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            prefix: format!(
                "test-codemap-{}-{nanos}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// A fresh store (its own connection) under this prefix.
    pub fn store(&self) -> Arc<contexten_codemap::RedisStore> {
        Arc::new(
            contexten_codemap::RedisStore::new(
                &self.url,
                &self.prefix,
                std::time::Duration::from_secs(600),
            )
            .expect("redis client"),
        )
    }

    /// Keys under this prefix.
    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client.get_connection().expect("redis is running");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .expect("keys");
        keys
    }
}

#[cfg(feature = "redis")]
impl Drop for TestRedis {
    fn drop(&mut self) {
        let keys = self.keys();
        if keys.is_empty() {
            return;
        }
        if let Ok(mut conn) =
            redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}
