//! A circuit breaker per cache server, so that a dead server costs one timeout per retry
//! window instead of one per fragment.
//!
//! After `threshold` transport failures in a row the breaker opens and calls to that server are
//! skipped (answered at once as errors, which the sweeper renders as misses). When the retry
//! window has passed, one call is let through as a probe: success closes the breaker, failure
//! opens it for another window. Dalli does the same with `down_retry_delay` (30 s there); a LAN
//! cache that restarts should be used again within seconds, hence a shorter default.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result, lock};

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

    /// Makes `call` to the server `server` through the breaker: while the breaker is open it
    /// is not made, and the answer is [`Error::CircuitOpen`] naming the server. Otherwise its
    /// output settles the attempt: `failed` says whether the server failed to answer (a
    /// transport failure: a refused connection, a timeout; not a protocol answer). A call
    /// dropped before it finishes gives back the probe it may hold.
    ///
    /// Every backend's calls go through here: the allow, skip, fail and succeed sequence is
    /// written once.
    pub(crate) async fn call<T>(
        &self,
        server: &str,
        call: impl Future<Output = T>,
        failed: impl FnOnce(&T) -> bool,
    ) -> Result<T> {
        let attempt = self.allow().map_err(|wait| Error::CircuitOpen {
            backend: server.to_owned(),
            retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        })?;
        let output = call.await;
        attempt.settle(failed(&output));
        Ok(output)
    }

    /// An [`Attempt`] if a call may go to the server now, else how long until it may.
    fn allow(&self) -> Result<Attempt<'_>, Duration> {
        let mut state = lock(&self.state);
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::Probing;
                true
            }
            State::Probing => return Err(self.retry_after),
        };
        Ok(Attempt {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// After an answer (`failed` false, whatever the server said) or a transport failure.
    fn settle(&self, failed: bool) {
        let mut state = lock(&self.state);
        let failures = match *state {
            _ if !failed => 0,
            State::Closed { failures } => failures + 1,
            State::Probing => self.threshold,
            // A call let through before the breaker opened, failing late (a timeout): it
            // says nothing new, and pushing the window on would keep a restarted server
            // skipped for longer than the window the breaker promised.
            State::Open { .. } => return,
        };
        *state = if failures >= self.threshold {
            State::Open {
                until: Instant::now() + self.retry_after,
            }
        } else {
            State::Closed { failures }
        };
    }

    /// A probe that ended without an answer (its caller was cancelled: an async render
    /// dropped by a timeout) says nothing about the server; left in `Probing`, the breaker
    /// would skip the server for good, so the next call probes instead.
    fn abandon(&self) {
        let mut state = lock(&self.state);
        if matches!(*state, State::Probing) {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    /// Whether calls are being skipped.
    #[cfg_attr(not(feature = "memcache"), allow(dead_code))] // memcached drops its clients then
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*lock(&self.state), State::Closed { .. })
    }
}

/// A call let through by [`Breaker::allow`]: settle it with its outcome. Dropped unsettled
/// (the call was cancelled), it gives up the probe it may hold.
#[must_use]
pub(crate) struct Attempt<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Attempt<'_> {
    /// `failed`: a transport failure (a refused connection, a timeout), not a protocol answer.
    pub(crate) fn settle(mut self, failed: bool) {
        self.settled = true;
        self.breaker.settle(failed);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: bool = true;
    const ANSWERED: bool = false;

    #[test]
    fn opens_after_the_threshold_probes_after_the_window_and_closes_on_success() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        breaker.allow().unwrap().settle(FAILED);
        assert!(breaker.allow().is_ok(), "one failure is not enough");
        breaker.allow().unwrap().settle(FAILED);
        assert!(breaker.allow().is_err(), "open");
        std::thread::sleep(Duration::from_millis(40));
        let probe = breaker.allow().expect("the probe");
        assert!(breaker.allow().is_err(), "only one probe at a time");
        probe.settle(FAILED);
        assert!(breaker.allow().is_err(), "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        breaker.allow().unwrap().settle(ANSWERED);
        assert!(breaker.allow().is_ok() && !breaker.is_open());
    }

    #[test]
    fn a_late_failure_of_a_call_from_before_the_opening_keeps_the_window() {
        let breaker = Breaker::new(2, Duration::from_millis(40));
        let (first, second, late) = (
            breaker.allow().unwrap(),
            breaker.allow().unwrap(),
            breaker.allow().unwrap(),
        );
        first.settle(FAILED);
        second.settle(FAILED);
        std::thread::sleep(Duration::from_millis(25));
        late.settle(FAILED);
        std::thread::sleep(Duration::from_millis(25));
        assert!(
            breaker.allow().is_ok(),
            "probed when the first window ends, not one window after the late failure"
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.allow().unwrap().settle(FAILED);
        breaker.allow().unwrap().settle(ANSWERED);
        breaker.allow().unwrap().settle(FAILED);
        assert!(breaker.allow().is_ok());
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_call_probe() {
        let breaker = Breaker::new(1, Duration::from_millis(10));
        breaker.allow().unwrap().settle(FAILED);
        std::thread::sleep(Duration::from_millis(20));
        drop(breaker.allow().expect("the probe"));
        assert!(breaker.is_open(), "nothing was learnt");
        breaker.allow().expect("another probe").settle(ANSWERED);
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_cancelled_call_that_was_no_probe_changes_nothing() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.allow().unwrap().settle(FAILED);
        drop(breaker.allow().unwrap());
        breaker.allow().unwrap().settle(FAILED);
        assert!(breaker.is_open(), "the count survived");
    }
}
