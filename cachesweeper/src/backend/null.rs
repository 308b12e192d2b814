//! A backend that stores nothing: every fragment is rendered. Django's `DummyCache`.

use std::time::Duration;

use super::{Backend, SetItem};
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

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(vec![None; keys.len()])
    }

    fn set_many(&self, _: &[SetItem<'_>]) -> Result<()> {
        Ok(())
    }

    fn add(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<bool> {
        Ok(true)
    }

    fn incr_many(&self, keys: &[&str], _: u64, initial: u64) -> Result<Vec<u64>> {
        Ok(vec![initial; keys.len()])
    }

    fn is_local(&self) -> bool {
        true
    }

    fn delete(&self, _: &str) -> Result<bool> {
        Ok(false)
    }
}
