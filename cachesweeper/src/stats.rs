//! Hit, miss and error counters of a sweeper.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The live counters and their snapshot, from one list of names: each counter is named once.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Live counters, shared by every clone of a [`Sweeper`](crate::Sweeper).
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Stats {
            pub(crate) fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        /// A copy of a sweeper's counters at one moment; subtract two to measure a stretch of
        /// work.
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
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl std::ops::Sub for StatsSnapshot {
            type Output = StatsSnapshot;

            fn sub(self, earlier: StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.saturating_sub(earlier.$name),)* }
            }
        }
    };
}

counters! {
    /// Fragments served from the cache.
    hits,
    /// Fragment lookups answered by the process-local L1, without a round trip.
    l1_hits,
    /// Fragments rendered because the cache had no usable value (including after errors).
    misses,
    /// Fragments that missed while another render of this process was rendering the same one,
    /// and were handed its result instead of rendering it again (counted as hits too).
    coalesced,
    /// Backend calls that failed; each was treated as a miss.
    errors,
    /// Bytes of fragments read from the backend (not the L1).
    bytes_read,
    /// Bytes of fragments stored.
    bytes_written,
    /// Calls to the backend (each one round trip to a remote cache).
    round_trips,
    /// Records invalidated.
    invalidations,
    /// Fragments rendered but not stored because they exceed the backend's value limit.
    oversized,
    /// Stored values that were not a whole fragment written by cachesweeper (treated as misses).
    corrupt,
    /// Fragments rendered but not stored because a record in them was invalidated too
    /// recently for this render's data to be known to include the change (see
    /// [`Sweeper::scope`](crate::Sweeper::scope)); the next render stores them.
    unstored,
    /// Fragments found in the cache but not served, because a record rendered inside them has
    /// changed since they were stored; they were rendered again.
    outdated,
}
