//! Where fragments and version counters live: a [`Backend`].
//!
//! [`Embedded`] (on moka) is always compiled; [`Memcached`] sits behind the `memcache` feature,
//! `Redis` (standalone or Redis Cluster) behind the `redis` feature.

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
/// 30 days. Expiry costs a render that does not store ([`Backend::fresh_counter`]).
pub(crate) const COUNTER_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The largest fragment every backend stores by default, so that a page caches the same
/// fragments on any: memcached's default item size (`-I 1m`), less room for key and header.
pub const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 - 512;

/// The future an async [`Backend`] operation returns: boxed, so that the trait stays usable
/// as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One value to store, with its time to live (`None`: until evicted).
#[derive(Debug, Clone, Copy)]
pub struct SetItem<'a> {
    /// The key (a valid memcached key, see [`Backend`]).
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
/// Exactly the operations the core uses, all required, all async, each one round trip in
/// batch form. A blocking render awaits them with [`block_on`], on the caller's thread, so a
/// backend across a network drives its sockets from a thread of its own, never from the
/// caller's runtime. Run the `backend::conformance` suite (feature `conformance`) on a new one.
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
    /// with it, the counter ends at least at `floor`, and never decreases. An even value was
    /// set by a raise that found the counter, so it is at least that raise's `floor`; for odd
    /// ones see [`fresh_counter`](Self::fresh_counter).
    fn raise_each<'a>(&'a self, keys: &'a [&'a str], floor: u64)
    -> BoxFuture<'a, Vec<Result<u64>>>;

    /// Gives up the leases this caller took on `keys` with [`get_leased`](Self::get_leased)
    /// and will not store, so that others stop waiting for them; in one round trip. A backend
    /// without leases does nothing.
    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>>;

    /// The value a version read ([`incr_each`](Self::incr_each) with `delta` 0) creates a
    /// missing counter at, given the current time `now` (nanoseconds since the epoch).
    ///
    /// A remote store answers an odd value, `now | 1`: *not confirmed*, since the read that
    /// recreates a lost counter may have left before the invalidation lost with it ([Never
    /// stale](crate#never-stale)); nothing is stored under it until a raise makes it even. A
    /// store that never loses a counter while it holds fragments may answer an older, even
    /// value, so that the first render of a record already stores it.
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
