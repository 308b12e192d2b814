//! Accounting: every backend call and every hit and miss is counted here, in the sweeper's
//! shared counters and in the scope's (one request's), and backend errors are logged at most
//! once a second.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Backend;
use crate::clock;
use crate::stats::Stats;
use crate::{Error, Result};

/// When a backend error was last logged, in whole seconds on [`clock`].
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: AtomicU64,
}

/// The backend of one sweeper handle, and the counters its calls go to.
#[derive(Clone, Copy)]
pub(crate) struct Meter<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) shared: &'a Stats,
    pub(crate) scope: Option<&'a Stats>,
    pub(crate) warnings: &'a Warnings,
}

impl Meter<'_> {
    /// Counts an event in the shared counters and in the scope's.
    pub(crate) fn count(&self, event: impl Fn(&Stats)) {
        event(self.shared);
        if let Some(scope) = self.scope {
            event(scope);
        }
    }

    /// Counts a backend call: a round trip unless every part of it was skipped by a circuit
    /// breaker (nothing was sent), and one error if any part failed.
    pub(crate) fn tally<T>(&self, results: &[Result<T>]) {
        let skipped = |r: &Result<T>| matches!(r, Err(Error::CircuitOpen { .. }));
        if results.is_empty() || !results.iter().all(skipped) {
            self.count(Stats::round_trip);
        }
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            self.count(Stats::error);
            self.warn(error);
        }
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
            tracing::warn!(%error, errors = self.shared.snapshot().errors, "cachesweeper: cache error, rendering without cache");
        }
    }

    pub(crate) fn hit(&self, key: &str, html: &str) {
        self.count(Stats::hit);
        tracing::debug!(key, bytes = html.len(), "cachesweeper hit");
    }

    pub(crate) fn coalesced(&self, key: &str, html: &str) {
        self.count(Stats::hit);
        self.count(Stats::coalesced);
        tracing::debug!(
            key,
            bytes = html.len(),
            "cachesweeper hit (rendered just now by another render)"
        );
    }

    pub(crate) fn miss(&self, model: &str, key: Option<&str>) {
        self.count(Stats::miss);
        tracing::debug!(model, key = key.unwrap_or("-"), "cachesweeper miss");
    }
}
