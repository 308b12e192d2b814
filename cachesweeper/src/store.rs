//! The one place that fetches stored fragments and stores rendered ones, for every render.
//! It enforces two of the ways the guarantee holds ([Never stale](crate#never-stale)): a
//! fragment is stored only if its data is known to be newer than its version
//! ([`finish`](FragmentStore::finish)), and a hit is served only while the versions of the
//! records rendered inside it are all current ([`verify`](FragmentStore::verify)).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{Leased, SetItem};
use crate::flight::{Claim, Flights, Leader};
use crate::frames;
use crate::holes::Placed;
use crate::io::Io;
use crate::l1::{L1, now_ms};
use crate::meter::Meter;
use crate::value::{self, Dep, Stored};
use crate::versions::Versions;

/// How long another render's lease on a missed fragment lasts if it never stores it (it
/// failed, or died): the longest anyone waits on it.
const LEASE: Duration = Duration::from_secs(2);

/// How long a lookup waits, at most, for another render (of any process) that holds the lease
/// of a fragment; then it renders the fragment itself.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting lookup asks again.
const LEASE_POLL: Duration = Duration::from_millis(10);

/// How often an async render looks whether a fragment another render of this process is
/// rendering is done.
const FLIGHT_POLL: Duration = Duration::from_millis(1);

/// The leases one render holds: fragments it won the right to render (in any process) and has
/// neither stored nor given up yet. A page render keeps its own, since an async one moves
/// between threads; lone fragments keep their thread's ([`thread_leases`]), where they nest.
#[derive(Debug, Default)]
pub(crate) struct Leases(Mutex<HashSet<String>>);

impl Leases {
    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        crate::lock(&self.0)
    }

    /// Forgets the leases on `keys`: stored, given up, or left to another render of this
    /// process that stores the same fragment.
    pub(crate) fn let_go<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut held = self.held();
        if !held.is_empty() {
            for key in keys {
                held.remove(key);
            }
        }
    }
}

thread_local! {
    static THREAD_LEASES: Arc<Leases> = Arc::default();
}

/// The leases of the lone fragments rendering on this thread.
pub(crate) fn thread_leases() -> Arc<Leases> {
    THREAD_LEASES.with(Arc::clone)
}

/// Counter values by counter key, as one render has learnt them.
pub(crate) type VersionMap = HashMap<String, u64, foldhash::fast::RandomState>;

/// The counter keys last found inside one fragment.
pub(crate) type Hints = Arc<[Arc<str>]>;

/// The dependency hints of up to [`HintMap::CAPACITY`] fragments. Written by hand rather than on
/// moka: it is read on every fragment lookup, where moka's bookkeeping costs more than the rest
/// of a hit, and losing hints only costs a round trip, so when full it simply starts over.
#[derive(Debug, Default)]
struct HintMap(RwLock<HashMap<u64, Hints, foldhash::fast::RandomState>>);

impl HintMap {
    const CAPACITY: usize = 100_000;

    fn get(&self, key: u64) -> Option<Hints> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&key).cloned()
    }

    fn insert(&self, key: u64, hints: Hints) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(key, hints);
    }
}

/// When a render's data began to be read: what decides which of the fragments it renders it
/// may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// From this time on (nanoseconds, on [`clock`](crate::clock)).
    At(u64),
    /// A debug render, which stores nothing whatever its records' versions (a record versioned
    /// by a field alone has no counter to compare with a time).
    StoresNothing,
}

/// What a fragment's own record contributes: to its key and the store rule, and to the
/// fragments rendered around it.
#[derive(Debug, Clone)]
pub(crate) enum Own {
    /// Versioned by a counter, at this value: its key carries it, the store rule compares it,
    /// and the fragments around it remember it.
    Counter(Dep),
    /// Versioned by a field alone, with no fragment around it: its key says all.
    Field,
    /// Versioned by a field alone, inside another fragment: that one remembers the record's
    /// counter (which `invalidate` raises), so that it misses when the record changes, and is
    /// stored only if the counter is older than the render's data, as if it were its own.
    FieldInside(Dep),
    /// Versioned by a field alone, inside another fragment, and its counter could not be read:
    /// the fragment around it is not stored.
    FieldInsideUnknown,
}

impl Own {
    /// The counter the fragment's key carries, if any.
    pub(crate) fn keyed(&self) -> Option<&Dep> {
        match self {
            Own::Counter(dep) => Some(dep),
            Own::Field | Own::FieldInside(_) | Own::FieldInsideUnknown => None,
        }
    }
}

/// A fragment to store when the render ends.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) stored: Arc<Stored>,
    pub(crate) ttl: Duration,
}

/// A fragment rendered by [`FragmentStore::finish`].
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) stored: Arc<Stored>,
    /// Its write, if it is to be stored; if not, its lease must be released.
    pub(crate) write: Option<Write>,
    /// Whether it was fit to store (it may still be too large to).
    pub(crate) storable: bool,
}

