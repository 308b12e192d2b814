//! A circuit breaker per cache server, so that a dead server costs one timeout per retry
//! window instead of one per fragment.
//!
//! After `threshold` transport failures in a row the breaker opens and calls to that server are
//! skipped (answered at once as errors, which the sweeper renders as misses). When the retry
//! window has passed, one call is let through as a probe: success closes the breaker, failure
//! opens it for another window. Dalli does the same with `down_retry_delay` (30 s there); a LAN
//! cache that restarts should be used again within seconds, hence a shorter default.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Consecutive failures before a server is skipped.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 2;

/// How long a failed server is skipped before it is probed again.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else keeps skipping the server.
    Probing,
}

/// The breaker of one server.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    retry_after: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, retry_after: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            retry_after,
        }
    }

    /// `Ok` if a call may go to the server now, else how long until it may.
    pub(crate) fn allow(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::Probing;
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
            State::Probing => Err(self.retry_after),
        }
    }

    pub(crate) fn success(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::Closed { failures: 0 };
    }

    /// Records a transport failure (a refused connection, a timeout), not a protocol answer.
    pub(crate) fn failure(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::Probing | State::Open { .. } => self.threshold,
        };
        *state = if failures >= self.threshold {
            State::Open {
                until: Instant::now() + self.retry_after,
            }
        } else {
            State::Closed { failures }
        };
    }

    /// Whether calls are being skipped.
    #[cfg_attr(not(feature = "memcache"), allow(dead_code))] // memcached's failover asks
    pub(crate) fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_after_the_window_and_closes_on_success() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        assert!(breaker.allow().is_ok());
        breaker.failure();
        assert!(breaker.allow().is_ok(), "one failure is not enough");
        breaker.failure();
        assert!(breaker.allow().is_err(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow().is_ok(), "the probe");
        assert!(breaker.allow().is_err(), "only one probe at a time");
        breaker.failure();
        assert!(breaker.allow().is_err(), "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow().is_ok());
        breaker.success();
        assert!(breaker.allow().is_ok() && !breaker.is_open());
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.failure();
        breaker.success();
        breaker.failure();
        assert!(breaker.allow().is_ok());
    }
}
