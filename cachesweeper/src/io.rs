//! One code path for blocking and async callers.
//!
//! The parts of a render that talk to the backend (version reads, fragment lookups, stores,
//! lease releases, raises) are written once, as `async fn`s generic over [`Io`]. An async
//! caller awaits them with [`Async`], whose operations are the backend's async forms. A blocking
//! caller runs them with [`Blocking`], whose operations are the backend's blocking calls made
//! inside the future; such a future never suspends, so [`finish`] polls it once, on the
//! caller's thread, with no executor.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::Result;
use crate::backend::{Backend, Leased, SetItem};

/// How the backend is called: blocking ([`Blocking`]) or awaited ([`Async`]).
pub(crate) trait Io: Sync {
    /// Whether waiting blocks the thread: a blocking render may wait for another render's
    /// single flight in place, an async one must not.
    const BLOCKS: bool;

    fn get_leased<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> impl Future<Output = Vec<Result<Leased>>> + Send + 'a;

    fn set_many<'a>(
        &self,
        backend: &'a dyn Backend,
        items: &'a [SetItem<'a>],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    fn incr_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a;

    fn raise_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        floor: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a;

    fn release_leases<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Waits `duration` (the thread sleeps, or the task yields to its runtime's timer).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The backend's blocking calls, on the caller's thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking;

// Not `async fn`: the futures must not borrow `self`, only what they are given.
#[allow(clippy::manual_async_fn)]
impl Io for Blocking {
    const BLOCKS: bool = true;

    fn get_leased<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> impl Future<Output = Vec<Result<Leased>>> + Send + 'a {
        async move { backend.get_leased(keys, lease) }
    }

    fn set_many<'a>(
        &self,
        backend: &'a dyn Backend,
        items: &'a [SetItem<'a>],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async move { backend.set_many(items) }
    }

    fn incr_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a {
        async move { backend.incr_each(keys, delta, initial) }
    }

    fn raise_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        floor: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a {
        async move { backend.raise_each(keys, floor) }
    }

    fn release_leases<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async move { backend.release_leases(keys) }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        async move { std::thread::sleep(duration) }
    }
}

/// The backend's async forms, awaited on the caller's runtime (tokio's, for its timer).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Async;

#[cfg(feature = "tokio")]
impl Io for Async {
    const BLOCKS: bool = false;

    fn get_leased<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> impl Future<Output = Vec<Result<Leased>>> + Send + 'a {
        backend.get_leased_async(keys, lease)
    }

    fn set_many<'a>(
        &self,
        backend: &'a dyn Backend,
        items: &'a [SetItem<'a>],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        backend.set_many_async(items)
    }

    fn incr_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a {
        backend.incr_each_async(keys, delta, initial)
    }

    fn raise_each<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
        floor: u64,
    ) -> impl Future<Output = Vec<Result<u64>>> + Send + 'a {
        backend.raise_each_async(keys, floor)
    }

    fn release_leases<'a>(
        &self,
        backend: &'a dyn Backend,
        keys: &'a [&'a str],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        backend.release_leases_async(keys)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The output of a future that never suspends (one built on [`Blocking`]): polled once, here.
///
/// # Panics
///
/// If the future suspends, which would mean it awaited something other than [`Blocking`]'s
/// operations: a bug in this crate.
pub(crate) fn finish<F: Future>(future: F) -> F::Output {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("a blocking cache operation suspended"),
    }
}
