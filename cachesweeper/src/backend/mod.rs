//! Where fragments and version counters live.
//!
//! A backend implements [`Backend`]: the few operations that differ per store, in batch form so
//! that a page can be served in a constant number of round trips; [`BackendExt`] adds the
//! conveniences. [`Embedded`] (on moka) is always compiled; [`Memcached`] sits behind the
//! `memcache` feature, `Redis` (standalone or Redis Cluster) behind the `redis` feature. Every
//! backend passes the same conformance suite
//! (`backend::conformance`, feature `conformance`: the way to test a backend of your own).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Result;

#[cfg(any(feature = "memcache", feature = "redis"))]
mod batch;
#[cfg(any(feature = "memcache", feature = "redis"))]
mod breaker;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
#[cfg(feature = "memcache")]
mod memcached;
mod null;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "memcache", feature = "redis"))]
mod remote;
#[cfg(feature = "memcache")]
mod rendezvous;
#[cfg(feature = "memcache")]
mod ring;

pub use embedded::Embedded;
#[cfg(feature = "memcache")]
pub use memcached::{Distribution, Memcached, MemcachedBuilder};
pub use null::Null;
#[cfg(feature = "redis")]
pub use redis::{Redis, RedisBuilder};

/// How long a version counter nobody raises lives, on every backend, so that all age alike:
/// 30 days. A counter recreated after expiry is odd (not confirmed), so expiry costs a render
/// that does not store, never stale content.
pub(crate) const COUNTER_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The largest fragment a backend stores by default, on every backend, so that a page caches
/// the same fragments whichever it is on: memcached's default item size (`-I 1m`), less room
/// for the key and the item header.
pub(crate) const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 - 512;

/// The future an async [`Backend`] operation returns: boxed, so that the trait stays usable
/// as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One value to store, with its time to live (`None`: until evicted).
#[derive(Debug, Clone, Copy)]
pub struct SetItem<'a> {
    /// The key: always a valid memcached key (at most 250 bytes, no spaces or control
    /// characters), whatever the record's key and the key parts.
    pub key: &'a str,
    /// The bytes to store.
    pub value: &'a [u8],
    /// How long the value may be served; `None` keeps it until it is evicted.
    pub ttl: Option<Duration>,
}

/// What a leased lookup ([`Backend::get_leased`]) found under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leased {
    /// The stored value.
    Hit(Vec<u8>),
    /// No value, and this caller holds the lease: it should render and store the value.
    Won,
    /// No value, and another caller (perhaps another process) holds the lease and is rendering
    /// it: wait a little and look again, rather than render it too.
    Busy,
}

/// A cache store: fragments as bytes under keys, and version counters.
///
/// What a new backend must implement: reads and writes of values in batches (so that a page is
/// served in a constant number of round trips), counters that are read and raised atomically,
/// and a delete. Leases (stampede protection across processes) are optional: without them, a
/// backend answers every miss with [`Leased::Won`]. The conveniences every backend gets are in
/// [`BackendExt`]. Run the `backend::conformance` suite (feature
/// `conformance`) on a new backend.
///
/// Each call is one round trip to the store. Correctness of invalidation rests on
/// [`raise_each`](Self::raise_each) being atomic per key and never lowering a counter.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short name for logs and errors (for memcached, the server URLs).
    fn name(&self) -> &str;

    /// The value under each key, in the same order: `None` for a key with no value, or the
    /// error of the server that holds the key. With several servers, one that is down fails only
    /// its own keys.
    fn get_each(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>>>;

    /// Stores every item, replacing existing values.
    fn set_many(&self, items: &[SetItem<'_>]) -> Result<()>;

    /// Adds `delta` to each counter in `keys` and returns each value after the operation, in
    /// order, or the error of the server that holds it. A missing counter is created at
    /// `initial` instead (and `delta` is not applied), atomically per key: memcached's `ma` with
    /// `N` and `J`. With `delta` 0 this reads the counters, creating the missing ones.
    fn incr_each(&self, keys: &[&str], delta: u64, initial: u64) -> Vec<Result<u64>>;

    /// Raises each counter in `keys` to the smallest even number at or above
    /// `max(value + 1, floor)`, atomically per key, and returns each value after the operation,
    /// in order, or the error of the server that holds it. A missing counter is created at
    /// `floor | 1`. This is how an invalidation stamps a record with its time: whatever raced
    /// with it, the counter ends at least at `floor`, and never decreases.
    ///
    /// The parity is the counter's state (see [`fresh_counter`](Self::fresh_counter)): an even
    /// value was set by a raise that found the counter, so it is at least the time that raise
    /// was sent; an odd one was created where a counter was missing, and a creation that
    /// travelled slowly may be older than an invalidation lost with the counter it replaces.
    fn raise_each(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>>;

    /// Removes `key`. Returns whether it had a value.
    fn delete(&self, key: &str) -> Result<bool>;

    /// Like [`get_each`](Self::get_each), and on a miss also takes a lease for `lease` (at
    /// least a second), so that of many callers missing the same key at once (in any process)
    /// one renders it and the others wait for it. A backend without leases answers every miss
    /// with [`Leased::Won`] (the default). Storing the value, or
    /// [`release_leases`](Self::release_leases), ends the lease.
    fn get_leased(&self, keys: &[&str], lease: Duration) -> Vec<Result<Leased>> {
        let _ = lease;
        self.get_each(keys)
            .into_iter()
            .map(|r| r.map(|value| value.map_or(Leased::Won, Leased::Hit)))
            .collect()
    }

    /// Gives up the leases this caller took on `keys` with [`get_leased`](Self::get_leased)
    /// and will not store, so that others stop waiting for them; in one round trip. By
    /// default, deletes each key (what a lease is on memcached); a backend without leases does
    /// nothing.
    fn release_leases(&self, keys: &[&str]) -> Result<()> {
        if self.is_local() {
            return Ok(());
        }
        keys.iter().try_for_each(|key| self.delete(key).map(drop))
    }

    /// The value a version read ([`incr_each`](Self::incr_each) with `delta` 0) creates a
    /// missing counter at, given the current time `now` (nanoseconds since the epoch).
    ///
    /// A counter can go missing after an invalidation raised it (an eviction, a restarted
    /// server), and the read that recreates it may have left before that invalidation and
    /// arrived after the loss: no value it chose can be trusted to be newer than what was
    /// lost. So by default it is odd, `now | 1`: *not confirmed*. Nothing is stored under an
    /// odd version; the render that reads one raises it (to an even value, newer than the
    /// creation it saw), and later renders store under that. A store that never loses a counter
    /// while it holds fragments may answer an older, even value, so that the first render of a
    /// record already stores it.
    fn fresh_counter(&self, now: u64) -> u64 {
        now | 1
    }

    /// The largest value the store accepts, in bytes.
    fn max_value_len(&self) -> usize {
        DEFAULT_MAX_VALUE_LEN
    }

    /// Whether the store lives in this process, so that a process-local L1 in front of it
    /// would only hold a second copy.
    fn is_local(&self) -> bool {
        false
    }

    /// The embedded backend behind this one, if it is one: the sweeper then keeps its
    /// fragments there as objects, not bytes. Not for other backends to implement.
    #[doc(hidden)]
    fn as_embedded(&self) -> Option<&Embedded> {
        None
    }

    // The async forms, used by `Scope::render_async` and `Sweeper::invalidate_async`. Each
    // defaults to its blocking form, which is right for a store in this process and wrong for
    // one across a network: such a backend overrides all six, so that no async caller's thread
    // ever waits on a socket.

    /// [`get_each`](Self::get_each), without blocking the caller's thread.
    fn get_each_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Vec<Result<Option<Vec<u8>>>>> {
        Box::pin(async move { self.get_each(keys) })
    }

    /// [`get_leased`](Self::get_leased), without blocking the caller's thread.
    fn get_leased_async<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        Box::pin(async move { self.get_leased(keys, lease) })
    }

    /// [`set_many`](Self::set_many), without blocking the caller's thread.
    fn set_many_async<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.set_many(items) })
    }

    /// [`incr_each`](Self::incr_each), without blocking the caller's thread.
    fn incr_each_async<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(async move { self.incr_each(keys, delta, initial) })
    }

    /// [`raise_each`](Self::raise_each), without blocking the caller's thread.
    fn raise_each_async<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(async move { self.raise_each(keys, floor) })
    }

    /// [`release_leases`](Self::release_leases), without blocking the caller's thread.
    fn release_leases_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.release_leases(keys) })
    }
}

