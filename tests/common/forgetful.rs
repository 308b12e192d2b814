//! A forwarding backend that can lose a key, as an eviction or a restarted server does, or be
//! unreachable, as a server that is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachesweeper::backend::{Backend, BoxFuture, Leased, SetItem};
use cachesweeper::{Error, Result};

/// Forwards every operation to `inner`, under the same keys until one is forgotten: from then
/// on that key is sent renamed (`key~1`, `key~2`, …), so that the store behind no longer finds
/// what it held. Works on any backend, which has no delete of its own.
#[derive(Debug)]
pub struct Forgetful {
    inner: Arc<dyn Backend>,
    generations: Mutex<HashMap<String, u32>>,
    /// While set, every operation fails as an unreachable server's would.
    down: AtomicBool,
}

impl Forgetful {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Forgetful> {
        Arc::new(Forgetful {
            inner,
            generations: Mutex::default(),
            down: AtomicBool::new(false),
        })
    }

    /// Makes every operation fail (`true`) or forward again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The error of an unreachable server, if this one is down.
    fn unreachable(&self) -> Option<Error> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| Error::Unavailable {
                backend: self.inner.name().to_owned(),
                message: "down (Forgetful::set_down)".to_owned(),
                source: None,
            })
    }

    /// `n` answers of an unreachable server, if this one is down.
    fn failed<T: Send + 'static>(&self, n: usize) -> Option<BoxFuture<'static, Vec<Result<T>>>> {
        let error = self.unreachable()?;
        Some(Box::pin(async move {
            (0..n).map(|_| Err(error.clone())).collect()
        }))
    }

    /// Loses whatever is under `key`.
    pub fn forget(&self, key: &str) {
        *self
            .generations
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
    }

    fn renamed(&self, keys: &[&str]) -> Vec<String> {
        let generations = self.generations.lock().unwrap();
        keys.iter()
            .map(|key| match generations.get(*key) {
                Some(n) => format!("{key}~{n}"),
                None => (*key).to_owned(),
            })
            .collect()
    }
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

impl Backend for Forgetful {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        if let Some(failed) = self.failed(keys.len()) {
            return failed;
        }
        let keys = self.renamed(keys);
        Box::pin(async move { self.inner.get_leased(&refs(&keys), lease).await })
    }
    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        if let Some(error) = self.unreachable() {
            return Box::pin(async move { Err(error) });
        }
        let keys = self.renamed(&items.iter().map(|item| item.key).collect::<Vec<_>>());
        Box::pin(async move {
            let items: Vec<SetItem<'_>> = items
                .iter()
                .zip(&keys)
                .map(|(item, key)| SetItem { key, ..*item })
                .collect();
            self.inner.set_many(&items).await
        })
    }
    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        if let Some(failed) = self.failed(keys.len()) {
            return failed;
        }
        let keys = self.renamed(keys);
        Box::pin(async move { self.inner.incr_each(&refs(&keys), delta, initial).await })
    }
    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        if let Some(failed) = self.failed(keys.len()) {
            return failed;
        }
        let keys = self.renamed(keys);
        Box::pin(async move { self.inner.raise_each(&refs(&keys), floor).await })
    }
    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        let keys = self.renamed(keys);
        Box::pin(async move { self.inner.release_leases(&refs(&keys)).await })
    }
    fn fresh_counter(&self, now: u64) -> u64 {
        self.inner.fresh_counter(now)
    }
    fn max_value_len(&self) -> usize {
        self.inner.max_value_len()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
}
