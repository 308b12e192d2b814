//! The fragment path shared by a lone fragment ([`Sweeper::fragment`]) and a page render
//! ([`Sweeper::render`]): fetching stored fragments, checking that what they contain is still
//! current, and deciding whether a fragment just rendered may be stored.
//!
//! Two rules keep every page fresh (the guarantee is stated on [`Sweeper::invalidate`]):
//!
//! - **A fragment is stored only if its data is known to be newer than its version.** Each
//!   version counter holds the time of the invalidation that last raised it. A render knows when
//!   it began reading its data ([`Sweeper::scope`]); a fragment whose record was invalidated
//!   after that may have been rendered from rows read before the write, so it is served but
//!   not stored (nor handed to other renders).
//! - **A fragment records the versions of the records rendered inside it**, at any depth, and a
//!   hit is served only while all of them are still current. An outer fragment therefore never
//!   outlives a change to a record inside it, with no declaration at all.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Leased, SetItem};
use crate::flight::Leader;
use crate::l1::now_ms;
use crate::stats::Stats;
use crate::value::{self, Dep, Stored};
use crate::{Error, Sweeper};

/// The records met while one fragment's body renders.
#[derive(Debug)]
struct Frame {
    deps: HashMap<Arc<str>, u64>,
    storable: bool,
}

thread_local! {
    /// The leases this thread's renders hold: fragments they won the right to render and have
    /// neither stored nor given up yet.
    static LEASES: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The fragments whose bodies are rendering on this thread, innermost last. Askama renders
    /// a body synchronously, on the caller's thread, inside the filter's call, so a stack per
    /// thread sees exactly the fragments nested in it.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Pops the frame it pushed, even if the body panics.
struct FrameGuard;

impl Drop for FrameGuard {
    fn drop(&mut self) {
        FRAMES.with(|frames| frames.borrow_mut().pop());
    }
}

/// Runs a fragment's `body` in a frame of its own. Returns what it returned, the versions of the
/// records rendered inside it, and whether everything inside it may be stored.
pub(crate) fn within<T>(body: impl FnOnce() -> T) -> (T, Arc<[Dep]>, bool) {
    FRAMES.with(|frames| {
        frames.borrow_mut().push(Frame {
            deps: HashMap::new(),
            storable: true,
        });
    });
    let guard = FrameGuard;
    let out = body();
    let frame = FRAMES.with(|frames| frames.borrow_mut().pop());
    std::mem::forget(guard);
    let frame = frame.expect("the frame pushed above");
    let mut deps: Vec<Dep> = frame
        .deps
        .into_iter()
        .map(|(counter_key, version)| Dep {
            counter_key,
            version,
        })
        .collect();
    deps.sort_by(|a, b| a.counter_key.cmp(&b.counter_key));
    (out, deps.into(), frame.storable)
}

/// Tells the fragment being rendered around this one, if any, that this one is part of it:
/// its record's version (`own`), the versions it contains, and whether it may be stored.
pub(crate) fn note(own: Option<&Dep>, deps: &[Dep], storable: bool) {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let Some(frame) = frames.last_mut() else {
            return;
        };
        frame.storable &= storable;
        for dep in own.into_iter().chain(deps) {
            match frame.deps.entry(Arc::clone(&dep.counter_key)) {
                Entry::Vacant(slot) => {
                    slot.insert(dep.version);
                }
                // One record at two versions in one fragment: part of it predates the other.
                Entry::Occupied(seen) => frame.storable &= *seen.get() == dep.version,
            }
        }
    });
}

/// Forgets the leases on `keys`: stored, given up, or left to another render of this process
/// that stores the same fragment.
pub(crate) fn let_go<'a>(keys: impl Iterator<Item = &'a str>) {
    LEASES.with(|leases| {
        let mut leases = leases.borrow_mut();
        if !leases.is_empty() {
            for key in keys {
                leases.remove(key);
            }
        }
    });
}

/// A fragment to store when the render ends.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl: Duration,
}

/// A fragment rendered by [`Sweeper::finish_fragment`].
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) stored: Arc<Stored>,
    /// Its write, if it is to be stored.
    pub(crate) write: Option<Write>,
    /// Whether it was fit to store (it may still be too large to).
    pub(crate) storable: bool,
}

