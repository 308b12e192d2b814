//! Single-flight: when many renders miss the same fragment at once, one renders it and the
//! others wait for its result instead of rendering it too (a cache stampede).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::value::Stored;

/// How long a render waits for another to finish the same fragment before rendering it
/// itself: a slow or stuck render must not hold up the others for long.
pub(crate) const FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// How long a finished render's result is handed to renders that missed just before it was
/// stored (they would otherwise become leaders and render it again). The key carries the
/// version, and only results fit to store are published, so the result cannot be stale,
/// however late it is handed out.
const GRACE: Duration = Duration::from_secs(1);

/// Finished flights are swept once the map holds this many entries.
const SWEEP_AT: usize = 1024;

#[derive(Debug, Default)]
struct Flight {
    /// `Some(Some(stored))` when the leader rendered, `Some(None)` when it gave up.
    outcome: Mutex<Option<Option<Arc<Stored>>>>,
    done: Condvar,
    /// When the leader published its result.
    finished: Mutex<Option<Instant>>,
}

impl Flight {
    /// A flight whose result is no longer handed out.
    fn expired(&self, now: Instant) -> bool {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| now.duration_since(at) > GRACE)
    }
}

/// The fragments being rendered right now in this process, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
}

/// What a render that missed should do.
pub(crate) enum Claim<'a> {
    /// Render it, then [`Leader::publish`] the result.
    Leader(Leader<'a>),
    /// Another render just rendered it: here is its result.
    Done(Arc<Stored>),
    /// Another render was at it but gave up or took too long (or is still at it, and the
    /// caller may not wait): render it yourself.
    Alone,
}

/// The render in charge of one fragment. Dropped without publishing (an error, a panic, a
/// render that was not final, a result not fit to store), it releases the waiters to render on
/// their own.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    flight: Arc<Flight>,
    published: bool,
}

impl Flights {
    /// Whether another render of this process is rendering `key` right now.
    pub(crate) fn running(&self, key: &str) -> bool {
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight.get(key).is_some_and(|flight| {
            flight
                .outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
        })
    }

    /// Claims the render of `key`: leads it, or takes the result of the render that leads it,
    /// waiting for it (at most [`FLIGHT_WAIT`]) only if `wait`.
    pub(crate) fn claim(&self, key: &str, wait: bool) -> Claim<'_> {
        let flight = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if in_flight.len() >= SWEEP_AT {
                in_flight.retain(|_, flight| !flight.expired(now));
            }
            match in_flight.get(key).filter(|flight| !flight.expired(now)) {
                Some(flight) => Arc::clone(flight),
                None => {
                    let flight = Arc::new(Flight::default());
                    in_flight.insert(key.to_owned(), Arc::clone(&flight));
                    return Claim::Leader(Leader {
                        flights: self,
                        key: key.to_owned(),
                        flight,
                        published: false,
                    });
                }
            }
        };
        let outcome = flight
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let wait = if wait { FLIGHT_WAIT } else { Duration::ZERO };
        let (outcome, _) = flight
            .done
            .wait_timeout_while(outcome, wait, |o| o.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        match &*outcome {
            Some(Some(stored)) => Claim::Done(Arc::clone(stored)),
            _ => Claim::Alone,
        }
    }
}

impl Leader<'_> {
    /// Hands `stored` to the renders waiting for it, and to those that miss it within the
    /// grace period.
    pub(crate) fn publish(mut self, stored: Arc<Stored>) {
        self.published = true;
        self.finish(Some(stored));
    }

    fn finish(&self, outcome: Option<Arc<Stored>>) {
        if outcome.is_none() {
            // Nothing to hand out: the next render to miss leads a new flight.
            let mut in_flight = self
                .flights
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if in_flight
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                in_flight.remove(&self.key);
            }
        } else {
            *self
                .flight
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        let mut slot = self
            .flight
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(outcome);
        }
        self.flight.done.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // A published flight stays in the map for its grace period (swept later).
        if !self.published {
            self.finish(None);
        }
    }
}
