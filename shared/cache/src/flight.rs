//! In-process single flight: concurrent callers with the same key share one
//! computation. If the computing caller is cancelled, the next waiter computes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Coalesces concurrent computations by key.
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> std::fmt::Debug for SingleFlight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight = self.flights.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("SingleFlight")
            .field("in_flight", &in_flight)
            .finish()
    }
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `compute` unless a computation for `key` is already in flight, in
    /// which case waits for its value. Returns the value and whether this caller
    /// computed it.
    pub async fn run<F, Fut>(&self, key: &str, compute: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.to_owned()).or_default().clone()
        };
        // Removes the map entry when this caller is done or cancelled, unless
        // others still wait on it (one of them computes next).
        let leave = Leave {
            flights: &self.flights,
            key,
            cell,
        };
        let mut computed = false;
        let value = leave
            .cell
            .get_or_init(|| {
                computed = true;
                compute()
            })
            .await
            .clone();
        (value, computed)
    }

    /// Keys being computed right now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|m| m.len()).unwrap_or(0)
    }
}

struct Leave<'a, T> {
    flights: &'a Mutex<HashMap<String, Arc<OnceCell<T>>>>,
    key: &'a str,
    cell: Arc<OnceCell<T>>,
}

impl<T> Drop for Leave<'_, T> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        let ours = flights
            .get(self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // The map and this guard hold two references; more means waiters remain.
        // A finished value is dropped from the map at once: later callers look
        // in the cache instead.
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Bound of every wait in these tests.
    const WAIT: Duration = Duration::from_secs(5);

    async fn until_in_flight(flight: &SingleFlight<u32>, n: usize) {
        tokio::time::timeout(WAIT, async {
            while flight.in_flight() != n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the flight registers in time");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let flight: Arc<SingleFlight<u32>> = Arc::default();
        let runs = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flight, runs) = (flight.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("k", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for task in tasks {
            let (value, computed) = task.await.unwrap();
            assert_eq!(value, 42);
            leaders += computed as u32;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flight: Arc<SingleFlight<u32>> = Arc::default();
        let leader = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        until_in_flight(&flight, 1).await;
        let waiter = {
            let flight = flight.clone();
            tokio::spawn(async move { flight.run("k", || async { 2 }).await })
        };
        // Whether the waiter joined before the abort or after, it computes.
        leader.abort();
        let (value, computed) = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
        assert_eq!((value, computed), (2, true));
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_lone_caller_leaves_no_entry_behind() {
        let flight: Arc<SingleFlight<u32>> = Arc::default();
        let lone = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        until_in_flight(&flight, 1).await;
        lone.abort();
        let _ = lone.await;
        assert_eq!(flight.in_flight(), 0);
    }
}
