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
pub use contexten_testkit::git;

/// A unique key prefix in the real Redis (`REDIS_URL`, default the local one);
/// its keys are deleted on drop.
#[cfg(feature = "redis")]
pub struct TestRedis {
    pub url: String,
    /// Its keys are deleted when it drops.
    pub prefix: contexten_testkit::TestPrefix,
}

#[cfg(feature = "redis")]
impl TestRedis {
    pub fn new() -> Self {
        let url = contexten_testkit::machine_redis_url();
        let prefix = contexten_testkit::TestPrefix::labelled("test-codemap");
        prefix.clean_redis(&url);
        Self { url, prefix }
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
