//! Accounting: every backend call and every hit and miss is counted here, in the sweeper's
//! shared counters and in the scope's (one request's), and backend errors are logged at most
//! once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::backend::{Backend, Embedded};
use crate::by_fragment::ByFragment;
use crate::clock;
use crate::stats::Stats;
use crate::{Error, Result};

/// The sweeper-wide metrics of the `metrics` facade (feature `metrics`), labelled by backend,
/// registered once when the sweeper is built: counting then costs an atomic add, and nothing
/// at all without a recorder. Per-fragment hits and misses are in [`ByFragment`].
#[derive(Debug)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    handles: MetricHandles,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct MetricHandles {
    round_trips: metrics::Counter,
    round_trip_seconds: metrics::Histogram,
    errors: metrics::Counter,
    bytes_read: metrics::Counter,
    bytes_written: metrics::Counter,
    invalidations: metrics::Counter,
    stampede_waits: metrics::Counter,
}

impl Metrics {
    pub(crate) fn new(_backend: &str) -> Metrics {
        Metrics {
            #[cfg(feature = "metrics")]
            handles: {
                let labels = [("backend", _backend.to_owned())];
                let counter = |name: &'static str| metrics::counter!(name, &labels);
                MetricHandles {
                    round_trips: counter("cachesweeper_round_trips_total"),
                    round_trip_seconds: metrics::histogram!(
                        "cachesweeper_round_trip_seconds",
                        &labels
                    ),
                    errors: counter("cachesweeper_errors_total"),
                    bytes_read: counter("cachesweeper_read_bytes_total"),
                    bytes_written: counter("cachesweeper_written_bytes_total"),
                    invalidations: counter("cachesweeper_invalidations_total"),
                    stampede_waits: counter("cachesweeper_stampede_waits_total"),
                }
            },
        }
    }
}

/// When a backend error was last logged, in whole seconds on [`clock`].
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: AtomicU64,
}

/// The backend of one sweeper handle, and the counters its calls go to.
#[derive(Clone, Copy)]
pub(crate) struct Meter<'a> {
    pub(crate) backend: &'a dyn Backend,
    /// The backend, when it is the embedded one (see `store.rs`).
    pub(crate) embedded: Option<&'a Embedded>,
    pub(crate) shared: &'a Stats,
    pub(crate) scope: Option<&'a Stats>,
    pub(crate) warnings: &'a Warnings,
    pub(crate) by_fragment: &'a ByFragment,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics: &'a Metrics,
}

impl Meter<'_> {
    /// Counts one event in the shared counters and in the scope's.
    pub(crate) fn count(&self, counter: fn(&Stats) -> &AtomicU64) {
        self.add(counter, 1);
    }

    /// Adds `n` to a counter, shared and the scope's.
    fn add(&self, counter: fn(&Stats) -> &AtomicU64, n: u64) {
        counter(self.shared).fetch_add(n, Ordering::Relaxed);
        if let Some(scope) = self.scope {
            counter(scope).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts a backend call that began at `started`: a round trip unless every part of it was
    /// skipped by a circuit breaker (nothing was sent), with its time, and one error if any part
    /// failed.
    pub(crate) fn tally<T>(&self, results: &[Result<T>], started: Instant) {
        let skipped = |r: &Result<T>| matches!(r, Err(Error::CircuitOpen { .. }));
        if results.is_empty() || !results.iter().all(skipped) {
            self.count(|s| &s.round_trips);
            #[cfg(feature = "metrics")]
            {
                self.metrics.handles.round_trips.increment(1);
                self.metrics
                    .handles
                    .round_trip_seconds
                    .record(started.elapsed().as_secs_f64());
            }
        }
        let _ = started;
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            self.count(|s| &s.errors);
            #[cfg(feature = "metrics")]
            self.metrics.handles.errors.increment(1);
            self.warn(error);
        }
    }

    pub(crate) fn read(&self, bytes: usize) {
        self.add(|s| &s.bytes_read, bytes as u64);
        #[cfg(feature = "metrics")]
        self.metrics.handles.bytes_read.increment(bytes as u64);
    }

    pub(crate) fn written(&self, bytes: usize) {
        self.add(|s| &s.bytes_written, bytes as u64);
        #[cfg(feature = "metrics")]
        self.metrics.handles.bytes_written.increment(bytes as u64);
    }

    pub(crate) fn invalidation(&self) {
        self.count(|s| &s.invalidations);
        #[cfg(feature = "metrics")]
        self.metrics.handles.invalidations.increment(1);
    }

    /// A lookup that waited for another render's fragment (a lease or a single flight).
    pub(crate) fn stampede_wait(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.handles.stampede_waits.increment(1);
    }

    /// Logs a backend error at most once a second, so a dead cache does not flood the log.
    fn warn(&self, error: &Error) {
        let now = clock::now() / 1_000_000_000;
        let last = self.warnings.last.load(Ordering::Relaxed);
        if now > last
            && self
                .warnings
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %crate::error::Chain(error), errors = self.shared.errors.load(Ordering::Relaxed), "cachesweeper: cache error, rendering without cache");
        }
    }

    /// A hit on a fragment of `fragment` (its name, see [`ByFragment`]).
    pub(crate) fn hit(&self, fragment: &str, key: &str, html: &str) {
        self.count(|s| &s.hits);
        self.by_fragment.get(self.backend.name(), fragment).hit();
        tracing::debug!(fragment, key, bytes = html.len(), "cachesweeper hit");
    }

    /// A hit handed over by another render of this process that had just rendered it.
    pub(crate) fn coalesced(&self, fragment: &str, key: &str, html: &str) {
        self.hit(fragment, key, html);
        self.count(|s| &s.coalesced);
        self.stampede_wait();
    }

    pub(crate) fn miss(&self, fragment: &str, key: Option<&str>) {
        self.count(|s| &s.misses);
        self.by_fragment.get(self.backend.name(), fragment).miss();
        tracing::debug!(fragment, key = key.unwrap_or("-"), "cachesweeper miss");
    }
}
