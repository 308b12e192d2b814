//! The clock that versions are read against.
//!
//! A counter's value is the time of the last invalidation that raised it, in nanoseconds since
//! the Unix epoch (see [`Sweeper::invalidate`](crate::Sweeper::invalidate)), and a render notes
//! the time its data was read (see [`Sweeper::scope`](crate::Sweeper::scope)). Comparing the two
//! tells whether the data could predate the invalidation. This clock never goes backwards within
//! a process, even when the system clock is stepped back.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since the Unix epoch, strictly increasing within this process.
pub(crate) fn now() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let next = |last: u64| system.max(last + 1);
    // The closure always gives a value, so this is the `Ok` of the value it replaced.
    let (Ok(last) | Err(last)) = LAST.fetch_update(Relaxed, Relaxed, |last| Some(next(last)));
    next(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn strictly_increasing() {
        let mut last = super::now();
        for _ in 0..10_000 {
            let next = super::now();
            assert!(next > last);
            last = next;
        }
    }
}
