//! The process-wide sweeper that templates use unless a render names another.

use std::sync::{PoisonError, RwLock};

use crate::{Result, Sweepable, Sweeper};

static DEFAULT: RwLock<Option<Sweeper>> = RwLock::new(None);

/// The key under which a render's Askama runtime values may carry a [`Sweeper`]:
/// `template.render_with_values(&(VALUES_KEY, sweeper.clone()))`, or simply
/// `template.render_with_values(&sweeper)`.
pub const VALUES_KEY: &str = "cachesweeper";

/// Makes `sweeper` the one templates use by default; call it once at start-up.
///
/// Until it is called, templates use an embedded cache of 64 MiB created on first use.
pub fn install_default(sweeper: Sweeper) {
    *DEFAULT.write().unwrap_or_else(PoisonError::into_inner) = Some(sweeper);
}

/// The process-wide sweeper (see [`install_default`]).
pub fn default_sweeper() -> Sweeper {
    if let Some(sweeper) = &*DEFAULT.read().unwrap_or_else(PoisonError::into_inner) {
        return sweeper.clone();
    }
    DEFAULT
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(Sweeper::embedded)
        .clone()
}

/// Runs `f` with the sweeper a render should use: the one in its runtime values (borrowed, not
/// cloned: this runs for every fragment), else the default.
pub(crate) fn with_sweeper<T>(values: &dyn askama::Values, f: impl FnOnce(&Sweeper) -> T) -> T {
    match askama::get_value::<Sweeper>(values, VALUES_KEY) {
        Ok(sweeper) => f(sweeper),
        Err(_) => f(&default_sweeper()),
    }
}

/// Invalidates `record` (and the parents it touches) in the process-wide sweeper: the
/// original's `invalidate_cache_for`. See [`Sweeper::invalidate`].
pub fn invalidate<R: Sweepable + ?Sized>(record: &R) -> Result<()> {
    default_sweeper().invalidate(record)
}

/// [`invalidate`] for async callers: see [`Sweeper::invalidate_async`] (feature `tokio`).
#[cfg(feature = "tokio")]
pub async fn invalidate_async<R: Sweepable + ?Sized>(record: &R) -> Result<()> {
    default_sweeper().invalidate_async(record).await
}
