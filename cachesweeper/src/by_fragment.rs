//! Hits and misses by fragment name (the block's name, or the record's model for a fragment
//! without one), for `Sweeper::fragment_stats` and, with the `metrics` feature, for the
//! labelled counters of the `metrics` facade.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

/// The most names counted apart; later ones are counted together under [`OTHER`]. Block names
/// are literals in templates, so a real application has a few dozen; a name made from user
/// input must not grow a map (or a metrics label) without bound.
const MAX_NAMES: usize = 256;

/// Where the fragments past [`MAX_NAMES`] are counted.
const OTHER: &str = "(other)";

/// One name's counters.
#[derive(Debug)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    #[cfg(feature = "metrics")]
    hit_metric: metrics::Counter,
    #[cfg(feature = "metrics")]
    miss_metric: metrics::Counter,
}

impl Counters {
    fn new(_backend: &str, _name: &str) -> Counters {
        Counters {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            hit_metric: metrics::counter!(
                "cachesweeper_hits_total",
                "backend" => _backend.to_owned(),
                "fragment" => _name.to_owned()
            ),
            #[cfg(feature = "metrics")]
            miss_metric: metrics::counter!(
                "cachesweeper_misses_total",
                "backend" => _backend.to_owned(),
                "fragment" => _name.to_owned()
            ),
        }
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.hit_metric.increment(1);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.miss_metric.increment(1);
    }
}

/// The counters of every name seen, up to [`MAX_NAMES`].
#[derive(Debug, Default)]
pub(crate) struct ByFragment {
    names: RwLock<HashMap<Box<str>, Arc<Counters>, foldhash::fast::RandomState>>,
}

impl ByFragment {
    /// The counters of `name`, made on its first sight (with its metrics handles, registered
    /// with whatever recorder is installed then).
    pub(crate) fn get(&self, backend: &str, name: &str) -> Arc<Counters> {
        if let Some(counters) = self
            .names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Arc::clone(counters);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        let name = if names.len() >= MAX_NAMES && !names.contains_key(name) {
            OTHER
        } else {
            name
        };
        Arc::clone(
            names
                .entry(name.into())
                .or_insert_with(|| Arc::new(Counters::new(backend, name))),
        )
    }

    pub(crate) fn snapshot(&self) -> Vec<FragmentStats> {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<FragmentStats> = names
            .iter()
            .map(|(name, counters)| FragmentStats {
                name: name.to_string(),
                hits: counters.hits.load(Relaxed),
                misses: counters.misses.load(Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// The hits and misses of the fragments of one name since the sweeper was built (see
/// [`Sweeper::fragment_stats`](crate::Sweeper::fragment_stats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FragmentStats {
    /// The block's name (its first key part), or the record's model for a fragment without
    /// one; `(other)` for the fragments past the first 256 names.
    pub name: String,
    /// Fragments served from the cache.
    pub hits: u64,
    /// Fragments rendered.
    pub misses: u64,
}

impl FragmentStats {
    /// Hits over lookups, from 0 to 1 (0 before any lookup).
    pub fn hit_rate(&self) -> f64 {
        // Without lookups there are no hits either: 0 / 1.
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}