/// What became of a fragment that missed ([`FragmentStore::render_miss`]).
pub(crate) enum Miss<'s, E> {
    /// Another render of this process had just rendered it, and what it contains is current.
    Handed(Arc<Stored>),
    /// Rendered here: the body's output, the versions of the records inside it, whether all
    /// of it may be stored, and the single flight to hand it to.
    Rendered {
        html: Result<String, E>,
        deps: Arc<[Dep]>,
        storable: bool,
        leader: Option<Leader<'s>>,
    },
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct FragmentStore {
    l1: Option<L1>,
    flights: Flights,
    hints: HintMap,
    /// The clock skew allowed between processes, in nanoseconds.
    clock_skew: u64,
}

impl FragmentStore {
    pub(crate) fn new(l1_bytes: u64, clock_skew: Duration) -> FragmentStore {
        FragmentStore {
            l1: (l1_bytes > 0).then(|| L1::new(l1_bytes)),
            flights: Flights::default(),
            hints: HintMap::default(),
            clock_skew: u64::try_from(clock_skew.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Whether data read at `began` includes every write an invalidation raising a counter to
    /// `version` acknowledged: `version` is confirmed
    /// ([`Backend::fresh_counter`](crate::backend::Backend::fresh_counter)) and older than
    /// `began` by more than the clock skew.
    pub(crate) fn fresh_enough(&self, version: u64, began: ReadFrom) -> bool {
        match began {
            ReadFrom::At(began) => {
                crate::versions::is_confirmed(version)
                    && version.saturating_add(self.clock_skew) < began
            }
            ReadFrom::StoresNothing => false,
        }
    }

    /// Tells the fragment being rendered around this one (if any) that this one, with `deps`
    /// inside it, is part of it, and whether it may be stored (`storable`, and for a record
    /// versioned by a field alone, whether its counter predates the render's data).
    pub(crate) fn report(&self, own: &Own, deps: &[Dep], storable: bool, began: ReadFrom) {
        match own {
            Own::Counter(dep) => frames::note(Some(dep), deps, storable),
            Own::Field => frames::note(None, deps, storable),
            Own::FieldInside(dep) => frames::note(
                Some(dep),
                deps,
                storable && self.fresh_enough(dep.version, began),
            ),
            Own::FieldInsideUnknown => frames::note(None, deps, false),
        }
    }

    /// The counter keys the fragment identified by `hint_key` contained last time.
    pub(crate) fn hints(&self, hint_key: u64) -> Option<Hints> {
        self.hints.get(hint_key)
    }

    /// Keeps the counters a fragment contains (`deps`), to read them with its record's next
    /// time, unless the hints `known` for it already say so (most fragments contain none).
    pub(crate) fn remember_hints(&self, hint_key: u64, known: Option<&Hints>, deps: &[Dep]) {
        let same = match known {
            None => deps.is_empty(),
            Some(known) => {
                known.len() == deps.len()
                    && known.iter().zip(deps).all(|(a, b)| *a == b.counter_key)
            }
        };
        if !same {
            let keys: Hints = deps.iter().map(|d| Arc::clone(&d.counter_key)).collect();
            self.hints.insert(hint_key, keys);
        }
    }

    /// The stored fragments under `keys`, in order: from the L1 where it has them, the rest
    /// from the backend in one batch. A failed batch, an unreadable or expired value is a miss.
    /// Their contents are not checked here: see [`verify`](Self::verify).
    pub(crate) async fn fetch<I: Io>(
        &self,
        io: &I,
        meter: &Meter<'_>,
        held: &Leases,
        keys: &[&str],
    ) -> Vec<Option<Arc<Stored>>> {
        let mut found: Vec<Option<Arc<Stored>>> = vec![None; keys.len()];
        let mut remote = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            match self.l1.as_ref().and_then(|l1| l1.get(key)) {
                Some(stored) => {
                    meter.count(|s| &s.l1_hits);
                    found[i] = Some(stored);
                }
                None => remote.push(i),
            }
        }
        if remote.is_empty() {
            return found;
        }
        if let Some(embedded) = meter.embedded {
            self.fetch_embedded(meter, embedded, keys, &remote, &mut found);
            return found;
        }
        // Keys whose lease another render holds are asked again, briefly, for its result; but
        // only by a render that holds no lease itself. Two renders that each won some keys of
        // a batch and wait for each other's would wait until the leases expire: a render that
        // holds leases renders what it would wait for instead.
        let mut pending = remote;
        let mut may_wait = held.held().is_empty();
        let leases = !meter.backend.is_local();
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            let remote_keys: Vec<&str> = pending.iter().map(|&i| keys[i]).collect();
            let started = Instant::now();
            let values = meter.backend.get_leased(&remote_keys, LEASE).await;
            meter.tally(&values, started);
            let mut busy = Vec::new();
            for (i, answer) in pending.into_iter().zip(values) {
                let bytes = match answer {
                    Ok(Leased::Hit(bytes)) => bytes,
                    Ok(Leased::Busy) => {
                        busy.push(i);
                        continue;
                    }
                    Ok(Leased::Won) => {
                        // A miss, ours to render.
                        if leases {
                            may_wait = false;
                            held.held().insert(keys[i].to_owned());
                        }
                        continue;
                    }
                    // A failed lookup (counted by `tally`).
                    Err(_) => continue,
                };
                let len = bytes.len();
                match value::decode(bytes) {
                    Some(stored) if stored.expires_ms > now_ms() => {
                        meter.read(len);
                        let stored = Arc::new(stored);
                        if let Some(l1) = &self.l1 {
                            l1.insert(keys[i], Arc::clone(&stored));
                        }
                        found[i] = Some(stored);
                    }
                    Some(_) => {} // expired: the server's clock is behind ours
                    None => corrupt(meter, keys[i]),
                }
            }
            if busy.is_empty() || !may_wait || Instant::now() >= deadline {
                break;
            }
            meter.stampede_wait();
            io.sleep(LEASE_POLL).await;
            pending = busy;
        }
        found
    }

    /// [`fetch`](Self::fetch) from the embedded backend, which holds the sweeper's fragments
    /// as they are: no copy, no parse, no leases (single flight covers one process).
    fn fetch_embedded(
        &self,
        meter: &Meter<'_>,
        embedded: &crate::backend::Embedded,
        keys: &[&str],
        remote: &[usize],
        found: &mut [Option<Arc<Stored>>],
    ) {
        meter.tally::<()>(&[Ok(())], Instant::now());
        for &i in remote {
            match embedded.fragment(keys[i]) {
                None => {}
                Some(Some(stored)) if stored.expires_ms > now_ms() => {
                    meter.read(value::encoded_len(&stored));
                    found[i] = Some(stored);
                }
                Some(Some(_)) => {}
                Some(None) => corrupt(meter, keys[i]),
            }
        }
    }

    /// [`drop_outdated`](Self::drop_outdated), after reading in one batch the versions not yet
    /// in `versions` (and adding them to it).
    pub(crate) async fn verify(
        &self,
        meter: &Meter<'_>,
        counters: &Versions,
        found: &mut [Option<Arc<Stored>>],
        versions: &mut VersionMap,
    ) {
        let mut unknown: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for stored in found.iter().flatten() {
            for dep in stored.deps.iter() {
                if !versions.contains_key(&*dep.counter_key) && seen.insert(&*dep.counter_key) {
                    unknown.push(&dep.counter_key);
                }
            }
        }
        if !unknown.is_empty() {
            for (key, value) in unknown.iter().zip(counters.read(meter, &unknown).await) {
                if let Ok(value) = value {
                    versions.insert((*key).to_owned(), value);
                }
            }
        }
        Self::drop_outdated(meter, found, versions);
    }

    /// Drops from `found` every fragment that contains a record whose version is not the one
    /// in `versions` (or is not there at all).
    pub(crate) fn drop_outdated(
        meter: &Meter<'_>,
        found: &mut [Option<Arc<Stored>>],
        versions: &VersionMap,
    ) {
        for slot in found.iter_mut() {
            let current = slot.as_ref().is_none_or(|stored| {
                stored
                    .deps
                    .iter()
                    .all(|dep| versions.get(&*dep.counter_key) == Some(&dep.version))
            });
            if !current {
                meter.count(|s| &s.outdated);
                *slot = None;
            }
        }
    }

    /// Waits, without blocking, until no render of this process is rendering any of `keys`
    /// (or for [`FLIGHT_WAIT`](crate::flight::FLIGHT_WAIT) at most), so that an async render
    /// that then claims them is handed the result instead of rendering it again: an async
    /// render's claim never waits in place.
    pub(crate) async fn await_flights<I: Io>(&self, io: &I, keys: &[&str]) {
        let deadline = Instant::now() + crate::flight::FLIGHT_WAIT;
        while keys.iter().any(|key| self.flights.running(key)) && Instant::now() < deadline {
            io.sleep(FLIGHT_POLL).await;
        }
    }

    /// The miss path's first half: claims the single flight of `key` (waiting for another
    /// render of this process that has it in flight, if `wait`); unless that render hands over
    /// its result and `current` still accepts it, renders `body` in a frame of its own. The
    /// caller then [`finish`](Self::finish)es it (or releases its lease if it failed).
    pub(crate) fn render_miss<E>(
        &self,
        key: &str,
        held: &Leases,
        wait: bool,
        current: impl FnOnce(Arc<Stored>) -> Option<Arc<Stored>>,
        body: impl FnOnce() -> Result<String, E>,
    ) -> Miss<'_, E> {
        let leader = match self.flights.claim(key, wait) {
            Claim::Done(stored) => {
                // Its leader stores it: whatever lease this render took on it is its own.
                held.let_go(std::iter::once(key));
                if let Some(stored) = current(stored) {
                    return Miss::Handed(stored);
                }
                None
            }
            Claim::Leader(leader) => Some(leader),
            Claim::Alone => None,
        };
        let (html, deps, storable) = frames::within(body);
        Miss::Rendered {
            html,
            deps,
            storable,
            leader,
        }
    }

