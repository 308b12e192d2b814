//! The in-process backend, on moka: bounded by bytes, with a time to live per entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use super::{Backend, BoxFuture, COUNTER_TTL, DEFAULT_MAX_VALUE_LEN, Leased, SetItem, ready};
use crate::Result;
use crate::value::{self, Stored};

/// What a key holds: bytes as a caller stored them, or a fragment as the sweeper stored it.
/// A sweeper's own reads of its fragments then cost a reference count, not a copy and a parse;
/// any other reader gets the fragment's envelope, encoded on the way out.
#[derive(Clone)]
enum Value {
    Bytes(Arc<[u8]>),
    Fragment(Arc<Stored>),
}

impl Value {
    fn len(&self) -> usize {
        match self {
            Value::Bytes(bytes) => bytes.len(),
            Value::Fragment(stored) => value::encoded_len(stored),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Value::Bytes(bytes) => bytes.to_vec(),
            Value::Fragment(stored) => value::encode(stored),
        }
    }
}

#[derive(Clone)]
struct Entry {
    value: Value,
    ttl: Option<Duration>,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

/// An in-process cache, bounded by the bytes of its keys and values.
///
/// The default backend: no server to run, shared by every thread of the process, gone with it.
/// Entries expire after their own time to live; when the bound is reached the least useful
/// entries are evicted (moka's TinyLFU).
///
/// A sweeper given an `Embedded` keeps its fragments in it as they are, not encoded; clones
/// share one store, so two sweepers (say, two namespaces) can share one bound:
///
/// ```
/// use cachesweeper::{Sweeper, backend::Embedded};
///
/// let cache = Embedded::new(64 * 1024 * 1024);
/// let pages = Sweeper::builder().namespace("pages").backend(cache.clone()).build()?;
/// let feeds = Sweeper::builder().namespace("feeds").backend(cache).build()?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
#[derive(Clone)]
pub struct Embedded {
    cache: Cache<String, Entry, foldhash::fast::RandomState>,
    /// Version counters, apart from the fragments and never evicted for room: a counter lost
    /// while fragments under its versions remain would have to be recreated as brand new (see
    /// [`Backend::fresh_counter`]), costing every record a render that cannot store. They go
    /// after [`COUNTER_TTL`] without use; tens of bytes each, one per record rendered.
    counters: Cache<String, u64, foldhash::fast::RandomState>,
    max_bytes: u64,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Embedded {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let counters = Cache::builder()
            .time_to_idle(COUNTER_TTL)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Embedded {
            cache,
            counters,
            max_bytes,
        }
    }

    /// The bound this cache was built with, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn incr_one(&self, key: &str, delta: u64, initial: u64) -> u64 {
        // A read (delta 0) of an existing counter is the hot path of every page: take moka's
        // read path, not its compute (write) path.
        if delta == 0
            && let Some(value) = self.counters.get(key)
        {
            return value;
        }
        // memcached wraps at 2^64; so do we.
        self.update(key, |old| old.map_or(initial, |n| n.wrapping_add(delta)))
    }

    /// The fragment under `key`: `None` if there is none, `Some(None)` if the value there is
    /// not a fragment.
    pub(crate) fn fragment(&self, key: &str) -> Option<Option<Arc<Stored>>> {
        Some(match self.cache.get(key)?.value {
            Value::Fragment(stored) => Some(stored),
            Value::Bytes(bytes) => value::decode(bytes.to_vec()).map(Arc::new),
        })
    }

    /// Stores a fragment for `ttl`, as it is.
    pub(crate) fn store_fragment(&self, key: &str, stored: Arc<Stored>, ttl: Duration) {
        let entry = Entry {
            value: Value::Fragment(stored),
            ttl: Some(ttl),
        };
        self.cache.insert(key.to_owned(), entry);
    }

    /// Sets the counter under `key` to `next(old)`, atomically, and returns the new value.
    fn update(&self, key: &str, next: impl FnOnce(Option<u64>) -> u64) -> u64 {
        use moka::ops::compute::Op;
        let mut value = 0;
        self.counters
            .entry(key.to_owned())
            .and_compute_with(|existing| {
                value = next(existing.map(|e| e.into_value()));
                Op::Put(value)
            });
        value
    }
}

impl Backend for Embedded {
    fn name(&self) -> &str {
        "embedded"
    }

    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        _lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        // No leases in one process (single flight covers it): a miss is the caller's to render.
        ready(
            keys.iter()
                .map(|key| {
                    Ok(self
                        .cache
                        .get(*key)
                        .map_or(Leased::Won, |entry| Leased::Hit(entry.value.to_bytes())))
                })
                .collect(),
        )
    }

    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        for item in items {
            self.cache.insert(
                item.key.to_owned(),
                Entry {
                    value: Value::Bytes(item.value.into()),
                    ttl: item.ttl,
                },
            );
        }
        ready(Ok(()))
    }

    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        ready(
            keys.iter()
                .map(|key| Ok(self.incr_one(key, delta, initial)))
                .collect(),
        )
    }

    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        ready(
            keys.iter()
                .map(|key| {
                    Ok(self.update(key, |old| match old {
                        None => floor | 1,
                        // Found odd: confirmed past now (see `Backend::raise_each`).
                        Some(n) if !crate::versions::is_confirmed(n) => {
                            crate::versions::confirmed((n + 1).max(floor).max(crate::clock::now()))
                        }
                        Some(n) => crate::versions::confirmed((n + 1).max(floor)),
                    }))
                })
                .collect(),
        )
    }

    fn release_leases<'a>(&'a self, _keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        ready(Ok(()))
    }

    fn fresh_counter(&self, now: u64) -> u64 {
        crate::versions::confirmed(now.saturating_sub(3_600_000_000_000))
    }

    fn max_value_len(&self) -> usize {
        DEFAULT_MAX_VALUE_LEN
    }

    fn is_local(&self) -> bool {
        true
    }
}
