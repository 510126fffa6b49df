//! Whole-repository maps shared through the real Redis: a replica with empty
//! memory and an empty disk answers a known git tree without parsing.

use std::path::Path;
use std::sync::Arc;

use contexten_codemap::{AnalysisStore, CodeMap, Engine, EngineConfig, Query, RepoSource};
use tempfile::TempDir;

use crate::helpers::{TestRedis, git, write, write_repo};

/// Files of the test repository (one holds a fake key, to check redaction survives
/// the round trip).
fn repository() -> TempDir {
    let key = ["AKIA", "Q3ZX7Z2L5V", "NR4WTB"].concat();
    let settings = format!("AWS_ACCESS_KEY_ID = \"{key}\"\nREGION = 'eu-west-1'\n");
    let dir = write_repo(&[
        ("README.md", "# shop\nCarts, pricing and payments.\n"),
        ("shop/__init__.py", ""),
        (
            "shop/cart.py",
            "from .pricing import apply_discount\n\n\nclass Cart:\n    def total(self):\n        return apply_discount(sum(i.price for i in self.items))\n",
        ),
        (
            "shop/pricing.py",
            "def apply_discount(amount):\n    \"\"\"Ten percent off above 100.\"\"\"\n    return amount * 0.9 if amount > 100 else amount\n",
        ),
        (
            "shop/payments.py",
            "class PaymentGateway:\n    def charge(self, card, amount):\n        if amount <= 0:\n            raise ValueError(\"charge amount must be positive\")\n        return True\n",
        ),
        ("shop/settings.py", settings.as_str()),
        (
            "tests/test_cart.py",
            "from shop.cart import Cart\n\n\ndef test_total():\n    assert Cart().total() == 0\n",
        ),
        (
            "tools/src/lib.rs",
            "mod net;\n/// Retries a request.\npub fn retry(n: u32) -> bool { net::send(n) }\n",
        ),
        (
            "tools/src/net.rs",
            "pub fn send(n: u32) -> bool { n > 0 }\n",
        ),
    ]);
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "first"]);
    dir
}

fn engine(cache: &Path, store: Arc<dyn AnalysisStore>) -> Engine {
    Engine::new(EngineConfig {
        allow_local: true,
        cache_dir: Some(cache.to_path_buf()),
        shared_store: Some(store),
        ..EngineConfig::default()
    })
}

fn at(dir: &TempDir, commit: &str) -> RepoSource {
    RepoSource::Git {
        url: format!("file://{}", dir.path().display()),
        reference: Some(commit.to_owned()),
    }
}

/// Everything a caller can see of a map, as text.
fn observed(map: &CodeMap) -> Vec<String> {
    let mut out = vec![map.summary_text().to_owned()];
    for q in [
        "apply_discount gives the wrong total for carts",
        "ValueError: charge amount must be positive",
        "retry send in tools",
        "settings region",
    ] {
        let ranked = map.query(&Query::new(q, 5));
        out.push(serde_json::to_string(&ranked).expect("json"));
        out.push(map.assemble_prompt(q, &ranked, 2000, "gpt-4o").text);
    }
    for f in map.files() {
        out.push(format!(
            "{} {} {:?} {:?} {:?}",
            f.path,
            f.blob_id,
            f.redactions,
            f.analysis,
            map.find_file(&f.path)
                .map(|i| (map.imports_of(i).to_vec(), map.importers_of(i).to_vec()))
        ));
        out.push(f.content.to_string());
    }
    out
}

#[test]
fn a_cold_replica_answers_a_known_tree_from_redis_without_parsing() {
    let redis = TestRedis::new();
    let repo = repository();
    let c1 = git(repo.path(), &["rev-parse", "HEAD"]);
    let (disk_a, disk_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );

    let a = engine(disk_a.path(), redis.store());
    let from_a = a.analyse(&at(&repo, &c1)).expect("a analyses");
    assert_eq!(a.stats().files_parsed, from_a.len() as u64);
    assert_eq!(a.stats().maps_stored, 1);
    assert!(
        redis.keys().iter().any(|k| k.contains(":codemap:map-")),
        "the map is in Redis under the prefix"
    );

    let b = engine(disk_b.path(), redis.store());
    let from_b = b.analyse(&at(&repo, &c1)).expect("b analyses");
    let s = b.stats();
    assert_eq!(
        s.files_parsed, 0,
        "no tree-sitter parse on the second replica"
    );
    assert_eq!(s.maps_reused_shared, 1);
    assert_eq!(s.files_reused_store, 0, "one read, not one per file");
    assert_eq!(observed(&from_a), observed(&from_b));
    let key = ["AKIA", "Q3ZX7Z2L5V", "NR4WTB"].concat();
    assert!(from_b.files().iter().all(|f| !f.content.contains(&key)));
    assert!(
        from_b
            .files()
            .iter()
            .any(|f| f.path == "shop/settings.py" && f.redactions.get("aws_access_key") == Some(&1))
    );

    // Another commit with the same tree is answered from the same map, as itself.
    git(
        repo.path(),
        &["commit", "-q", "--allow-empty", "-m", "empty"],
    );
    let c1b = git(repo.path(), &["rev-parse", "HEAD"]);
    let c = engine(tempfile::tempdir().expect("c").path(), redis.store());
    let from_c = c.analyse(&at(&repo, &c1b)).expect("c analyses");
    assert_eq!(c.stats().maps_reused_shared, 1);
    assert_eq!(from_c.commit(), Some(c1b.as_str()));
    assert_eq!(from_b.commit(), Some(c1.as_str()));
}

