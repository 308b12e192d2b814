//! A backend that stores nothing: every fragment is rendered. Django's `DummyCache`.

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

    fn get_each(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>>> {
        keys.iter().map(|_| Ok(None)).collect()
    }

    fn set_many(&self, _: &[SetItem<'_>]) -> Result<()> {
        Ok(())
    }

    fn incr_each(&self, keys: &[&str], _: u64, initial: u64) -> Vec<Result<u64>> {
        keys.iter().map(|_| Ok(initial)).collect()
    }

    fn raise_each(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>> {
        keys.iter().map(|_| Ok(floor)).collect()
    }

    fn is_local(&self) -> bool {
        true
    }

    fn delete(&self, _: &str) -> Result<bool> {
        Ok(false)
    }
}
