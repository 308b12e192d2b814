//! Invalidations that failed, kept until a retry succeeds.
//!
//! An invalidation that could not reach the cache (a server paused, a network partition) must
//! not be forgotten: when the server answers again it still holds the old versions, and every
//! fragment under them would be served again. So the counters are kept here and raised again
//! from a background thread until the backend takes them, and meanwhile this process treats
//! them as unreadable: it renders what is under them and stores nothing there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::lock;

/// The first wait before a retry; it doubles up to [`MAX_WAIT`].
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(50);

/// The longest wait between two retries. Records with a pending invalidation render
/// uncached, so a long wait would keep them so after the server is back; a short one costs
/// nothing while it is down, since its breaker answers skipped calls without the network.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(250);

/// Counter keys whose raise failed.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    /// Each key with the number of its latest failure: a retry that succeeded forgets a key
    /// only if no invalidation failed on it since the retry read it.
    keys: Mutex<(HashMap<String, u64>, u64)>,
    /// Whether `keys` is non-empty: read on every version lookup without taking the lock.
    any: AtomicBool,
    /// Whether a thread is retrying.
    running: AtomicBool,
}

impl Retry {
    pub(crate) fn is_pending(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        lock(&self.keys).0.contains_key(key)
    }

    /// Keeps `keys` for retrying. Returns whether a retry thread must be started.
    pub(crate) fn add(&self, keys: impl IntoIterator<Item = String>) -> bool {
        let mut guard = lock(&self.keys);
        let (pending, failures) = &mut *guard;
        for key in keys {
            *failures += 1;
            pending.insert(key, *failures);
        }
        self.any.store(!pending.is_empty(), Ordering::Release);
        !pending.is_empty() && !self.running.swap(true, Ordering::AcqRel)
    }

    /// The keys to retry now, each with the number of its latest failure.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        let guard = lock(&self.keys);
        guard.0.iter().map(|(k, &n)| (k.clone(), n)).collect()
    }

    /// Forgets the keys of `done` whose latest failure is still the one the retry saw (one
    /// that failed again since waits for the next retry). Returns whether the retry thread
    /// should stop (nothing left); if so it is marked stopped under the lock, so that a
    /// concurrent [`add`](Self::add) starts a new one.
    pub(crate) fn settle(&self, done: &[(String, u64)]) -> bool {
        let mut guard = lock(&self.keys);
        let pending = &mut guard.0;
        for (key, failure) in done {
            if pending.get(key) == Some(failure) {
                pending.remove(key);
            }
        }
        let done = pending.is_empty();
        self.any.store(!done, Ordering::Release);
        if done {
            self.running.store(false, Ordering::Release);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::Retry;

    #[test]
    fn a_key_that_failed_again_during_a_retry_is_kept() {
        let retry = Retry::default();
        assert!(
            retry.add(["a".to_owned(), "b".to_owned()]),
            "starts a thread"
        );
        let seen = retry.snapshot();
        assert!(!retry.add(["a".to_owned()]), "the thread runs already");
        // The retry raised both; "a" failed again meanwhile.
        assert!(!retry.settle(&seen));
        assert!(retry.contains("a") && !retry.contains("b"));
        assert!(retry.is_pending());
        let seen = retry.snapshot();
        assert!(retry.settle(&seen), "nothing left: the thread stops");
        assert!(!retry.is_pending());
        assert!(
            retry.add(["c".to_owned()]),
            "a new failure starts a new thread"
        );
    }
}
