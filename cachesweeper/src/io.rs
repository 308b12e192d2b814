//! How a caller waits: blocking its thread ([`block_on`], the one adapter), or awaiting. The
//! code that talks to the backend is written once, as `async fn`s (ARCHITECTURE.md, `io.rs`).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

/// How the caller waits: its thread blocks ([`Blocking`]), or its task yields ([`Async`]).
pub(crate) trait Io: Sync {
    /// Whether waiting blocks the thread: a blocking render may wait for another render's
    /// single flight in place, an async one must not.
    const BLOCKS: bool;

    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// A caller whose thread waits: its futures run under [`block_on`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking;

impl Io for Blocking {
    const BLOCKS: bool = true;

    #[allow(clippy::manual_async_fn)]
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        async move { std::thread::sleep(duration) }
    }
}

/// A caller that awaits, on tokio (for its timer).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Async;

#[cfg(feature = "tokio")]
impl Io for Async {
    const BLOCKS: bool = false;

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// Unparks the thread that waits.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once: a hit on a store in this process is ready at the first
    /// poll, and should cost no allocation for it.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
}

/// The output of `future`, polled on this thread, which parks between polls: how to call a
/// [`Backend`](crate::backend::Backend) operation from code that is not async. It needs no
/// runtime (a remote backend's own I/O thread drives its sockets and wakes this one), and works
/// inside one too (where tokio's `block_on` panics), holding the thread as any blocking call.
///
/// ```
/// use cachesweeper::backend::{Backend, Embedded, block_on};
///
/// let cache = Embedded::new(1 << 20);
/// let counters = block_on(cache.incr_each(&["a", "b"], 0, 10));
/// assert!(counters.iter().all(|counter| matches!(counter, Ok(10))));
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    // Called on a tokio worker, the future would spend that task's budget and then be told to
    // yield on every poll, for ever: a thread parked here never yields to reset it.
    #[cfg(any(feature = "memcache", feature = "redis", feature = "tokio"))]
    let future = tokio::task::unconstrained(future);
    let mut future = pin!(future);
    // A thread whose locals are being destroyed (a value dropped there that invalidates) makes
    // a waker of its own.
    let waker = WAKER
        .try_with(Waker::clone)
        .unwrap_or_else(|_| Waker::from(Arc::new(Unpark(std::thread::current()))));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut context) {
            return out;
        }
        std::thread::park();
    }
}

/// Awaits every future at once and answers in their order: a join for a handful of futures
/// (the per-server batches of one call; each pending one is polled again on every wake), so
/// that no futures crate is needed.
#[cfg(any(feature = "memcache", feature = "redis", feature = "conformance"))]
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}
