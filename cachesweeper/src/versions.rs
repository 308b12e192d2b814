//! Version counters: reading them (creating missing ones) and raising them on invalidation,
//! with failed raises retried in the background until the backend takes them.

use std::sync::Arc;

use crate::backend::Backend;
use crate::io::Io;
use crate::keys::KeySpace;
use crate::meter::Meter;
use crate::purge::{Purger, Wait};
use crate::retry::{self, Retry};
use crate::{Error, Result, clock};

/// Whether a counter's value was set by a raise that found the counter (even), rather than
/// created where it was missing (odd): see [`Backend::fresh_counter`]. Nothing is stored under
/// a version that is not confirmed.
pub(crate) fn is_confirmed(version: u64) -> bool {
    version & 1 == 0
}

/// The smallest confirmed value at or above `value`.
pub(crate) fn confirmed(value: u64) -> u64 {
    value.saturating_add(value & 1)
}

/// The counters' side of a sweeper: the invalidations still to retry, and the HTTP caches
/// each raise purges.
#[derive(Debug)]
pub(crate) struct Versions {
    retry: Arc<Retry>,
    purger: Option<Arc<Purger>>,
}

impl Versions {
    /// The counters of a sweeper whose raises purge through `purger`, if it has HTTP caches.
    pub(crate) fn new(purger: Option<Purger>) -> Versions {
        Versions {
            retry: Arc::default(),
            purger: purger.map(Arc::new),
        }
    }

    /// Purges the HTTP-cache tags of the counters `keys`, if there are caches: after they
    /// were raised, never before (a page rendered between the purge and the raise would show
    /// the old versions, and be kept).
    ///
    /// Queued now, when called; the returned future waits for it (drop it not to).
    pub(crate) fn purge(&self, keys: &[String]) -> Wait {
        match &self.purger {
            Some(purger) => purger.purge(keys.iter().map(|k| KeySpace::http_tag(k)).collect()),
            None => Wait::ready(),
        }
    }

    /// The current value of each counter in `keys`, in one batch, creating missing ones (at
    /// the backend's [`fresh_counter`](Backend::fresh_counter) for the current time). Counters
    /// whose invalidation failed in this process and has not been retried yet read as errors:
    /// nothing under them is served or stored here until it is.
    pub(crate) async fn read(&self, meter: &Meter<'_>, keys: &[&str]) -> Vec<Result<u64>> {
        if keys.is_empty() {
            return Vec::new();
        }
        // The time of the read itself, never an earlier one (such as when the render began): a
        // counter recreated after it was lost, with an invalidation in it, must be newer than
        // every render already under way, or one of them could store old rows under it.
        let fresh = meter.backend.fresh_counter(clock::now());
        let started = std::time::Instant::now();
        let mut out = meter.backend.incr_each(keys, 0, fresh).await;
        meter.tally(&out, started);
        self.confirm(meter, keys, &mut out).await;
        if self.retry.is_pending() {
            for (key, value) in keys.iter().zip(out.iter_mut()) {
                if self.retry.contains(key) {
                    *value = Err(Error::InvalidationPending {
                        key: (*key).to_owned(),
                    });
                }
            }
        }
        out
    }

    /// Confirms the counters in `read` that were created and never raised (odd: see
    /// [`Backend::fresh_counter`]), in one batch: raised to now, which is later than their
    /// creation, which the caller saw, and so later than any invalidation lost with the
    /// counter they replace. A render stores nothing under them (its data is older); later
    /// ones may. A confirmation that fails leaves the odd value: nothing is stored under it.
    async fn confirm(&self, meter: &Meter<'_>, keys: &[&str], read: &mut [Result<u64>]) {
        let (created, created_keys): (Vec<usize>, Vec<&str>) = keys
            .iter()
            .enumerate()
            .filter(|&(i, _)| matches!(read[i], Ok(v) if !is_confirmed(v)))
            .unzip();
        if created.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let raised = meter.backend.raise_each(&created_keys, clock::now()).await;
        meter.tally(&raised, started);
        for (i, raised) in created.into_iter().zip(raised) {
            if let Ok(value) = raised {
                read[i] = Ok(value);
            }
        }
    }