/// How long another render's lease on a missed fragment lasts if it never stores it (it
/// failed, or died): the longest anyone waits on it.
const LEASE: Duration = Duration::from_secs(2);

/// How long a lookup waits, at most, for another render (of any process) that holds the lease
/// of a fragment; then it renders the fragment itself.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting lookup asks again.
const LEASE_POLL: Duration = Duration::from_millis(10);

impl Sweeper {
    /// Whether data read at `began` is known to include every write that an invalidation
    /// raising a counter to `version` acknowledged: the invalidation happened before `began`,
    /// by more than the clock skew allowed between processes.
    pub(crate) fn fresh_enough(&self, version: u64, began: u64) -> bool {
        version.saturating_add(self.inner.clock_skew) < began
    }

    /// The stored fragments under `keys`, in order: from the L1 where it has them, the rest
    /// from the backend in one batch. A failed batch, an unreadable or expired value is a miss.
    /// Their dependencies are not checked here: see [`verify`](Self::verify).
    pub(crate) fn fetch_fragments(&self, keys: &[&str]) -> Vec<Option<Arc<Stored>>> {
        let mut found: Vec<Option<Arc<Stored>>> = vec![None; keys.len()];
        let mut remote = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            match self.inner.l1.as_ref().and_then(|l1| l1.get(key)) {
                Some(stored) => {
                    self.count(Stats::l1_hit);
                    found[i] = Some(stored);
                }
                None => remote.push(i),
            }
        }
        if remote.is_empty() {
            return found;
        }
        // Keys whose lease another render holds are asked again, briefly, for its result; but
        // only by a render that holds no lease itself. Two renders that each won some keys of
        // a batch and wait for each other's would wait until the leases expire: a render that
        // holds leases renders what it would wait for instead.
        let mut pending = remote;
        let mut may_wait = LEASES.with(|leases| leases.borrow().is_empty());
        let leases = !self.inner.backend.is_local();
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            let remote_keys: Vec<&str> = pending.iter().map(|&i| keys[i]).collect();
            let values = self.call_each(|b| b.get_leased(&remote_keys, LEASE));
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
                            LEASES.with(|held| held.borrow_mut().insert(keys[i].to_owned()));
                        }
                        continue;
                    }
                    // A failed lookup (counted by `call_each`).
                    Err(_) => continue,
                };
                let len = bytes.len();
                match value::decode(bytes) {
                    Some(stored) if stored.expires_ms > now_ms() => {
                        self.count(|s| s.read(len));
                        let stored = Arc::new(stored);
                        if let Some(l1) = &self.inner.l1 {
                            l1.insert(keys[i], Arc::clone(&stored));
                        }
                        found[i] = Some(stored);
                    }
                    Some(_) => {} // expired: the server's clock is behind ours
                    None => {
                        self.count(Stats::corrupt);
                        tracing::debug!(
                            key = keys[i],
                            "cachesweeper: stored value is not a fragment; re-rendering"
                        );
                    }
                }
            }
            if busy.is_empty() || !may_wait || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(LEASE_POLL);
            pending = busy;
        }
        found
    }

    /// Drops from `found` every fragment that contains a record whose version has changed
    /// since it was stored (or cannot be read now). Versions already in `versions` are taken
    /// from there; the others are read in one batch and added to it.
    pub(crate) fn verify(
        &self,
        found: &mut [Option<Arc<Stored>>],
        versions: &mut HashMap<String, u64>,
    ) {
        let mut unknown: Vec<&str> = Vec::new();
        for stored in found.iter().flatten() {
            for dep in stored.deps.iter() {
                if !versions.contains_key(&*dep.counter_key)
                    && !unknown.contains(&&*dep.counter_key)
                {
                    unknown.push(&dep.counter_key);
                }
            }
        }
        if !unknown.is_empty() {
            for (key, value) in unknown.iter().zip(self.read_versions(&unknown)) {
                if let Ok(value) = value {
                    versions.insert((*key).to_owned(), value);
                }
            }
        }
        for slot in found.iter_mut() {
            let current = slot.as_ref().is_none_or(|stored| {
                stored
                    .deps
                    .iter()
                    .all(|dep| versions.get(&*dep.counter_key) == Some(&dep.version))
            });
            if !current {
                self.count(Stats::outdated);
                *slot = None;
            }
        }
    }

    /// A fragment just rendered under `key`: decides whether it may be stored (its own
    /// version `own` is older than the render's data, and so is everything inside it), tells
    /// the enclosing fragment, hands it to the renders waiting on it, and returns it with its
    /// write if it is to be stored. A fragment that is not stored must give up its lease
    /// ([`Finished::write`] is `None`): see [`release`](Self::release).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_fragment(
        &self,
        key: &str,
        html: String,
        ttl: Duration,
        own: Option<&Dep>,
        (deps, inner_storable): (Arc<[Dep]>, bool),
        began: u64,
        leader: Option<Leader<'_>>,
    ) -> Finished {
        let storable =
            inner_storable && own.is_none_or(|dep| self.fresh_enough(dep.version, began));
        note(own, &deps, storable);
        let stored = Arc::new(Stored {
            html,
            expires_ms: now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            deps,
        });
        let write = if storable {
            if let Some(leader) = leader {
                leader.publish(Arc::clone(&stored));
            }
            self.prepare_write(key, &stored, ttl)
        } else {
            self.count(Stats::unstored);
            tracing::debug!(
                key,
                "cachesweeper: not stored, a record in it changed after this render read its data"
            );
            None
        };
        Finished {
            stored,
            write,
            storable,
        }
    }

    /// The write of a rendered fragment (kept in the L1 too), or `None` if it is too large for
    /// the backend.
    fn prepare_write(&self, key: &str, stored: &Arc<Stored>, ttl: Duration) -> Option<Write> {
        if value::encoded_len(stored.html.len(), &stored.deps) > self.inner.backend.max_value_len()
        {
            self.count(Stats::oversized);
            tracing::debug!(
                key,
                bytes = stored.html.len(),
                "cachesweeper: fragment too large to store"
            );
            return None;
        }
        if let Some(l1) = &self.inner.l1 {
            l1.insert(key, Arc::clone(stored));
        }
        Some(Write {
            bytes: value::encode(stored),
            key: key.to_owned(),
            ttl,
        })
    }

    /// Gives up the leases this render took on `keys` when it will not store values there, so
    /// that other renders do not wait for them; one round trip.
    pub(crate) fn release(&self, keys: &[&str]) {
        if !keys.is_empty() && !self.inner.backend.is_local() {
            let _ = self.call(|b| b.release_leases(keys));
            let_go(keys.iter().copied());
        }
    }

    /// Stores rendered fragments, in one batch.
    pub(crate) fn store(&self, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let items: Vec<SetItem<'_>> = writes
            .iter()
            .map(|w| SetItem {
                key: &w.key,
                value: &w.bytes,
                ttl: Some(w.ttl),
            })
            .collect();
        if self.call(|b| b.set_many(&items)).is_ok() {
            let bytes: usize = writes.iter().map(|w| w.bytes.len()).sum();
            self.count(|s| s.written(bytes));
        }
        // Stored or not, the leases are over: a failed store leaves them to expire.
        let_go(writes.iter().map(|w| w.key.as_str()));
    }

    /// The current value of each counter in `keys`, in one batch, creating missing ones.
    /// Counters whose invalidation failed in this process and has not been retried yet read
    /// as errors: nothing under them is served or stored here until it is.
    pub(crate) fn read_versions(&self, keys: &[&str]) -> Vec<crate::Result<u64>> {
        self.read_versions_at(keys, crate::clock::now())
    }

    /// [`read_versions`](Self::read_versions), `now` being the time on [`clock`](crate::clock).
    pub(crate) fn read_versions_at(&self, keys: &[&str], now: u64) -> Vec<crate::Result<u64>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let fresh = self.inner.backend.fresh_counter(now);
        let mut out = self.call_each(|b| b.incr_each(keys, 0, fresh));
        if self.inner.retry.is_pending() {
            for (key, value) in keys.iter().zip(out.iter_mut()) {
                if self.inner.retry.contains(key) {
                    *value = Err(Error::InvalidationPending {
                        key: (*key).to_owned(),
                    });
                }
            }
        }
        out
    }
}
