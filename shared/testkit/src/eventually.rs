//! Polling with a deadline: one place for the "check, sleep, give up after
//! a while" loops tests need around asynchronous effects.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a check runs.
const POLL: Duration = Duration::from_millis(20);

/// What a check returns: done with a value, or not yet (with what it saw,
/// for the timeout message).
pub trait Check {
    type Value;
    /// `Ok(value)` when done, `Err(what was seen)` when not yet.
    fn done(self) -> Result<Self::Value, String>;
}

impl Check for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: Debug> Check for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Runs `check` until it is done (true, `Some`, `Ok`) and returns its value;
/// panics naming `what` and the last thing seen when `within` passes first.
/// The check always runs at least once.
pub async fn eventually<C, F, Fut>(within: Duration, what: &str, check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    poll(within, POLL, check)
        .await
        .unwrap_or_else(|seen| panic!("{what}: not so within {within:?} (last seen: {seen})"))
}

/// Runs `check` every `every` until it is done and returns its value, or
/// what it last saw once `within` has passed (for callers that report a
/// timeout themselves rather than panic). The check always runs at least once.
pub async fn poll<C, F, Fut>(
    within: Duration,
    every: Duration,
    mut check: F,
) -> Result<C::Value, String>
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let until = Instant::now() + within;
    loop {
        match check().await.done() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= until => return Err(seen),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`eventually`] for blocking code (sleeps the thread between checks).
pub fn eventually_blocking<C, F>(within: Duration, what: &str, mut check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> C,
{
    let until = Instant::now() + within;
    loop {
        match check().done() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= until => {
                panic!("{what}: not so within {within:?} (last seen: {seen})")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_check_is_done() {
        let n = AtomicU32::new(0);
        let got = eventually(Duration::from_secs(5), "the third try", || async {
            let seen = n.fetch_add(1, Ordering::SeqCst);
            (seen >= 2).then_some(seen)
        })
        .await;
        assert_eq!(got, 2);
    }

    #[tokio::test]
    #[should_panic(expected = "never: not so within")]
    async fn panics_naming_the_check_on_timeout() {
        eventually(Duration::from_millis(50), "never", || async { false }).await;
    }

    #[test]
    fn the_blocking_variant_reports_the_last_error() {
        let result = std::panic::catch_unwind(|| {
            eventually_blocking(Duration::from_millis(30), "ok", || {
                Err::<(), _>("still down")
            })
        });
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("\"still down\""), "{message}");
        assert_eq!(
            eventually_blocking(Duration::from_secs(1), "now", || Ok::<_, String>(7)),
            7
        );
    }
}