    /// Raises counters to the current time, in one batch; those that fail are kept and
    /// retried from a background thread (which purges them again once raised). Returns the
    /// keys, for the caller to [`purge`](Self::purge) (all of them: one that failed is purged
    /// at once too, so that no HTTP cache serves the page from before the write while the
    /// backend is down), and the first error. Dropped before it
    /// is done (an async caller's task cancelled), it leaves every key to the retry thread: the
    /// write it follows is committed, so the invalidation must land.
    pub(crate) async fn raise(
        &self,
        meter: &Meter<'_>,
        backend: &Arc<dyn Backend>,
        keys: Vec<String>,
    ) -> (Vec<String>, Result<()>) {
        if keys.is_empty() {
            return (Vec::new(), Ok(()));
        }
        let mut unfinished = Unfinished {
            versions: self,
            backend,
            keys: Some(keys),
        };
        let keys = unfinished.keys.as_deref().unwrap_or_default();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let mut results = meter.backend.raise_each(&refs, clock::now()).await;
        meter.tally(&results, started);
        // A counter this raise had to create is odd, like any created one: confirmed here, so
        // that the renders after `Ok` may store (one more batch, only for missing counters).
        self.confirm(meter, &refs, &mut results).await;
        let (mut failed, mut first_error) = (Vec::new(), None);
        for (key, result) in keys.iter().zip(results) {
            if let Err(error) = result {
                first_error.get_or_insert(error);
                failed.push(key.clone());
            }
        }
        let keys = unfinished.keys.take().unwrap_or_default();
        let Some(error) = first_error else {
            return (keys, Ok(()));
        };
        self.retry_later(backend, failed);
        (keys, Err(error))
    }

    /// Keeps `keys` to be raised from the retry thread, starting it if it is not running.
    fn retry_later(&self, backend: &Arc<dyn Backend>, keys: Vec<String>) {
        if self.retry.add(keys) {
            spawn_retry(
                Arc::clone(&self.retry),
                Arc::clone(backend),
                self.purger.clone(),
            );
        }
    }

    /// Whether a failed invalidation is still being retried.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn pending(&self) -> bool {
        self.retry.is_pending()
    }

    /// Waits until every failed invalidation of this sweeper has landed, or `timeout` has
    /// passed; else the error naming a key still pending.
    pub(crate) async fn flush<I: Io>(&self, io: &I, timeout: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let purging = || self.purger.as_ref().is_some_and(|p| p.pending());
        while (self.retry.is_pending() || purging()) && std::time::Instant::now() < deadline {
            io.sleep(FLUSH_POLL).await;
        }
        if let Some((key, _)) = self.retry.snapshot().into_iter().next() {
            return Err(Error::InvalidationPending { key });
        }
        if purging() {
            return Err(Error::PurgePending);
        }
        Ok(())
    }
}

/// How often [`Versions::flush`] looks whether the retries have landed.
const FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// A raise under way: if it is dropped before it is done, its keys go to the retry thread.
struct Unfinished<'a> {
    versions: &'a Versions,
    backend: &'a Arc<dyn Backend>,
    keys: Option<Vec<String>>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            tracing::debug!(
                keys = keys.len(),
                "cachesweeper: invalidation dropped before it was done; retrying it"
            );
            self.versions.retry_later(self.backend, keys);
        }
    }
}

/// Retries failed invalidations until the backend takes them. The thread owns what it retries:
/// the write each one follows is committed, so it must land even if every handle on the
/// sweeper is dropped meanwhile (a request's clone, a reconfiguration) while the process lives.
fn spawn_retry(retry: Arc<Retry>, backend: Arc<dyn Backend>, purger: Option<Arc<Purger>>) {
    let spawned = std::thread::Builder::new()
        .name("cachesweeper-retry".into())
        .spawn(move || {
            let mut wait = retry::FIRST_WAIT;
            loop {
                std::thread::sleep(wait);
                let keys = retry.snapshot();
                let refs: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                let results = crate::io::block_on(backend.raise_each(&refs, clock::now()));
                let done: Vec<(String, u64)> = keys
                    .into_iter()
                    .zip(&results)
                    .filter_map(|(k, r)| r.is_ok().then_some(k))
                    .collect();
                if let Some(purger) = purger.as_ref().filter(|_| !done.is_empty()) {
                    // Nobody waits for it: the write it follows was answered long ago.
                    drop(purger.purge(done.iter().map(|(k, _)| KeySpace::http_tag(k)).collect()));
                }
                if !done.is_empty() {
                    tracing::info!(
                        invalidations = done.len(),
                        "cachesweeper: failed invalidations retried"
                    );
                }
                if retry.settle(&done) {
                    return;
                }
                wait = (wait * 2).min(retry::MAX_WAIT);
            }
        });
    if spawned.is_err() {
        tracing::error!("cachesweeper: cannot start a thread to retry failed invalidations");
    }
}