/// Conveniences over [`Backend`], for every backend.
pub trait BackendExt: Backend {
    /// The values under `keys`, in the same order; `None` for a key with no value. Fails if any
    /// key's lookup failed.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.get_each(keys).into_iter().collect()
    }

    /// [`incr_each`](Backend::incr_each), failing if any key failed.
    fn incr_many(&self, keys: &[&str], delta: u64, initial: u64) -> Result<Vec<u64>> {
        self.incr_each(keys, delta, initial).into_iter().collect()
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}

macro_rules! forward_backend {
    ($($ptr:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ptr {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn get_each(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>>> {
                (**self).get_each(keys)
            }
            fn set_many(&self, items: &[SetItem<'_>]) -> Result<()> {
                (**self).set_many(items)
            }
            fn incr_each(&self, keys: &[&str], delta: u64, initial: u64) -> Vec<Result<u64>> {
                (**self).incr_each(keys, delta, initial)
            }
            fn raise_each(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>> {
                (**self).raise_each(keys, floor)
            }
            fn delete(&self, key: &str) -> Result<bool> {
                (**self).delete(key)
            }
            fn get_leased(&self, keys: &[&str], lease: Duration) -> Vec<Result<Leased>> {
                (**self).get_leased(keys, lease)
            }
            fn release_leases(&self, keys: &[&str]) -> Result<()> {
                (**self).release_leases(keys)
            }
            fn fresh_counter(&self, now: u64) -> u64 {
                (**self).fresh_counter(now)
            }
            fn max_value_len(&self) -> usize {
                (**self).max_value_len()
            }
            fn is_local(&self) -> bool {
                (**self).is_local()
            }
            fn as_embedded(&self) -> Option<&Embedded> {
                (**self).as_embedded()
            }
            fn get_each_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Vec<Result<Option<Vec<u8>>>>> {
                (**self).get_each_async(keys)
            }
            fn get_leased_async<'a>(&'a self, keys: &'a [&'a str], lease: Duration) -> BoxFuture<'a, Vec<Result<Leased>>> {
                (**self).get_leased_async(keys, lease)
            }
            fn set_many_async<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
                (**self).set_many_async(items)
            }
            fn incr_each_async<'a>(&'a self, keys: &'a [&'a str], delta: u64, initial: u64) -> BoxFuture<'a, Vec<Result<u64>>> {
                (**self).incr_each_async(keys, delta, initial)
            }
            fn raise_each_async<'a>(&'a self, keys: &'a [&'a str], floor: u64) -> BoxFuture<'a, Vec<Result<u64>>> {
                (**self).raise_each_async(keys, floor)
            }
            fn release_leases_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
                (**self).release_leases_async(keys)
            }
        }
    )*};
}

forward_backend!(Box<B>, Arc<B>, &B);
