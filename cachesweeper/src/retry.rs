//! Invalidations that failed, kept until a retry succeeds.
//!
//! An invalidation that could not reach the cache (a server paused, a network partition) must
//! not be forgotten: when the server answers again it still holds the old versions, and every
//! fragment under them would be served again. So the counters are kept here and raised again
//! from a background thread until the backend takes them, and meanwhile this process treats
//! them as unreadable: it renders what is under them and stores nothing there.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The first wait before a retry; it doubles up to [`MAX_WAIT`].
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(50);

/// The longest wait between two retries.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

/// Counter keys whose raise failed.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    keys: Mutex<HashSet<String>>,
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
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Keeps `keys` for retrying. Returns whether a retry thread must be started.
    pub(crate) fn add(&self, keys: impl IntoIterator<Item = String>) -> bool {
        let mut pending = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend(keys);
        self.any.store(!pending.is_empty(), Ordering::Release);
        !pending.is_empty() && !self.running.swap(true, Ordering::AcqRel)
    }

    /// The keys to retry now.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        let pending = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        pending.iter().cloned().collect()
    }

    /// Forgets `done`. Returns whether the retry thread should stop (nothing left); if so it
    /// is marked stopped under the lock, so that a concurrent [`add`](Self::add) starts a new one.
    pub(crate) fn settle(&self, done: &[String]) -> bool {
        let mut pending = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        for key in done {
            pending.remove(key);
        }
        self.any.store(!pending.is_empty(), Ordering::Release);
        if pending.is_empty() {
            self.running.store(false, Ordering::Release);
            true
        } else {
            false
        }
    }
}
