//! The process-local cache of fragments in front of a remote backend.
//!
//! A fragment key carries its record's version, so the value under it never changes: a copy in
//! process memory is as good as the shared one, and needs no invalidation. Only versions (the
//! record's, and those of the records inside the fragment) must be read from the shared
//! backend. Each copy expires when the stored fragment does: the envelope carries the time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::Expiry;
use moka::sync::Cache;

use crate::value::Stored;

/// The default bound of the L1, in bytes: 32 MiB.
pub(crate) const DEFAULT_L1_BYTES: u64 = 32 * 1024 * 1024;

struct UntilExpiry;

impl Expiry<String, Arc<Stored>> for UntilExpiry {
    fn expire_after_create(&self, _: &String, entry: &Arc<Stored>, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(
            entry.expires_ms.saturating_sub(now_ms()),
        ))
    }
}

/// Milliseconds since the epoch, the unit of [`Stored::expires_ms`].
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A bounded in-process map of fragment key to stored fragment.
#[derive(Clone)]
pub(crate) struct L1 {
    cache: Cache<String, Arc<Stored>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl L1 {
    pub(crate) fn new(max_bytes: u64) -> L1 {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Stored>| {
                let deps: usize = entry.deps.iter().map(|d| d.counter_key.len() + 8).sum();
                u32::try_from(key.len() + entry.html.len() + deps).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExpiry)
            .build_with_hasher(foldhash::fast::RandomState::default());
        L1 { cache }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Stored>> {
        self.cache.get(key).filter(|s| s.expires_ms > now_ms())
    }

    pub(crate) fn insert(&self, key: &str, stored: Arc<Stored>) {
        if stored.expires_ms > now_ms() {
            self.cache.insert(key.to_owned(), stored);
        }
    }
}