    /// The miss path's second half: applies the store rule (see the [module docs](self)), tells
    /// the enclosing fragment, hands the fragment to the renders waiting on it, and returns it
    /// with its write if it is to be stored (if not, its lease must be
    /// [`release`](Self::release)d).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        meter: &Meter<'_>,
        key: &str,
        (html, holes): (String, Arc<[Placed]>),
        ttl: Duration,
        own: &Own,
        (deps, inner_storable): (Arc<[Dep]>, bool),
        began: ReadFrom,
        leader: Option<Leader<'_>>,
    ) -> Finished {
        let storable = inner_storable
            && began != ReadFrom::StoresNothing
            && own
                .keyed()
                .is_none_or(|dep| self.fresh_enough(dep.version, began));
        self.report(own, &deps, storable, began);
        let stored = Arc::new(Stored {
            html,
            expires_ms: now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            deps,
            holes,
        });
        let write = if !storable {
            meter.count(|s| &s.unstored);
            tracing::debug!(
                key,
                "cachesweeper: not stored, a record in it changed after this render read its data"
            );
            None
        } else {
            if let Some(leader) = leader {
                leader.publish(Arc::clone(&stored));
            }
            if value::encoded_len(&stored) > meter.backend.max_value_len() {
                meter.count(|s| &s.oversized);
                tracing::debug!(
                    key,
                    bytes = stored.html.len(),
                    "cachesweeper: fragment too large to store"
                );
                None
            } else {
                if let Some(l1) = &self.l1 {
                    l1.insert(key, Arc::clone(&stored));
                }
                Some(Write {
                    stored: Arc::clone(&stored),
                    key: key.to_owned(),
                    ttl,
                })
            }
        };
        Finished {
            stored,
            write,
            storable,
        }
    }

    /// Gives up the leases the render holds among `keys`, whose fragments it will not store,
    /// so that other renders do not wait for them; one round trip. Keys it does not hold
    /// (another render's lease, which it rendered rather than wait for) are left alone:
    /// releasing them would delete what their holder stores.
    pub(crate) async fn release(&self, meter: &Meter<'_>, held: &Leases, keys: &[&str]) {
        if keys.is_empty() || meter.backend.is_local() {
            return;
        }
        let ours: Vec<&str> = {
            let held = held.held();
            keys.iter().copied().filter(|k| held.contains(*k)).collect()
        };
        if !ours.is_empty() {
            let started = Instant::now();
            let released = meter.backend.release_leases(&ours).await;
            meter.tally(std::slice::from_ref(&released), started);
            held.let_go(ours.iter().copied());
        }
    }

    /// Stores rendered fragments, in one batch.
    pub(crate) async fn write(&self, meter: &Meter<'_>, held: &Leases, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let bytes: usize = writes.iter().map(|w| value::encoded_len(&w.stored)).sum();
        let started = Instant::now();
        let stored = if let Some(embedded) = meter.embedded {
            for w in &writes {
                embedded.store_fragment(&w.key, Arc::clone(&w.stored), w.ttl);
            }
            Ok(())
        } else {
            let encoded: Vec<Vec<u8>> = writes.iter().map(|w| value::encode(&w.stored)).collect();
            let items: Vec<SetItem<'_>> = writes
                .iter()
                .zip(&encoded)
                .map(|(w, bytes)| SetItem {
                    key: &w.key,
                    value: bytes,
                    ttl: Some(w.ttl),
                })
                .collect();
            meter.backend.set_many(&items).await
        };
        meter.tally(std::slice::from_ref(&stored), started);
        if stored.is_ok() {
            meter.written(bytes);
        }
        // Stored or not, the leases are over: a failed store leaves them to expire.
        held.let_go(writes.iter().map(|w| w.key.as_str()));
    }
}

/// A stored value that is not a fragment: counted, and rendered again.
fn corrupt(meter: &Meter<'_>, key: &str) {
    meter.count(|s| &s.corrupt);
    tracing::debug!(
        key,
        "cachesweeper: stored value is not a fragment; re-rendering"
    );
}

#[cfg(test)]
mod tests;
