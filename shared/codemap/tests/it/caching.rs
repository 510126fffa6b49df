//! Caching: a new revision re-parses only changed files; git sources; local refusal.

use contexten_codemap::{AnalysisStore, CodemapError, DiskStore, Engine, EngineConfig, RepoSource};
use std::time::{Duration, SystemTime};

use crate::helpers::{engine, git, write, write_repo};

fn files() -> Vec<(String, String)> {
    (0..20)
        .map(|i| {
            (
                format!("src/m{i}.rs"),
                format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
            )
        })
        .collect()
}

#[test]
fn changing_one_file_reparses_only_that_file() {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let engine = engine();
    let src = RepoSource::Local(dir.path().to_path_buf());
    let first = engine.analyse(&src).expect("first");
    assert_eq!(engine.stats().files_parsed, 20);
    write(
        dir.path(),
        "src/m7.rs",
        "pub fn f7() -> u32 { 700 }\npub fn extra() {}\n",
    );
    let second = engine.analyse(&src).expect("second");
    let s = engine.stats();
    assert_eq!(s.files_parsed, 21, "only the changed file is parsed again");
    assert_eq!(s.files_reused_memory, 19);
    assert!(first.file_summary("src/m7.rs").expect("m7").symbols.len() == 1);
    assert_eq!(
        second.file_summary("src/m7.rs").expect("m7").symbols.len(),
        2
    );
}

#[test]
fn disk_cache_survives_a_new_engine() {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let cache = tempfile::tempdir().expect("cache");
    let cfg = || EngineConfig {
        allow_local: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let src = RepoSource::Local(dir.path().to_path_buf());
    let a = Engine::new(cfg());
    a.analyse(&src).expect("a");
    assert_eq!(a.stats().files_parsed, 20);
    let b = Engine::new(cfg());
    let map = b.analyse(&src).expect("b");
    assert_eq!(b.stats().files_parsed, 0);
    assert_eq!(b.stats().files_reused_store, 20);
    assert_eq!(map.len(), 20);
    let store = DiskStore::new(cache.path().join("analysis"));
    let key = format!(
        "{}-rust-v{}-r{}",
        map.files()[0].blob_id,
        contexten_codemap::ANALYSER_VERSION,
        contexten_codemap::redact::REDACTION_VERSION
    );
    assert!(store.get(&key).expect("get").is_some());
}

#[test]
fn git_commits_are_read_by_blob_and_share_unchanged_files() {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "first"]);
    let c1 = git(dir.path(), &["rev-parse", "HEAD"]);
    write(dir.path(), "src/m3.rs", "pub fn f3() -> u32 { 33 }\n");
    git(dir.path(), &["commit", "-q", "-am", "second"]);
    let engine = engine();
    let url = format!("file://{}", dir.path().display());
    let m1 = engine
        .analyse(&RepoSource::Git {
            url: url.clone(),
            reference: Some(c1.clone()),
        })
        .expect("c1");
    assert_eq!(m1.commit(), Some(c1.as_str()));
    assert_eq!(engine.stats().files_parsed, 20);
    let blob = git(dir.path(), &["rev-parse", &format!("{c1}:src/m0.rs")]);
    assert_eq!(m1.files()[0].blob_id, blob);
    let m2 = engine
        .analyse(&RepoSource::Git {
            url: url.clone(),
            reference: Some("main".into()),
        })
        .expect("head");
    assert_eq!(engine.stats().files_parsed, 21);
    assert_ne!(m1.commit(), m2.commit());
    engine
        .analyse(&RepoSource::Git {
            url,
            reference: Some("main".into()),
        })
        .expect("again");
    assert_eq!(engine.stats().maps_reused, 1);
    // A working directory shares blob ids with git.
    let local = engine
        .analyse(&RepoSource::Local(dir.path().to_path_buf()))
        .expect("local");
    assert_eq!(engine.stats().files_parsed, 21);
    assert!(local.files().iter().all(|f| f.path != ".git/HEAD"));
}

#[test]
fn local_repositories_are_refused_unless_allowed() {
    let dir = write_repo(&[("a.py", "x = 1\n")]);
    let strict = Engine::new(EngineConfig::default());
    for src in [
        RepoSource::Local(dir.path().to_path_buf()),
        RepoSource::Git {
            url: format!("file://{}", dir.path().display()),
            reference: None,
        },
        RepoSource::Git {
            url: dir.path().display().to_string(),
            reference: None,
        },
    ] {
        assert!(
            matches!(strict.analyse(&src), Err(CodemapError::LocalRepoRefused)),
            "{src:?}"
        );
    }
}

