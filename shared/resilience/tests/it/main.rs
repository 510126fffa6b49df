//! Limiters and breakers against the real Redis, several "replicas" (separate
//! stores) sharing one name, each test under its own prefix.

use contexten_broker::Store;
use contexten_config::{Env, RedisSettings};
use contexten_envelope::Names;
use contexten_resilience::{
    BreakerConfig, BreakerState, CircuitBreaker, Permit, RateLimiter, TokenBucket,
};
use contexten_testkit::{TestPrefix, machine_redis_url};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

fn replica(prefix: &str) -> Store {
    let url = machine_redis_url();
    let settings =
        RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", url.as_str())])).unwrap();
    Store::new(&settings, Names::new(prefix)).unwrap()
}

fn unreachable_redis(prefix: &str) -> Store {
    let settings =
        RedisSettings::from_env(&Env::from_pairs([("REDIS_URL", "redis://127.0.0.1:1")])).unwrap();
    Store::new(&settings, Names::new(prefix)).unwrap()
}

/// A unique prefix whose keys in the machine's Redis go when it drops.
fn prefix() -> TestPrefix {
    TestPrefix::new().clean_machine_redis()
}

#[tokio::test]
async fn three_replicas_together_never_exceed_the_window_limit() {
    let prefix = prefix();
    let (limit, window) = (5usize, Duration::from_millis(600));
    let limiters: Vec<RateLimiter> = (0..3)
        .map(|_| RateLimiter::new(replica(&prefix), "codegen-create", limit as u32, window))
        .collect();
    let grants: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..18 {
        let limiter = limiters[i % 3].clone();
        let grants = grants.clone();
        tasks.push(tokio::spawn(async move {
            limiter
                .acquire(Duration::from_secs(10))
                .await
                .expect("a permit within 10 s");
            grants.lock().await.push(Instant::now());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut grants = grants.lock().await.clone();
    grants.sort();
    assert_eq!(grants.len(), 18);
    // Allow for the time between Redis granting and this task noting it.
    let strict = window - Duration::from_millis(60);
    for (i, start) in grants.iter().enumerate() {
        let in_window = grants[i..]
            .iter()
            .take_while(|t| **t - *start < strict)
            .count();
        assert!(
            in_window <= limit,
            "{in_window} grants within {strict:?} from grant {i}"
        );
    }
    assert!(
        grants[17] - grants[0] >= window * 3 - Duration::from_millis(100),
        "18 permits need 3 more windows"
    );
}

#[tokio::test]
async fn a_full_window_says_how_long_to_wait() {
    let prefix = prefix();
    let limiter = RateLimiter::new(replica(&prefix), "github", 2, Duration::from_secs(60));
    assert!(limiter.try_acquire().await.is_ok());
    assert!(limiter.try_acquire().await.is_ok());
    let wait = limiter.try_acquire().await.unwrap_err();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    let wait = limiter
        .acquire(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        wait > Duration::from_secs(50),
        "returns the wait instead of sleeping: {wait:?}"
    );
}

#[tokio::test]
async fn a_token_bucket_spends_and_refills() {
    let prefix = prefix();
    let bucket = TokenBucket::new(replica(&prefix), "llm-tokens", 1000, Duration::from_secs(1));
    assert!(bucket.try_take(1000).await.is_ok());
    let wait = bucket.try_take(500).await.unwrap_err();
    assert!(
        wait >= Duration::from_millis(400) && wait <= Duration::from_millis(520),
        "{wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert!(
        bucket.try_take(500).await.is_ok(),
        "refilled after the advertised wait"
    );
}

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_millis(300),
        probe_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn failures_on_one_replica_open_the_breaker_for_all_and_one_probe_closes_it() {
    let prefix = prefix();
    let a = CircuitBreaker::new(replica(&prefix), "codegen", config());
    let b = CircuitBreaker::new(replica(&prefix), "codegen", config());
    for _ in 0..2 {
        let permit = a.check().await.unwrap();
        assert_eq!(a.record(&permit, false).await, BreakerState::Closed);
    }
    let permit = a.check().await.unwrap();
    assert_eq!(a.record(&permit, false).await, BreakerState::Open);
    let wait = b.check().await.unwrap_err();
    assert!(wait <= Duration::from_millis(300), "{wait:?}");

    tokio::time::sleep(Duration::from_millis(320)).await;
    let (pa, pb) = tokio::join!(a.check(), b.check());
    let probes: Vec<&Permit> = [&pa, &pb]
        .into_iter()
        .filter_map(|p| p.as_ref().ok())
        .collect();
    assert_eq!(probes.len(), 1, "exactly one probe: {pa:?} {pb:?}");
    assert!(matches!(probes[0], Permit::Probe(_)));
    let prober = if pa.is_ok() { &a } else { &b };
    assert_eq!(prober.record(probes[0], true).await, BreakerState::Closed);
    assert_eq!(a.check().await.unwrap(), Permit::Normal);
    assert_eq!(b.check().await.unwrap(), Permit::Normal);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let prefix = prefix();
    let breaker = CircuitBreaker::new(replica(&prefix), "llm", config());
    for _ in 0..3 {
        let permit = breaker.check().await.unwrap();
        breaker.record(&permit, false).await;
    }
    tokio::time::sleep(Duration::from_millis(320)).await;
    let probe = breaker.check().await.unwrap();
    assert!(matches!(probe, Permit::Probe(_)));
    assert_eq!(breaker.record(&probe, false).await, BreakerState::Open);
    assert!(breaker.check().await.is_err());
}

#[tokio::test]
async fn without_redis_the_local_breaker_and_limiter_still_protect() {
    let prefix = prefix();
    let breaker = CircuitBreaker::new(unreachable_redis(&prefix), "llm", config());
    for _ in 0..3 {
        let permit = breaker.check().await.unwrap();
        assert!(matches!(permit, Permit::Local { probe: false }));
        breaker.record(&permit, false).await;
    }
    assert!(breaker.check().await.is_err(), "open locally");
    let limiter = RateLimiter::new(unreachable_redis(&prefix), "x", 1, Duration::from_secs(60));
    assert!(limiter.try_acquire().await.is_ok());
    assert!(limiter.try_acquire().await.is_err());
}
