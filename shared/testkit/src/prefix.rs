//! A unique prefix per test for queues, exchanges and Redis keys, removed when
//! the prefix is dropped, so a test that panics leaves nothing behind on the
//! machine's broker and Redis it shares with other tests running in parallel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The machine's RabbitMQ: `AMQP_URL`, default the local one (`make services`).
pub fn machine_amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The machine's Redis: `REDIS_URL`, default the local one (`make services`).
pub fn machine_redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

type Cleanup = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Longest a drop waits for its clean-ups (a stopped or killed node of the
/// test's own answers nothing; the test is over anyway).
const CLEANUP_WITHIN: Duration = Duration::from_secs(20);

/// `test-<uuid v7>` (or `<label>-<uuid>`): unique across parallel tests and
/// processes. On drop it deletes every key `<prefix>:*` in each Redis given to
/// [`clean_redis`](Self::clean_redis) and runs the clean-ups given to
/// [`on_drop`](Self::on_drop) (the broker fixture deletes its topology so),
/// on a thread of its own with its own runtime: drop cannot await, and
/// blocking a test's runtime thread on work that runtime must drive would
/// hang.
pub struct TestPrefix {
    prefix: String,
    redis: Mutex<Vec<String>>,
    cleanups: Mutex<Vec<Cleanup>>,
}

impl std::fmt::Debug for TestPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TestPrefix").field(&self.prefix).finish()
    }
}

impl Default for TestPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for TestPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)
    }
}

impl TestPrefix {
    /// `test-<uuid>`.
    pub fn new() -> Self {
        Self::labelled("test")
    }

    /// `<label>-<uuid>` (benchmarks use `bench`).
    pub fn labelled(label: &str) -> Self {
        Self::named(&format!("{label}-{}", uuid::Uuid::now_v7().simple()))
    }

    /// A prefix with the given name, for a second fixture over the same
    /// prefix as another (each cleans what it registered).
    pub fn named(name: &str) -> Self {
        TestPrefix {
            prefix: name.to_owned(),
            redis: Mutex::new(Vec::new()),
            cleanups: Mutex::new(Vec::new()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    /// Deletes the prefix's keys in the Redis at `url` on drop.
    pub fn clean_redis(&self, url: &str) -> &Self {
        let mut urls = self.redis.lock().unwrap_or_else(PoisonError::into_inner);
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_owned());
        }
        self
    }

    /// [`clean_redis`](Self::clean_redis) with the machine's Redis.
    pub fn clean_machine_redis(self) -> Self {
        self.clean_redis(&machine_redis_url());
        self
    }

    /// Runs `cleanup` on drop (before the Redis keys are deleted).
    pub fn on_drop<F, Fut>(&self, cleanup: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cleanups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(move || Box::pin(cleanup())));
    }
}

impl std::ops::Deref for TestPrefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.prefix
    }
}

impl AsRef<str> for TestPrefix {
    fn as_ref(&self) -> &str {
        &self.prefix
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let cleanups = std::mem::take(
            self.cleanups
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let urls = std::mem::take(self.redis.get_mut().unwrap_or_else(PoisonError::into_inner));
        if cleanups.is_empty() && urls.is_empty() {
            return;
        }
        let pattern = format!("{}:*", self.prefix);
        let worker = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let all = async {
                    for cleanup in cleanups {
                        cleanup().await;
                    }
                    for url in &urls {
                        let _ = delete_keys(url, &pattern).await;
                    }
                };
                let _ = tokio::time::timeout(CLEANUP_WITHIN, all).await;
            });
        });
        let _ = worker.join();
    }
}

/// Deletes every key matching `pattern` in the Redis at `url` (SCAN, so the
/// shared server is never blocked by a KEYS); returns how many were deleted.
pub async fn delete_keys(url: &str, pattern: &str) -> redis::RedisResult<usize> {
    let mut conn = connect(url).await?;
    let keys = scan(&mut conn, pattern).await?;
    for batch in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(batch).query_async(&mut conn).await?;
    }
    Ok(keys.len())
}

/// Every key matching `pattern` in the Redis at `url` (SCAN, never KEYS), for
/// assertions such as "nothing of the prefix in this Redis".
pub async fn keys_matching(url: &str, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = connect(url).await?;
    scan(&mut conn, pattern).await
}

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

async fn scan(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}