#[test]
fn progress_reports_every_file_once_done() {
    use std::sync::{Arc, Mutex};
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let sink = seen.clone();
    let engine = Engine::new(EngineConfig {
        allow_local: true,
        progress: Some(Arc::new(move |p: contexten_codemap::Progress| {
            sink.lock().expect("lock").push((p.done, p.total));
        })),
        ..EngineConfig::default()
    });
    engine
        .analyse(&RepoSource::Local(dir.path().to_path_buf()))
        .expect("analyse");
    let seen = seen.lock().expect("lock");
    assert!(seen.contains(&(20, 20)), "{seen:?}");
    assert!(seen.iter().all(|(d, t)| d <= t && *t == 20));
}

/// Needs the real Redis (`REDIS_URL`); runs with `--features redis`.
#[cfg(feature = "redis")]
#[test]
fn redis_store_shares_analyses_between_engines() {
    let redis = crate::helpers::TestRedis::new();
    let store = redis.store();
    store.put("k", b"v").expect("put");
    assert_eq!(store.get("k").expect("get").as_deref(), Some(&b"v"[..]));

    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let src = RepoSource::Local(dir.path().to_path_buf());
    let cfg = || EngineConfig {
        allow_local: true,
        shared_store: Some(redis.store()),
        ..EngineConfig::default()
    };
    let a = Engine::new(cfg());
    a.analyse(&src).expect("a");
    assert_eq!(a.stats().files_parsed, 20);
    let b = Engine::new(cfg());
    b.analyse(&src).expect("b");
    assert_eq!(
        (b.stats().files_parsed, b.stats().files_reused_store),
        (0, 20)
    );
    assert_eq!(
        b.stats().maps_stored,
        0,
        "a working directory has no tree id, so no whole map is stored"
    );
}

/// The shared cache behind Redis Sentinel: its URL's host is ignored, the
/// master is found through the sentinels, and after a failover (the old master
/// turned read-only replica) the cache writes to the new master once its pause
/// is over. Starts its own Redis group (master, replica, three sentinels).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_finds_its_master_through_sentinels_and_follows_a_failover() {
    use contexten_codemap::RedisStore;
    let group = contexten_testkit::RedisSentinelGroup::start("ctkcodemap")
        .await
        .expect("sentinel group");
    let sentinels: Vec<String> = group
        .sentinel_addresses()
        .split(',')
        .map(str::to_owned)
        .collect();
    // Nothing listens on the URL's address: only the sentinels can lead there.
    let url = "redis://127.0.0.1:1";
    let store = RedisStore::new(url, "ctk-sentinel-codemap", Duration::from_secs(60))
        .expect("client")
        .through_sentinels(&sentinels, group.master_name())
        .with_retry_pause(Duration::from_millis(200));
    // The store is blocking (it runs on the analysis threads).
    use tokio::task::block_in_place as blocking;
    blocking(|| store.put("k1", b"before")).expect("put through the sentinels");
    assert_eq!(
        blocking(|| store.get("k1")).expect("get"),
        Some(b"before".to_vec())
    );

    let new_master = group.failover().await.expect("failover");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let written = blocking(|| store.put("k2", b"after"));
        if written.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write reached the new master: {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The write is on the node the sentinels now name master.
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{new_master}"))
        .expect("url")
        .get_connection()
        .expect("new master");
    let on_master: Option<Vec<u8>> = redis::cmd("GET")
        .arg("ctk-sentinel-codemap:codemap:k2")
        .query(&mut conn)
        .expect("get");
    assert_eq!(on_master.as_deref(), Some(&b"after"[..]));
}

#[test]
fn unchanged_files_evicted_from_memory_are_read_again() {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = write_repo(&refs);
    let engine = crate::helpers::engine();
    let src = RepoSource::Local(dir.path().to_path_buf());
    let first = engine.analyse(&src).expect("first");
    engine.clear_memory();
    let second = engine.analyse(&src).expect("second");
    assert_eq!(second.len(), 20);
    assert_eq!(
        engine.stats().files_parsed,
        40,
        "evicted files are read and analysed again"
    );
    for (a, b) in first.files().iter().zip(second.files()) {
        assert_eq!(
            (&a.path, &a.blob_id, &a.analysis),
            (&b.path, &b.blob_id, &b.analysis)
        );
    }
}

#[test]
fn a_disk_cache_hit_marks_the_entry_used() {
    let cache = tempfile::tempdir().unwrap();
    let store = DiskStore::new(cache.path().join("analysis"));
    store.put("abc-rust-v1", b"value").unwrap();
    let file = std::fs::read_dir(cache.path().join("analysis/ab"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(48 * 3600))
        .unwrap();
    assert_eq!(
        store.get("abc-rust-v1").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    let age = contexten_testkit::file_age(&file);
    assert!(age < Duration::from_secs(60), "{age:?}");
}
