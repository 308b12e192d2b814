//! Version counters: reading them (creating missing ones) and raising them on invalidation,
//! with failed raises retried in the background until the backend takes them.

use std::sync::{Arc, Weak};

use crate::backend::Backend;
use crate::meter::Meter;
use crate::retry::{self, Retry};
use crate::{Error, Result, clock};

/// The counters' side of a sweeper: the invalidations still to retry.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    retry: Arc<Retry>,
}

impl Versions {
    /// The current value of each counter in `keys`, in one batch, creating missing ones (at
    /// the backend's [`fresh_counter`](Backend::fresh_counter) for the current time). Counters
    /// whose invalidation failed in this process and has not been retried yet read as errors:
    /// nothing under them is served or stored here until it is.
    pub(crate) fn read(&self, meter: &Meter<'_>, keys: &[&str]) -> Vec<Result<u64>> {
        if keys.is_empty() {
            return Vec::new();
        }
        // The time of the read itself, never an earlier one (such as when the render began): a
        // counter recreated after it was lost, with an invalidation in it, must be newer than
        // every render already under way, or one of them could store old rows under it.
        let fresh = meter.backend.fresh_counter(clock::now());
        let mut out = meter.call_each(|b| b.incr_each(keys, 0, fresh));
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

    /// Raises counters to the current time, in one batch; those that fail are kept and
    /// retried from a background thread, and the first error is returned.
    pub(crate) fn raise(
        &self,
        meter: &Meter<'_>,
        backend: &Arc<dyn Backend>,
        keys: Vec<String>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let results = meter.call_each(|b| b.raise_each(&refs, clock::now()));
        let mut first_error = None;
        let failed: Vec<String> = keys
            .iter()
            .zip(results)
            .filter_map(|(key, result)| {
                let error = result.err()?;
                first_error.get_or_insert(error);
                Some(key.clone())
            })
            .collect();
        match first_error {
            None => Ok(()),
            Some(error) => {
                if self.retry.add(failed) {
                    spawn_retry(Arc::downgrade(&self.retry), Arc::clone(backend));
                }
                Err(error)
            }
        }
    }
}

/// Retries failed invalidations until the backend takes them, or the sweeper is gone.
fn spawn_retry(retry: Weak<Retry>, backend: Arc<dyn Backend>) {
    let spawned = std::thread::Builder::new()
        .name("cachesweeper-retry".into())
        .spawn(move || {
            let mut wait = retry::FIRST_WAIT;
            loop {
                std::thread::sleep(wait);
                let Some(retry) = retry.upgrade() else { return };
                let keys = retry.snapshot();
                let refs: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                let results = backend.raise_each(&refs, clock::now());
                let done: Vec<(String, u64)> = keys
                    .into_iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(k, _)| k)
                    .collect();
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