#[test]
fn a_new_commit_on_a_replica_parses_only_the_changed_file() {
    let redis = TestRedis::new();
    let repo = repository();
    let c1 = git(repo.path(), &["rev-parse", "HEAD"]);
    write(
        repo.path(),
        "shop/pricing.py",
        "def apply_discount(amount):\n    return amount * 0.8\n\n\ndef apply_tax(amount):\n    return amount * 1.2\n",
    );
    git(repo.path(), &["commit", "-q", "-am", "second"]);
    let c2 = git(repo.path(), &["rev-parse", "HEAD"]);
    let (disk_a, disk_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );

    let a = engine(disk_a.path(), redis.store());
    let n = a.analyse(&at(&repo, &c1)).expect("a: c1").len() as u64;
    let b = engine(disk_b.path(), redis.store());
    b.analyse(&at(&repo, &c1)).expect("b: c1");
    let on_b = b.analyse(&at(&repo, &c2)).expect("b: c2");
    let s = b.stats();
    assert_eq!(s.files_parsed, 1, "only shop/pricing.py changed");
    assert_eq!(s.maps_reused_shared, 1);
    assert_eq!(s.maps_stored, 1, "b shares c2's map in turn");
    assert_eq!(
        on_b.file_summary("shop/pricing.py")
            .expect("pricing")
            .symbols
            .len(),
        2
    );

    // And the first replica picks c2 up from Redis.
    let on_a = a.analyse(&at(&repo, &c2)).expect("a: c2");
    assert_eq!(a.stats().files_parsed, n);
    assert_eq!(a.stats().maps_reused_shared, 1);
    assert_eq!(observed(&on_a), observed(&on_b));
}

#[test]
fn an_unreachable_redis_degrades_to_memory_and_disk() {
    let repo = repository();
    let c1 = git(repo.path(), &["rev-parse", "HEAD"]);
    let disk = tempfile::tempdir().expect("disk");
    // Nothing listens on port 1.
    let down = Arc::new(
        contexten_codemap::RedisStore::new(
            "redis://127.0.0.1:1",
            "test-codemap-down",
            std::time::Duration::from_secs(60),
        )
        .expect("client"),
    );
    let a = engine(disk.path(), down.clone());
    let map = a.analyse(&at(&repo, &c1)).expect("analysis succeeds");
    assert_eq!(a.stats().files_parsed, map.len() as u64);
    assert_eq!(a.stats().maps_stored, 0);
    let b = engine(disk.path(), down);
    b.analyse(&at(&repo, &c1)).expect("a second engine too");
    assert_eq!(
        (b.stats().files_parsed, b.stats().files_reused_store),
        (0, map.len() as u64),
        "the disk layer still answers"
    );
}

#[test]
fn a_stored_map_is_used_only_when_its_estimate_fits_the_memory_budget() {
    let redis = TestRedis::new();
    let repo = repository();
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);
    let writer = engine(tempfile::tempdir().expect("w").path(), redis.store());
    let full = writer.analyse(&at(&repo, &commit)).expect("writer");
    assert_eq!(writer.stats().maps_stored, 1);
    let budgeted = |budget: u64| {
        Engine::new(EngineConfig {
            allow_local: true,
            shared_store: Some(redis.store()),
            memory_budget: Some(budget),
            ..EngineConfig::default()
        })
    };

    let roomy = budgeted(full.memory_estimate() * 2);
    let loaded = roomy.analyse(&at(&repo, &commit)).expect("roomy");
    assert_eq!(roomy.stats().maps_reused_shared, 1);
    assert_eq!(loaded.memory_reserved(), full.memory_estimate());

    // Too small for the whole map: analysed in part instead of loaded.
    let fixed = contexten_codemap::ESTIMATE_FIXED;
    let tight = budgeted(fixed + (full.memory_estimate() - fixed) / 2);
    let partial = tight.analyse(&at(&repo, &commit)).expect("tight");
    assert_eq!(tight.stats().maps_reused_shared, 0);
    assert!(
        partial
            .skipped()
            .get("memory_budget")
            .is_some_and(|n| *n > 0)
    );
    assert!(partial.len() < full.len());
}
