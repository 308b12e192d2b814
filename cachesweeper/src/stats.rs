//! Hit, miss and error counters of a sweeper.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by every clone of a [`Sweeper`](crate::Sweeper).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    hits: AtomicU64,
    l1_hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    round_trips: AtomicU64,
    invalidations: AtomicU64,
    oversized: AtomicU64,
    corrupt: AtomicU64,
    unstored: AtomicU64,
    outdated: AtomicU64,
}

impl Stats {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn l1_hit(&self) {
        self.l1_hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn written(&self, bytes: usize) {
        self.bytes_written.fetch_add(bytes as u64, Relaxed);
    }
    pub(crate) fn round_trip(&self) {
        self.round_trips.fetch_add(1, Relaxed);
    }
    pub(crate) fn invalidation(&self) {
        self.invalidations.fetch_add(1, Relaxed);
    }
    pub(crate) fn oversized(&self) {
        self.oversized.fetch_add(1, Relaxed);
    }
    pub(crate) fn corrupt(&self) {
        self.corrupt.fetch_add(1, Relaxed);
    }

    pub(crate) fn unstored(&self) {
        self.unstored.fetch_add(1, Relaxed);
    }

    pub(crate) fn outdated(&self) {
        self.outdated.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            l1_hits: self.l1_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            round_trips: self.round_trips.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            unstored: self.unstored.load(Relaxed),
            outdated: self.outdated.load(Relaxed),
        }
    }
}

/// A copy of a sweeper's counters at one moment; subtract two to measure a stretch of work.
///
/// ```
/// let sweeper = cachesweeper::Sweeper::embedded();
/// let before = sweeper.stats();
/// // ... render a page ...
/// let page = sweeper.stats() - before;
/// assert_eq!(page.hits + page.misses, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Fragments served from the cache.
    pub hits: u64,
    /// Fragment lookups answered by the process-local L1, without a round trip.
    pub l1_hits: u64,
    /// Fragments rendered because the cache had no usable value (including after errors).
    pub misses: u64,
    /// Fragments that missed while another render of this process was rendering the same one,
    /// and were handed its result instead of rendering it again (counted as hits too).
    pub coalesced: u64,
    /// Backend calls that failed; each was treated as a miss.
    pub errors: u64,
    /// Bytes of fragments read from the backend (not the L1).
    pub bytes_read: u64,
    /// Bytes of fragments stored.
    pub bytes_written: u64,
    /// Calls to the backend (each one round trip to a remote cache).
    pub round_trips: u64,
    /// Records invalidated.
    pub invalidations: u64,
    /// Fragments rendered but not stored because they exceed the backend's value limit.
    pub oversized: u64,
    /// Stored values that were not a whole fragment written by cachesweeper (treated as misses).
    pub corrupt: u64,
    /// Fragments rendered but not stored because a record in them was invalidated too
    /// recently for this render's data to be known to include the change (see
    /// [`Sweeper::scope`](crate::Sweeper::scope)); the next render stores them.
    pub unstored: u64,
    /// Fragments found in the cache but not served, because a record rendered inside them has
    /// changed since they were stored; they were rendered again.
    pub outdated: u64,
}

impl std::ops::Sub for StatsSnapshot {
    type Output = StatsSnapshot;

    fn sub(self, earlier: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.saturating_sub(earlier.hits),
            l1_hits: self.l1_hits.saturating_sub(earlier.l1_hits),
            misses: self.misses.saturating_sub(earlier.misses),
            coalesced: self.coalesced.saturating_sub(earlier.coalesced),
            errors: self.errors.saturating_sub(earlier.errors),
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            invalidations: self.invalidations.saturating_sub(earlier.invalidations),
            oversized: self.oversized.saturating_sub(earlier.oversized),
            corrupt: self.corrupt.saturating_sub(earlier.corrupt),
            unstored: self.unstored.saturating_sub(earlier.unstored),
            outdated: self.outdated.saturating_sub(earlier.outdated),
        }
    }
}
