//! Concurrent lookups of one key share one read. A page load behind forward auth sends one
//! `/auth/verify` per asset, all with the same session cookie, at the same moment; they
//! need one database read, not one each.
//!
//! No answer is older than its request: a caller joins only a lookup that starts after it
//! arrived. A caller that finds fewer than [`MAX_FLIGHTS`] lookups of its key running
//! starts one at once; otherwise it waits, with every caller that comes after it, for the
//! next one, which starts as soon as a running one ends. So a session ended before a check
//! arrived is never reported live to it, and a key costs at most [`MAX_FLIGHTS`] reads at a
//! time however many callers ask.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How many lookups of one key may run at once. With one, a caller that arrives during a
/// lookup waits for it to end before its own starts; more let the next start at once, but
/// on two cores the extra reads compete with the database for the processor: with two,
/// `/auth/verify` under wrk -c32 on PostgreSQL fell from 52-54% to 45-47% of `/healthz`.
pub const MAX_FLIGHTS: usize = 1;

type Slot<T> = watch::Sender<Option<T>>;

/// The lookups of one key.
struct Flights<T> {
    /// How many are running.
    running: usize,
    /// The callers waiting for a lookup to start (when [`MAX_FLIGHTS`] are running).
    next: Option<Slot<T>>,
}

/// Lookups in flight by key, each shared by the callers that arrived before it started.
pub struct Shared<T> {
    flights: Mutex<HashMap<String, Flights<T>>>,
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            flights: Mutex::default(),
        }
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Shared<T> {
    /// The answer of a `lookup(key)` that started after this call did: the next one to
    /// start for `key`, shared with every caller waiting on it. `lookup` is built only when
    /// this call starts the lookup itself. `None` only if the lookup's task died.
    pub async fn get<F, Fut>(self: &Arc<Self>, key: &str, lookup: impl FnOnce() -> F) -> Option<T>
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut answer = {
            let mut flights = self.flights.lock().expect("not poisoned");
            let entry = flights.entry(key.to_owned()).or_insert(Flights {
                running: 0,
                next: None,
            });
            if let Some(next) = &entry.next {
                next.subscribe()
            } else if entry.running < MAX_FLIGHTS {
                entry.running += 1;
                let (slot, waiting) = watch::channel(None);
                tokio::spawn(self.clone().fly(key.to_owned(), slot, lookup()));
                waiting
            } else {
                let (slot, waiting) = watch::channel(None);
                entry.next = Some(slot);
                waiting
            }
        };
        answer
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|a| a.clone())
    }

    /// Looks `key` up for the callers of `slot`, then for the callers waiting for the next
    /// lookup, until none is waiting.
    async fn fly<F, Fut>(self: Arc<Self>, key: String, mut slot: Slot<T>, lookup: F)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let found = lookup(key.clone()).await;
            slot.send_replace(Some(found));
            let mut flights = self.flights.lock().expect("not poisoned");
            let Some(entry) = flights.get_mut(&key) else {
                return;
            };
            match entry.next.take() {
                Some(next) => slot = next,
                None => {
                    entry.running -= 1;
                    if entry.running == 0 {
                        flights.remove(&key);
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::time::Duration;

    /// A store whose lookups take 50 ms and answer the version they started on, and how
    /// many lookups ran.
    type Lookup = std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

    fn slow_store() -> (
        Arc<AtomicU64>,
        Arc<AtomicU64>,
        impl Fn(String) -> Lookup + Send + Sync + Clone + 'static,
    ) {
        let version = Arc::new(AtomicU64::new(0));
        let lookups = Arc::new(AtomicU64::new(0));
        let (v, n) = (version.clone(), lookups.clone());
        let lookup = move |_key: String| {
            let (v, n) = (v.clone(), n.clone());
            Box::pin(async move {
                n.fetch_add(1, SeqCst);
                let seen = v.load(SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen
            }) as Lookup
        };
        (version, lookups, lookup)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_never_gets_a_lookup_that_began_before_it() {
        let shared: Arc<Shared<u64>> = Arc::default();
        let (version, lookups, lookup) = slow_store();
        let first = {
            let (s, l) = (shared.clone(), lookup.clone());
            tokio::spawn(async move { s.get("k", || l).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The store changes while the first lookup is in flight; every caller from now on
        // must see the change.
        version.store(1, SeqCst);
        let later: Vec<_> = (0..50)
            .map(|_| {
                let (s, l) = (shared.clone(), lookup.clone());
                tokio::spawn(async move { s.get("k", || l).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Some(0));
        for l in later {
            assert_eq!(l.await.unwrap(), Some(1), "an answer older than its caller");
        }
        // 51 callers: the first lookup, one more at once per free flight for the first
        // callers after it, and one for everyone who came while those ran.
        assert_eq!(lookups.load(SeqCst), 1 + MAX_FLIGHTS as u64);
        assert!(
            shared.flights.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_do_not_share() {
        let shared: Arc<Shared<u64>> = Arc::default();
        let (_version, lookups, lookup) = slow_store();
        let calls: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|k| {
                let (s, l) = (shared.clone(), lookup.clone());
                tokio::spawn(async move { s.get(k, || l).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), Some(0));
        }
        assert_eq!(lookups.load(SeqCst), 3);
    }
}
