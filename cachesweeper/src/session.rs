//! One page render in a constant number of round trips (see [`Sweeper::render`]).
//!
//! A page is rendered in *record* passes, then once for real. A record pass renders the
//! template but, for each fragment whose version or stored value is not known yet, writes
//! nothing and notes what it needs instead. Between passes the sweeper fetches everything noted,
//! all at once: one batch for the versions, one for the fragments. Fragments nested in a
//! fragment that missed are discovered by the next pass, so each level of nesting costs one
//! more pair of batches, whatever the number of fragments. Bodies that missed and hold no
//! unknown fragment are rendered once and remembered; the final pass writes the page from what
//! is known, and every fragment rendered is stored in one batch at the end.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::KeyParts;

/// What a render knows of one fragment key.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Fetched and found; `counted` once the hit is in the stats.
    Cached { html: String, counted: bool },
    /// Fetched and not found: render the body.
    Missed,
    /// Rendered in this session (its miss is counted); final.
    Rendered(String),
}

/// A fragment a record pass met but could not place yet.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub(crate) model: &'static str,
    pub(crate) record_key: String,
    pub(crate) counter_key: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) parts: KeyParts,
}

/// A fragment to store when the render ends.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) recording: bool,
    /// Counter values by counter key: each version is looked up once per render.
    pub(crate) versions: HashMap<String, u64>,
    /// Counters whose lookup failed: their fragments are rendered and not stored.
    pub(crate) failed_counters: HashSet<String>,
    pub(crate) slots: HashMap<String, Slot>,
    pub(crate) wanted: Vec<Wanted>,
    /// Fragments met in this pass that could not be written out yet.
    pub(crate) unresolved: usize,
    /// How many missed bodies are being rendered right now: outside them, a record pass
    /// discards its output, so known fragments need not be copied into it.
    pub(crate) body_depth: usize,
    pub(crate) writes: Vec<Write>,
}

/// The state of one page render, shared by the clones of its sweeper handle.
#[derive(Debug, Default)]
pub(crate) struct Session {
    state: Mutex<State>,
}

impl Session {
    /// The state. Never held while a template body renders (bodies re-enter the session).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
