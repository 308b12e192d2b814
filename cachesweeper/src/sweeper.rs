//! The sweeper handle: versions, fragment keys, invalidation and the fail-open fragment path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, Embedded, Leased, SetItem};
use crate::flight::{Claim, Flights};
use crate::keys::{KeyParts, KeySpace, Version};
use crate::l1::L1;
use crate::session::{Session, Write};
use crate::stats::{Stats, StatsSnapshot};
use crate::{Error, ModelRef, Result, Sweepable, TemplateDigest, value};

/// The default bound of the embedded backend: 64 MiB.
pub const DEFAULT_EMBEDDED_BYTES: u64 = 64 * 1024 * 1024;

/// How long [`Sweeper::invalidate`] waits between its two bumps, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// The default namespace, the first component of every key.
pub const DEFAULT_NAMESPACE: &str = "cs";

/// The handle through which templates read and store fragments, and applications invalidate
/// records. Cheap to clone: clones share the backend and the counters.
///
/// ```
/// use cachesweeper::{KeyParts, Sweepable, Sweeper};
///
/// #[derive(Sweepable)]
/// struct Comment {
///     id: i64,
///     body: String,
/// }
///
/// let sweeper = Sweeper::embedded();
/// let comment = Comment { id: 1, body: "hi".into() };
/// let parts = KeyParts::new().part("comment.html");
/// let render = || Ok::<_, std::fmt::Error>(format!("<p>{}</p>", comment.body));
///
/// assert_eq!(sweeper.fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // miss
/// assert_eq!(sweeper.fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // hit
/// sweeper.invalidate(&comment).unwrap();
/// assert_eq!(sweeper.fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // miss again
/// assert_eq!((sweeper.stats().hits, sweeper.stats().misses), (1, 2));
/// # Ok::<(), std::fmt::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sweeper {
    pub(crate) inner: Arc<Inner>,
    /// A scope's own counters, kept in addition to the shared ones (see [`Sweeper::scope`]).
    pub(crate) scope: Option<Arc<Stats>>,
    /// The page render this handle belongs to, if any (see [`Sweeper::render`]).
    pub(crate) session: Option<Arc<Session>>,
    /// The digest of the templates being rendered through this handle, for fragment keys.
    pub(crate) digest: &'static str,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: KeySpace,
    stats: Stats,
    last_warning: AtomicU64,
    l1: Option<L1>,
    pub(crate) flights: Flights,
    settle: Duration,
}

/// Configures a [`Sweeper`].
#[derive(Debug, Default)]
#[must_use]
pub struct SweeperBuilder {
    namespace: Option<String>,
    backend: Option<Arc<dyn Backend>>,
    l1_bytes: Option<u64>,
    settle: Option<Duration>,
}

impl SweeperBuilder {
    /// The first component of every key (default `cs`): give two applications sharing one
    /// memcached different namespaces and they never see each other's versions or fragments.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Where fragments and counters live (default: an [`Embedded`] cache of 64 MiB).
    pub fn backend(mut self, backend: impl Backend + 'static) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// A backend already shared elsewhere.
    pub fn shared_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Bounds the process-local L1 of fragments in front of a remote backend; 0 turns it off.
    /// By default it holds 32 MiB in front of a remote backend (memcached) and is off in front
    /// of a local one. A fragment key's content never changes, so the L1 never serves stale
    /// content; only version lookups must reach the shared backend.
    pub fn l1(mut self, max_bytes: u64) -> Self {
        self.l1_bytes = Some(max_bytes);
        self
    }

    /// How long [`Sweeper::invalidate`] waits between its two bumps (default 100 ms; zero: one
    /// bump, no wait). See [`Sweeper::invalidate`] for why there are two.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = Some(settle);
        self
    }

