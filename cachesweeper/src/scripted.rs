//! A scripted backend for the core's unit tests: an embedded cache behind a front that records
//! every call and fails the methods it is told to, seen by the sweeper as a remote store; and a
//! model to cache.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, BoxFuture, Embedded, Leased, SetItem};
use crate::{Error, ModelRef, Result, Sweepable, Sweeper};

/// An embedded cache behind a scripted front, seen by the sweeper as a remote store: it records
/// every call by method, and answers the methods it is told to fail as a store that cannot be
/// reached would.
#[derive(Debug)]
pub(crate) struct Scripted {
    inner: Embedded,
    calls: Mutex<Vec<&'static str>>,
    failing: Mutex<Vec<&'static str>>,
    /// The largest value it takes (the embedded store's by default).
    max_value_len: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new() -> Scripted {
        Scripted {
            inner: Embedded::new(1 << 20),
            calls: Mutex::default(),
            failing: Mutex::default(),
            max_value_len: AtomicUsize::new(crate::backend::DEFAULT_MAX_VALUE_LEN),
        }
    }

    /// A sweeper on a new scripted store, without an L1 (so that every fragment read reaches
    /// the store), and the store.
    pub(crate) fn sweeper() -> (Sweeper, Arc<Scripted>) {
        let script = Arc::new(Scripted::new());
        let sweeper = Sweeper::builder()
            .backend(Arc::clone(&script))
            .l1(0)
            .build()
            .unwrap();
        (sweeper, script)
    }

    /// Takes values of at most `len` bytes from now on.
    pub(crate) fn take_at_most(&self, len: usize) {
        self.max_value_len.store(len, Ordering::Relaxed);
    }

    /// The calls made since the last time, in order.
    pub(crate) fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub(crate) fn fail(&self, methods: &[&'static str]) {
        *self.failing.lock().unwrap() = methods.to_vec();
    }

    /// Records a call of `method`; its error if it is scripted to fail.
    fn call(&self, method: &'static str) -> Result<()> {
        self.calls.lock().unwrap().push(method);
        if self.failing.lock().unwrap().contains(&method) {
            return Err(Error::backend_message("scripted", "scripted to fail"));
        }
        Ok(())
    }
}

// The embedded store answers at once, so each operation awaits it and answers as ready.
impl Backend for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        Box::pin(async move {
            match self.call("get_leased") {
                Ok(()) => self.inner.get_leased(keys, lease).await,
                Err(error) => keys.iter().map(|_| Err(error.clone())).collect(),
            }
        })
    }
    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.call("set_many")?;
            self.inner.set_many(items).await
        })
    }
    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(async move {
            match self.call("incr_each") {
                Ok(()) => self.inner.incr_each(keys, delta, initial).await,
                Err(error) => keys.iter().map(|_| Err(error.clone())).collect(),
            }
        })
    }
    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(async move {
            match self.call("raise_each") {
                Ok(()) => self.inner.raise_each(keys, floor).await,
                Err(error) => keys.iter().map(|_| Err(error.clone())).collect(),
            }
        })
    }
    fn release_leases<'a>(&'a self, _keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.call("release_leases") })
    }
    fn fresh_counter(&self, now: u64) -> u64 {
        // The embedded store's: it never loses a counter, so a first render stores.
        self.inner.fresh_counter(now)
    }
    fn max_value_len(&self) -> usize {
        self.max_value_len.load(Ordering::Relaxed)
    }
    fn is_local(&self) -> bool {
        // Seen as remote, so that leases are taken and released as on memcached.
        false
    }
}

pub(crate) struct Note {
    pub(crate) id: u32,
    pub(crate) text: &'static str,
}

impl Sweepable for Note {
    const MODEL: &'static str = "note";
    const COUNTER: bool = true;
    fn sweeper_key(&self) -> Cow<'_, str> {
        Cow::Owned(self.id.to_string())
    }
    fn sweeper_version_field(&self) -> Option<String> {
        None
    }
    fn sweeper_parents(&self, _: &mut Vec<ModelRef>) {}
}
