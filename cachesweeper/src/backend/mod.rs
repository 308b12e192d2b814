//! Where fragments and version counters live.
//!
//! A backend implements [`Backend`]: the few operations the core uses, async and in batch form
//! so that a page can be served in a constant number of round trips. [`Embedded`] (on moka) is always compiled; [`Memcached`] sits behind the
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
#[cfg(any(feature = "memcache", feature = "redis"))]
mod io_thread;
#[cfg(feature = "memcache")]
mod memcached;
mod null;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "memcache", feature = "redis"))]
mod remote;
#[cfg(feature = "memcache")]
mod rendezvous;

pub use crate::io::block_on;
pub use embedded::Embedded;
#[cfg(feature = "memcache")]
pub use memcached::{Memcached, MemcachedBuilder};
pub use null::Null;
#[cfg(feature = "redis")]
pub use redis::{Redis, RedisBuilder};

/// How long a version counter nobody raises lives, on every backend, so that all age alike:
/// 30 days. A counter recreated after expiry is odd (not confirmed), so expiry costs a render
/// that does not store, never stale content.
pub(crate) const COUNTER_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The largest fragment a remote backend stores by default, on every backend, so that a page caches
/// the same fragments whichever it is on: memcached's default item size (`-I 1m`), less room
/// for the key and the item header.
pub const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 - 512;

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
/// Exactly the operations the core uses, all of them required and all of them async, each
/// one round trip in batch form (so that a page is served in a constant number of round
/// trips). A blocking render awaits them too: the core polls the future on the caller's
/// thread and parks it between polls, so a backend across a network drives its sockets from a
/// thread of its own (see the memcached and Redis backends), never from the caller's runtime.
/// Run the `backend::conformance` suite (feature `conformance`) on a new backend.
///
/// Every key the core passes is a valid memcached key: at most 250 bytes of printable ASCII,
/// no spaces. Correctness of invalidation rests on [`raise_each`](Self::raise_each) being
/// atomic per key and never lowering a counter.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short name for logs and errors (for memcached, the server URLs).
    fn name(&self) -> &str;

    /// The value under each key, in the same order, or the error of the server that holds the
    /// key (with several servers, one that is down fails only its own keys). On a miss it also
    /// takes a lease for `lease` (at least a second), so that of many callers missing the same
    /// key at once (in any process) one renders it ([`Leased::Won`]) and the others wait for it
    /// ([`Leased::Busy`]). A backend without leases answers every miss with [`Leased::Won`].
    /// Storing the value, or [`release_leases`](Self::release_leases), ends the lease.
    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>>;

    /// Stores every item, replacing existing values (and ending their leases).
    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>>;

    /// Adds `delta` to each counter in `keys` and returns each value after the operation, in
    /// order, or the error of the server that holds it. A missing counter is created at
    /// `initial` instead (and `delta` is not applied), atomically per key: memcached's `ma` with
    /// `N` and `J`. With `delta` 0 this reads the counters, creating the missing ones.
    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>>;

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
    fn raise_each<'a>(&'a self, keys: &'a [&'a str], floor: u64)
    -> BoxFuture<'a, Vec<Result<u64>>>;

    /// Gives up the leases this caller took on `keys` with [`get_leased`](Self::get_leased)
    /// and will not store, so that others stop waiting for them; in one round trip. A backend
    /// without leases does nothing.
    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>>;

    /// The value a version read ([`incr_each`](Self::incr_each) with `delta` 0) creates a
    /// missing counter at, given the current time `now` (nanoseconds since the epoch).
    ///
    /// A counter can go missing after an invalidation raised it (an eviction, a restarted
    /// server), and the read that recreates it may have left before that invalidation and
    /// arrived after the loss: no value it chose can be trusted to be newer than what was
    /// lost. So a remote store answers an odd one, `now | 1`: *not confirmed*. Nothing is
    /// stored under an odd version; the render that reads one raises it (to an even value,
    /// newer than the creation it saw), and later renders store under that. A store that never
    /// loses a counter while it holds fragments may answer an older, even value, so that the
    /// first render of a record already stores it.
    fn fresh_counter(&self, now: u64) -> u64;

    /// The largest value the store accepts, in bytes ([`DEFAULT_MAX_VALUE_LEN`] unless
    /// configured).
    fn max_value_len(&self) -> usize;

    /// Whether the store lives in this process: then it takes no leases (single flight covers
    /// one process), and a process-local L1 in front of it would only hold a second copy.
    fn is_local(&self) -> bool;
}

/// A future that is ready at once, boxed as [`Backend`]'s operations return it: what a store
/// in this process answers.
pub(crate) fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

macro_rules! forward_backend {
    ($($ptr:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ptr {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn get_leased<'a>(&'a self, keys: &'a [&'a str], lease: Duration) -> BoxFuture<'a, Vec<Result<Leased>>> {
                (**self).get_leased(keys, lease)
            }
            fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
                (**self).set_many(items)
            }
            fn incr_each<'a>(&'a self, keys: &'a [&'a str], delta: u64, initial: u64) -> BoxFuture<'a, Vec<Result<u64>>> {
                (**self).incr_each(keys, delta, initial)
            }
            fn raise_each<'a>(&'a self, keys: &'a [&'a str], floor: u64) -> BoxFuture<'a, Vec<Result<u64>>> {
                (**self).raise_each(keys, floor)
            }
            fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
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
        }
    )*};
}

forward_backend!(Box<B>, Arc<B>, &B);
