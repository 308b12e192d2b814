//! The process-local cache of fragments in front of a remote backend.
//!
//! A fragment key carries its record's version, so the value under it never changes: a copy in
//! process memory can never be stale, and needs no invalidation. Only version lookups must go
//! to the shared backend. Fragments found remotely are kept for [`REMOTE_HIT_TTL`] at most
//! (their remaining lifetime there is unknown); fragments rendered here for their own TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

/// How long the L1 keeps a fragment it found in the remote backend.
pub const REMOTE_HIT_TTL: Duration = Duration::from_secs(60);

/// The default bound of the L1, in bytes: 32 MiB.
pub const DEFAULT_L1_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Clone)]
struct Entry {
    html: Arc<str>,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A bounded in-process map of fragment key to HTML.
#[derive(Clone)]
pub(crate) struct L1 {
    cache: Cache<String, Entry>,
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
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.html.len()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        L1 { cache }
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.cache.get(key).map(|entry| entry.html.to_string())
    }

    /// Keeps `html` for `ttl`, or for [`REMOTE_HIT_TTL`] when its lifetime is unknown.
    pub(crate) fn insert(&self, key: &str, html: &str, ttl: Option<Duration>) {
        let ttl = ttl.unwrap_or(REMOTE_HIT_TTL);
        self.cache.insert(
            key.to_owned(),
            Entry {
                html: html.into(),
                ttl,
            },
        );
    }
}
