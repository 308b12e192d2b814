//! Single-flight: when many renders miss the same fragment at once, one renders it and the
//! others wait for its result instead of rendering it too (a cache stampede).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::lock;
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
    outcome: Mutex<Outcome>,
    done: Condvar,
}

/// Where a flight's leader is.
#[derive(Debug, Default)]
enum Outcome {
    #[default]
    Rendering,
    /// Rendered, and published at that instant.
    Published(Arc<Stored>, Instant),
    GaveUp,
}

impl Flight {
    /// A flight whose result is no longer handed out.
    fn expired(&self, now: Instant) -> bool {
        matches!(&*lock(&self.outcome), Outcome::Published(_, at) if now.duration_since(*at) > GRACE)
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
        let in_flight = lock(&self.in_flight);
        in_flight
            .get(key)
            .is_some_and(|flight| matches!(*lock(&flight.outcome), Outcome::Rendering))
    }

    /// Claims the render of `key`: leads it, or takes the result of the render that leads it,
    /// waiting for it (at most [`FLIGHT_WAIT`]) only if `wait`.
    pub(crate) fn claim(&self, key: &str, wait: bool) -> Claim<'_> {
        let flight = {
            let mut in_flight = lock(&self.in_flight);
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
        let outcome = lock(&flight.outcome);
        let wait = if wait { FLIGHT_WAIT } else { Duration::ZERO };
        let (outcome, _) = flight
            .done
            .wait_timeout_while(outcome, wait, |o| matches!(o, Outcome::Rendering))
            .unwrap_or_else(PoisonError::into_inner);
        match &*outcome {
            Outcome::Published(stored, _) => Claim::Done(Arc::clone(stored)),
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
            let mut in_flight = lock(&self.flights.in_flight);
            if in_flight
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                in_flight.remove(&self.key);
            }
        }
        let mut slot = lock(&self.flight.outcome);
        if let Outcome::Rendering = *slot {
            *slot = match outcome {
                Some(stored) => Outcome::Published(stored, Instant::now()),
                None => Outcome::GaveUp,
            };
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