    /// Checks the configuration and builds the sweeper.
    pub fn build(self) -> Result<Sweeper> {
        let keys = KeySpace::new(self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE))?;
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(Embedded::new(DEFAULT_EMBEDDED_BYTES)));
        let l1_bytes = self.l1_bytes.unwrap_or(if backend.is_local() {
            0
        } else {
            crate::l1::DEFAULT_L1_BYTES
        });
        Ok(Sweeper {
            inner: Arc::new(Inner {
                l1: (l1_bytes > 0).then(|| L1::new(l1_bytes)),
                flights: Flights::default(),
                settle: self.settle.unwrap_or(DEFAULT_SETTLE),
                backend,
                keys,
                stats: Stats::default(),
                last_warning: AtomicU64::new(0),
            }),
            scope: None,
            session: None,
            digest: "",
        })
    }
}

/// A value never used by a counter before: nanoseconds since the epoch. A counter that was
/// evicted, or lost with a restarted server, is recreated from here, so it cannot come back to a
/// value that an old fragment key carries (that would need more bumps than nanoseconds passed).
pub(crate) fn counter_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Sweeper {
    /// A builder, for a namespace and a backend.
    pub fn builder() -> SweeperBuilder {
        SweeperBuilder::default()
    }

    /// A sweeper on a fresh embedded cache of 64 MiB, in the default namespace.
    pub fn embedded() -> Sweeper {
        Self::builder()
            .build()
            .expect("the default namespace is valid")
    }

    /// A sweeper on memcached: one URL or several, comma-separated
    /// (`memcache://127.0.0.1:11211`).
    #[cfg(feature = "memcache")]
    pub fn memcached(urls: &str) -> Result<Sweeper> {
        Self::builder()
            .backend(crate::backend::Memcached::from_url(urls)?)
            .build()
    }

    /// The backend in use (clone the `Arc` to share it with another sweeper).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The counters so far: of this scope if it is one (see [`scope`](Self::scope)), else of
    /// the sweeper and all its scopes.
    pub fn stats(&self) -> StatsSnapshot {
        self.scope
            .as_deref()
            .unwrap_or(&self.inner.stats)
            .snapshot()
    }

    /// A handle on the same cache whose [`stats`](Self::stats) count only what is done through
    /// it (and its clones), e.g. one request: the shared counters still count everything.
    ///
    /// ```
    /// let sweeper = cachesweeper::Sweeper::embedded();
    /// let request = sweeper.scope();
    /// // ... page.render_with_values(&request) ...
    /// let header = format!("hits={} misses={}", request.stats().hits, request.stats().misses);
    /// assert_eq!(header, "hits=0 misses=0");
    /// ```
    pub fn scope(&self) -> Sweeper {
        Sweeper {
            inner: Arc::clone(&self.inner),
            scope: Some(Arc::new(Stats::default())),
            session: self.session.clone(),
            digest: self.digest,
        }
    }

    /// Counts an event in the shared counters and in this scope's.
    pub(crate) fn count(&self, event: impl Fn(&Stats)) {
        event(&self.inner.stats);
        if let Some(scope) = &self.scope {
            event(scope);
        }
    }

    /// Runs one backend call, counting it as a round trip and, if it fails, as an error.
    pub(crate) fn call<T>(&self, op: impl FnOnce(&dyn Backend) -> Result<T>) -> Result<T> {
        let result = op(&*self.inner.backend);
        self.tally(std::slice::from_ref(&result));
        result
    }

    /// Runs one batch backend call that answers per key.
    pub(crate) fn call_each<T>(
        &self,
        op: impl FnOnce(&dyn Backend) -> Vec<Result<T>>,
    ) -> Vec<Result<T>> {
        let results = op(&*self.inner.backend);
        self.tally(&results);
        results
    }

    /// Counts a backend call: a round trip unless every part of it was skipped by a circuit
    /// breaker (nothing was sent), and one error if any part failed.
    fn tally<T>(&self, results: &[Result<T>]) {
        let skipped = |r: &Result<T>| matches!(r, Err(Error::CircuitOpen { .. }));
        if results.is_empty() || !results.iter().all(skipped) {
            self.count(Stats::round_trip);
        }
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            self.count(Stats::error);
            self.warn(error);
        }
    }

    /// Logs a backend error at most once a second, so a dead cache does not flood the log.
    fn warn(&self, error: &Error) {
        let now = counter_seed() / 1_000_000_000;
        let last = self.inner.last_warning.load(Ordering::Relaxed);
        if now > last
            && self
                .inner
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, errors = self.inner.stats.snapshot().errors, "cachesweeper: cache error, rendering without cache");
        }
    }

    /// The record's current version. Costs one round trip for records with a counter (which is
    /// created if missing), none for records versioned by a field alone.
    pub fn version<R: Sweepable + ?Sized>(&self, record: &R) -> Result<Version> {
        let field = record.sweeper_version_field();
        let counter = if R::COUNTER {
            let key = self.counter_key(record);
            let values = self.call(|b| b.incr_many(&[&key], 0, counter_seed()))?;
            Some(values[0])
        } else {
            None
        };
        Ok(Version { field, counter })
    }

    /// A handle on the same cache whose fragment keys carry the digest of template `T` (and
    /// the templates it includes, extends or imports): for pages rendered with Askama's own
    /// `render_with_values(&handle)` rather than [`render`](Self::render), which does this
    /// itself.
    pub fn for_template<T: TemplateDigest + ?Sized>(&self) -> Sweeper {
        Sweeper {
            digest: T::TEMPLATE_DIGEST,
            ..self.clone()
        }
    }

    /// The keys this sweeper builds (its namespace).
    pub fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    /// The key of `record`'s version counter (whether or not it has one).
    pub fn counter_key<R: Sweepable + ?Sized>(&self, record: &R) -> String {
        self.inner.keys.counter_key(R::MODEL, &record.sweeper_key())
    }

    /// The key of a fragment of `record` at its current version.
    pub fn fragment_key<R: Sweepable + ?Sized>(
        &self,
        record: &R,
        parts: &KeyParts,
    ) -> Result<String> {
        let version = self.version(record)?;
        Ok(self.key_at(record, &version, parts))
    }

    pub(crate) fn key_at<R: Sweepable + ?Sized>(
        &self,
        record: &R,
        version: &Version,
        parts: &KeyParts,
    ) -> String {
        self.inner
            .keys
            .fragment_key(R::MODEL, &record.sweeper_key(), version, parts)
    }

    /// Invalidates `record` and the parents it touches: every fragment cached under their
    /// current versions stops being found. Each bump is atomic (memcached `ma`), and the record
    /// and its parents are bumped in one round trip.
    ///
    /// For a record versioned by a field alone, only its parents are bumped (its own version
    /// changes when the field does).
    ///
    /// **The one ordering rule:** call it *after* the change is committed to your database.
    /// Called before, a render in between would read the old row under the new version and
    /// store it there.
    ///
    /// **Why it bumps twice.** A render that read the row just *before* the commit but looks its
    /// version up just *after* the bump would store the old row under the new version, where
    /// renders that start after this call would find it. So the counters are bumped, then, after
    /// [`settle`](SweeperBuilder::settle) (100 ms by default), bumped again: whatever was stored
    /// under the version in between is never asked for again. This holds for renders that look
    /// versions up within `settle` of loading their data, which [`render`](Self::render) does in
    /// its first pass. This call therefore blocks for `settle`: call it where blocking is fine
    /// (a blocking pool), or set `settle` to zero to trade that guarantee for speed. Records
    /// versioned by a field have no such window: their version comes with the row itself.
    pub fn invalidate<R: Sweepable + ?Sized>(&self, record: &R) -> Result<()> {
        let mut parents = Vec::new();
        record.sweeper_parents(&mut parents);
        let mut keys: Vec<String> = parents
            .iter()
            .map(|parent| self.inner.keys.counter_key(parent.model, &parent.key))
            .collect();
        if R::COUNTER {
            keys.push(self.counter_key(record));
        }
        self.count(Stats::invalidation);
        tracing::debug!(model = R::MODEL, key = %record.sweeper_key(), parents = parents.len(), "cachesweeper invalidate");
        self.bump(&keys)
    }

    /// Bumps counters, twice around the settle time (see [`invalidate`](Self::invalidate)).
    fn bump(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.call(|b| b.incr_many(&keys, 1, counter_seed()))?;
        if !self.inner.settle.is_zero() {
            std::thread::sleep(self.inner.settle);
            self.call(|b| b.incr_many(&keys, 1, counter_seed()))?;
        }
        Ok(())
    }

    /// Invalidates a record known only by reference (model name and key), e.g. from a
    /// database trigger or a message queue. Its parents are not known here, so they are not
    /// touched.
    pub fn invalidate_ref(&self, record: &ModelRef) -> Result<()> {
        self.count(Stats::invalidation);
        self.bump(&[self.inner.keys.counter_key(record.model, &record.key)])
    }

    /// The fragment of `record` identified by `parts`: from the cache if it holds one for the
    /// record's current version, else from `render`, stored for `ttl`.
    ///
    /// Fails open: a cache error is counted in [`stats`](Self::stats), logged, and treated as a
    /// miss. Only `render`'s own error is returned, and nothing is stored then. Inside
    /// [`render`](Self::render) the lookups of a whole page are batched; outside it each call
    /// costs a version lookup (for counter-versioned records) and a fragment lookup.
    pub fn fragment<R, E>(
        &self,
        record: &R,
        ttl: impl crate::Ttl,
        parts: &KeyParts,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E>
    where
        R: Sweepable + ?Sized,
    {
        let Some(ttl) = ttl.ttl() else {
            self.count(Stats::miss);
            return render();
        };
        let with_digest;
        let parts = if parts.wants_digest() && !self.digest.is_empty() {
            with_digest = parts.clone().template_digest(self.digest);
            &with_digest
        } else {
            parts
        };
        match &self.session {
            Some(session) => self.fragment_in_session(session, record, ttl, parts, render),
            None => self.fragment_alone(record, ttl, parts, render),
        }
    }

    /// One fragment, on its own: a version lookup, a fragment lookup, and a store on a miss.
    pub(crate) fn fragment_alone<R, E>(
        &self,
        record: &R,
        ttl: Duration,
        parts: &KeyParts,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E>
    where
        R: Sweepable + ?Sized,
    {
        let key = self
            .version(record)
            .ok()
            .map(|v| self.key_at(record, &v, parts));
        if let Some(key) = &key
            && let Some(html) = self.fetch_fragments(&[key.as_str()]).pop().flatten()
        {
            self.count_hit(key, &html);
            return Ok(html);
        }
        let Some(key) = key else {
            // The version could not be learnt: render, and store nothing.
            self.count_miss::<R>(None);
            return render();
        };
        let leader = match self.inner.flights.claim(&key) {
            Claim::Done(html) => {
                self.count_coalesced(&key, &html);
                return Ok(html);
            }
            Claim::Leader(leader) => Some(leader),
            Claim::Alone => None,
        };
        self.count_miss::<R>(Some(&key));
        let html = match render() {
            Ok(html) => html,
            Err(error) => {
                self.release(&key);
                return Err(error);
            }
        };
        if let Some(leader) = leader {
            leader.publish(&html);
        }
        match self.prepare_write(key.clone(), &html, ttl) {
            Some(write) => self.store(vec![write]),
            None => self.release(&key),
        }
        Ok(html)
    }

    /// Gives up the lease this render took on `key` when it will not store a value there, so
    /// that other renders do not wait for it.
    pub(crate) fn release(&self, key: &str) {
        if !self.inner.backend.is_local() {
            let _ = self.call(|b| b.delete(key));
        }
    }

    /// The stored fragments under `keys`, in order: from the L1 where it has them, the rest
    /// from the backend in one batch. A failed batch or an unreadable value is a miss.
    pub(crate) fn fetch_fragments(&self, keys: &[&str]) -> Vec<Option<String>> {
        let mut found: Vec<Option<String>> = vec![None; keys.len()];
        let mut remote = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            match self.inner.l1.as_ref().and_then(|l1| l1.get(key)) {
                Some(html) => {
                    self.count(Stats::l1_hit);
                    found[i] = Some(html);
                }
                None => remote.push(i),
            }
        }
        if remote.is_empty() {
            return found;
        }
        // Keys whose lease another render holds are asked again, briefly, for its result.
        let mut pending = remote;
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            let remote_keys: Vec<&str> = pending.iter().map(|&i| keys[i]).collect();
            let values = self.call_each(|b| b.get_leased(&remote_keys, LEASE));
            let mut busy = Vec::new();
            for (i, answer) in pending.into_iter().zip(values) {
                let stored = match answer {
                    Ok(Leased::Hit(stored)) => stored,
                    Ok(Leased::Busy) => {
                        busy.push(i);
                        continue;
                    }
                    // A miss (ours to render), or a failed lookup (counted by `call_each`).
                    Ok(Leased::Won) | Err(_) => continue,
                };
                let len = stored.len();
                match value::decode(stored) {
                    Some(html) => {
                        self.count(|s| s.read(len));
                        if let Some(l1) = &self.inner.l1 {
                            l1.insert(keys[i], &html, None);
                        }
                        found[i] = Some(html);
                    }
                    None => {
                        self.count(Stats::corrupt);
                        tracing::debug!(
                            key = keys[i],
                            "cachesweeper: stored value is not a fragment; re-rendering"
                        );
                    }
                }
            }
            if busy.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(LEASE_POLL);
            pending = busy;
        }
        found
    }

    pub(crate) fn count_hit(&self, key: &str, html: &str) {
        self.count(Stats::hit);
        tracing::debug!(key, bytes = html.len(), "cachesweeper hit");
    }

    pub(crate) fn count_coalesced(&self, key: &str, html: &str) {
        self.count(Stats::hit);
        self.count(Stats::coalesced);
        tracing::debug!(
            key,
            bytes = html.len(),
            "cachesweeper hit (rendered just now by another render)"
        );
    }

    pub(crate) fn count_miss<R: Sweepable + ?Sized>(&self, key: Option<&str>) {
        self.count(Stats::miss);
        tracing::debug!(
            model = R::MODEL,
            key = key.unwrap_or("-"),
            "cachesweeper miss"
        );
    }

    /// The write of a rendered fragment, or `None` if it is too large for the backend.
    pub(crate) fn prepare_write(&self, key: String, html: &str, ttl: Duration) -> Option<Write> {
        if value::encoded_len(html.len()) > self.inner.backend.max_value_len() {
            self.count(Stats::oversized);
            tracing::debug!(
                key,
                bytes = html.len(),
                "cachesweeper: fragment too large to store"
            );
            return None;
        }
        if let Some(l1) = &self.inner.l1 {
            l1.insert(&key, html, Some(ttl));
        }
        Some(Write {
            bytes: value::encode(html),
            key,
            ttl,
        })
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
    }
}

/// How long another render's lease on a missed fragment lasts if it never stores it (it
/// failed, or died): the longest anyone waits on it.
const LEASE: Duration = Duration::from_secs(2);

/// How long a lookup waits, at most, for another render (of any process) that holds the lease
/// of a fragment; then it renders the fragment itself.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting lookup asks again.
const LEASE_POLL: Duration = Duration::from_millis(10);

/// Askama's runtime values: `template.render_with_values(&sweeper)` renders with this sweeper
/// instead of the process-wide default.
impl askama::Values for Sweeper {
    fn get_value<'a>(&'a self, key: &str) -> Option<&'a dyn std::any::Any> {
        (key == crate::VALUES_KEY).then_some(self as &dyn std::any::Any)
    }
}

/// Lets a sweeper sit in Askama's value collections next to other runtime values:
/// `template.render_with_values(&(VALUES_KEY, sweeper.clone()))`.
impl askama::Value for Sweeper {
    fn ref_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
