//! A backend that stores nothing: every fragment is rendered. Django's `DummyCache`.

use std::time::Duration;

use super::{Backend, BoxFuture, DEFAULT_MAX_VALUE_LEN, Leased, SetItem, ready};
use crate::Result;

/// Stores nothing and finds nothing: turns caching off without touching templates, e.g. to
/// compare a page with its uncached render, or in development.
///
/// ```
/// use cachesweeper::{Sweeper, backend::Null};
///
/// let uncached = Sweeper::builder().backend(Null).build()?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Null;

impl Backend for Null {
    fn name(&self) -> &str {
        "null"
    }

    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        _: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        ready(keys.iter().map(|_| Ok(Leased::Won)).collect())
    }

    fn set_many<'a>(&'a self, _: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        ready(Ok(()))
    }

    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        _: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        ready(keys.iter().map(|_| Ok(initial)).collect())
    }

    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        ready(keys.iter().map(|_| Ok(floor)).collect())
    }

    fn release_leases<'a>(&'a self, _: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        ready(Ok(()))
    }

    fn fresh_counter(&self, now: u64) -> u64 {
        now | 1
    }

    fn max_value_len(&self) -> usize {
        DEFAULT_MAX_VALUE_LEN
    }

    fn is_local(&self) -> bool {
        true
    }
}
