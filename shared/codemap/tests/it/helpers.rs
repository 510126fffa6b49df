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
