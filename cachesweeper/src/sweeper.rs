//! The sweeper handle: versions, fragment keys, invalidation and the single-fragment path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backend::{Backend, Embedded};
use crate::flight::{Claim, Flights};
use crate::fragments;
use crate::keys::{KeyParts, KeySpace, Version};
use crate::l1::L1;
use crate::retry::{self, Retry};
use crate::session::Session;
use crate::stats::{Stats, StatsSnapshot};
use crate::value::Dep;
use crate::{Error, ModelRef, Result, Sweepable, TemplateDigest, clock};

/// The default bound of the embedded backend: 64 MiB.
pub const DEFAULT_EMBEDDED_BYTES: u64 = 64 * 1024 * 1024;

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
    /// When this handle's data began to be read (see [`Sweeper::scope`]), on [`clock`].
    pub(crate) began: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: KeySpace,
    stats: Stats,
    last_warning: AtomicU64,
    pub(crate) l1: Option<L1>,
    pub(crate) flights: Flights,
    /// The clock skew allowed between processes, in nanoseconds.
    pub(crate) clock_skew: u64,
    pub(crate) retry: Retry,
    /// The versions last found in each fragment, by the fragment's key without its version:
    /// read with the record's own version, they let a warm page check its fragments in the
    /// same round trip.
    pub(crate) dep_hints: HintMap,
}

/// Configures a [`Sweeper`].
#[derive(Debug, Default)]
#[must_use]
pub struct SweeperBuilder {
    namespace: Option<String>,
    backend: Option<Arc<dyn Backend>>,
    l1_bytes: Option<u64>,
    clock_skew: Duration,
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

    /// How far apart the clocks of the processes sharing the cache may be (default zero: the
    /// processes of one host share its clock). Across hosts, give the bound your clock
    /// synchronisation keeps (NTP on a LAN: a few milliseconds). A fragment is stored only if
    /// its records were last invalidated more than this before the render began reading its
    /// data (see [`Sweeper::invalidate`]), so a larger value stores a little less right after
    /// each invalidation, and never anything stale.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
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
                clock_skew: u64::try_from(self.clock_skew.as_nanos()).unwrap_or(u64::MAX),
                retry: Retry::default(),
                dep_hints: HintMap::default(),
                backend,
                keys,
                stats: Stats::default(),
                last_warning: AtomicU64::new(0),
            }),
            scope: None,
            session: None,
            digest: "",
            began: None,
        })
    }
}

/// The counter keys last found inside one fragment.
pub(crate) type Hints = Arc<[Arc<str>]>;

/// The dependency hints of up to [`HintMap::CAPACITY`] fragments. Written by hand rather than on
/// moka: it is read on every fragment lookup, where moka's bookkeeping costs more than the rest
/// of a hit, and losing hints only costs a round trip, so when full it simply starts over.
#[derive(Debug, Default)]
pub(crate) struct HintMap(std::sync::RwLock<HashMap<u64, Hints>>);

impl HintMap {
    const CAPACITY: usize = 100_000;

    pub(crate) fn get(&self, key: &u64) -> Option<Hints> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: u64, hints: Hints) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(key, hints);
    }
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

    /// A handle for one request: take it **before** reading the page's data. It notes when
    /// that read began, which is what lets a render store what it renders without ever storing
    /// data older than an invalidation (see [`invalidate`](Self::invalidate)); and its
    /// [`stats`](Self::stats) count only what is done through it (and its clones), while the
    /// shared counters still count everything.
    ///
    /// Without a scope, [`render`](Self::render) and each fragment take the moment they are
    /// called as the start of the read: correct for data read inside the render, and for data
    /// read before it only if no invalidation can fall in between.
    ///
    /// ```
    /// let sweeper = cachesweeper::Sweeper::embedded();
    /// let request = sweeper.scope(); // first, then:
    /// // ... load the rows, build the page, request.render(&page) ...
    /// let header = format!("hits={} misses={}", request.stats().hits, request.stats().misses);
    /// assert_eq!(header, "hits=0 misses=0");
    /// ```
    pub fn scope(&self) -> Sweeper {
        Sweeper {
            inner: Arc::clone(&self.inner),
            scope: Some(Arc::new(Stats::default())),
            session: self.session.clone(),
            digest: self.digest,
            began: Some(clock::now()),
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
        let now = clock::now() / 1_000_000_000;
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
            Some(self.read_versions(&[&key]).pop().expect("one key")?)
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
        self.inner
            .keys
            .counter_key(R::sweeper_model(), &record.sweeper_key())
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
            .fragment_key(R::sweeper_model(), &record.sweeper_key(), version, parts)
    }

    /// The identity of a fragment without its version: where its dependency hints are kept.
    pub(crate) fn hint_key(&self, model: &str, record_key: &str, parts: &KeyParts) -> u64 {
        self.inner.keys.hint_key(model, record_key, parts)
    }

    /// Invalidates `record` and the parents it touches: every fragment cached under their
    /// current versions stops being found, and so does every fragment that contains one of
    /// them, at any depth. The record and its parents are raised in one batch (two round trips
    /// on memcached). Call it **after** the change is committed to your database.
    ///
    /// For a record versioned by a field alone, only its parents are raised (its own version
    /// changes when the field does).
    ///
    /// # The guarantee
    ///
    /// Once `invalidate(record)` has returned `Ok`, called after the write committed, no page
    /// rendered from then on, in any process sharing the cache, shows that record as it was
    /// before the write; and no render that began earlier can leave such content where later
    /// renders find it. It rests on three things:
    ///
    /// 1. **Versions are times.** Raising a counter sets it to at least the current time (in
    ///    nanoseconds; atomically, and never backwards), so a version says when its record was
    ///    last invalidated.
    /// 2. **A render stores only what its data is known to be newer than.** A render knows when
    ///    it began reading its data: when its [`scope`](Self::scope) was taken, or, without one,
    ///    when [`render`](Self::render) (or the fragment) was called. A fragment is stored only
    ///    if its record's version is older than that (by more than
    ///    [`clock_skew`](SweeperBuilder::clock_skew)), and so is everything rendered inside it.
    ///    Otherwise it is served to this render and stored nowhere, nor handed to other renders.
    ///    However late a render learns its versions (slow passes, lease waits), it cannot store
    ///    rows read before a write under the version that follows it.
    /// 3. **A fragment remembers the versions of the records inside it,** and a hit is served
    ///    only while they are all current. A vote on a comment makes every fragment that
    ///    contains that comment (the list, the article, the blog front page) miss, without any
    ///    `touches` declaration.
    ///
    /// What it needs of you, and what happens otherwise:
    ///
    /// - `invalidate` after the commit. Called before, a render in between reads the old row
    ///   and stores it under the new version.
    /// - A scope taken before the page's data is read (or the data read inside the render).
    ///   A page rendered without a scope from data read earlier is fresh only if no
    ///   invalidation lands between that read and the call.
    /// - Clocks of the processes within [`clock_skew`](SweeperBuilder::clock_skew) of each
    ///   other (zero by default: one host). A process whose clock runs behind by more may store
    ///   a fragment rendered from rows read before an invalidation that another process
    ///   stamped; it is found until its record changes again or its time to live ends.
    /// - A record rendered *directly* in a fragment (not in a nested `cachesweeper` block of
    ///   its own) is not among the versions that fragment remembers: declare
    ///   `#[sweeper(touches = Parent)]`, or wrap it in a block.
    ///
    /// If the cache cannot be reached, `invalidate` returns the error, and the invalidation is
    /// not forgotten: it is retried in the background until the cache takes it, and until then
    /// this process serves and stores nothing under the record's version. Other processes learn
    /// of it when the retry lands: if the cache server answers them before it answers this
    /// process, they may serve the old fragments until then (at most a second or so after the
    /// server is reachable again). An invalidation lost with the whole process is lost; a
    /// cache server restarted or an evicted counter loses nothing (the counter comes back newer
    /// than every render in flight).
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
        tracing::debug!(model = R::sweeper_model(), key = %record.sweeper_key(), parents = parents.len(), "cachesweeper invalidate");
        self.raise(keys)
    }

    /// Invalidates a record known only by reference (model name and key), e.g. from a
    /// database trigger or a message queue. Its parents are not known here, so they are not
    /// raised; fragments that contain it still miss.
    pub fn invalidate_ref(&self, record: &ModelRef) -> Result<()> {
        self.count(Stats::invalidation);
        self.raise(vec![self.inner.keys.counter_key(record.model, &record.key)])
    }

    /// Raises counters to the current time; those that fail are kept and retried.
    fn raise(&self, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let results = self.call_each(|b| b.raise_each(&refs, clock::now()));
        let mut first_error = None;
        let failed: Vec<String> = keys
            .iter()
            .zip(results)
            .filter_map(|(key, result)| {
                let error = result.err()?;
                first_error.get_or_insert(error);
                Some(key.clone())
            })
            .collect();
        match first_error {
            None => Ok(()),
            Some(error) => {
                if self.inner.retry.add(failed) {
                    spawn_retry(Arc::downgrade(&self.inner));
                }
                Err(error)
            }
        }
    }

    /// The fragment of `record` identified by `parts`: from the cache if it holds one for the
    /// record's current version, else from `render`, stored for `ttl`.
    ///
    /// Fails open: a cache error is counted in [`stats`](Self::stats), logged, and treated as a
    /// miss. Only `render`'s own error is returned, and nothing is stored then. Inside
    /// [`render`](Self::render) the lookups of a whole page are batched; outside it each call
    /// costs a version lookup (for counter-versioned records, with those of the records it
    /// contained last time) and a fragment lookup.
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

    /// One fragment, on its own: one batch of versions (the record's, and those of the records
    /// it contained last time), a fragment lookup, and a store on a miss.
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
        let began = self.began.unwrap_or_else(clock::now);
        let record_key = record.sweeper_key();
        let hint_key = self.hint_key(R::sweeper_model(), &record_key, parts);
        let counter_key = R::COUNTER.then(|| self.counter_key(record));
        let mut versions = HashMap::new();
        let mut wanted: Vec<&str> = counter_key.iter().map(String::as_str).collect();
        let hints = self.inner.dep_hints.get(&hint_key);
        wanted.extend(hints.iter().flat_map(|h| h.iter()).map(|k| &**k));
        let hints = hints.as_ref();
        if !wanted.is_empty() {
            for (key, value) in wanted.iter().zip(self.read_versions_at(&wanted, began)) {
                if let Ok(value) = value {
                    versions.insert((*key).to_owned(), value);
                }
            }
        }
        let own = match &counter_key {
            None => None,
            Some(key) => match versions.get(key) {
                Some(&version) => Some(Dep {
                    counter_key: key.as_str().into(),
                    version,
                }),
                None => {
                    // The version could not be learnt: render, and store nothing (nor anything
                    // around it).
                    self.count_miss(R::sweeper_model(), None);
                    let (html, ..) = fragments::within(render);
                    fragments::note(None, &[], false);
                    return html;
                }
            },
        };
        let version = Version {
            field: record.sweeper_version_field(),
            counter: own.as_ref().map(|d| d.version),
        };
        let key = self.key_at(record, &version, parts);
        let mut found = self.fetch_fragments(&[key.as_str()]);
        self.verify(&mut found, &mut versions);
        if let Some(stored) = found.pop().flatten() {
            self.remember_hints(hint_key, hints, &stored.deps);
            self.count_hit(&key, &stored.html);
            fragments::note(own.as_ref(), &stored.deps, true);
            return Ok(
                Arc::try_unwrap(stored).map_or_else(|shared| shared.html.clone(), |s| s.html)
            );
        }
        let leader = match self.inner.flights.claim(&key) {
            Claim::Done(stored) => {
                fragments::let_go(std::iter::once(key.as_str()));
                let mut handed = [Some(stored)];
                self.verify(&mut handed, &mut versions);
                if let [Some(stored)] = handed {
                    self.count_coalesced(&key, &stored.html);
                    fragments::note(own.as_ref(), &stored.deps, true);
                    return Ok(stored.html.clone());
                }
                None
            }
            Claim::Leader(leader) => Some(leader),
            Claim::Alone => None,
        };
        self.count_miss(R::sweeper_model(), Some(&key));
        let (rendered, deps, inner) = fragments::within(render);
        let html = match rendered {
            Ok(html) => html,
            Err(error) => {
                fragments::note(None, &[], false);
                self.release(&[&key]);
                return Err(error);
            }
        };
        self.remember_hints(hint_key, hints, &deps);
        let finished =
            self.finish_fragment(&key, html, ttl, own.as_ref(), (deps, inner), began, leader);
        match finished.write {
            Some(write) => self.store(vec![write]),
            None => self.release(&[&key]),
        }
        Ok(finished.stored.html.clone())
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
            self.inner.dep_hints.insert(hint_key, keys);
        }
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

    pub(crate) fn count_miss(&self, model: &str, key: Option<&str>) {
        self.count(Stats::miss);
        tracing::debug!(model, key = key.unwrap_or("-"), "cachesweeper miss");
    }
}

/// Retries failed invalidations until the backend takes them, or the sweeper is dropped.
fn spawn_retry(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("cachesweeper-retry".into())
        .spawn(move || {
            let mut wait = retry::FIRST_WAIT;
            loop {
                std::thread::sleep(wait);
                let Some(inner) = inner.upgrade() else { return };
                let keys = inner.retry.snapshot();
                let refs: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                let results = inner.backend.raise_each(&refs, clock::now());
                let done: Vec<(String, u64)> = keys
                    .into_iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(k, _)| k)
                    .collect();
                if !done.is_empty() {
                    tracing::info!(
                        invalidations = done.len(),
                        "cachesweeper: failed invalidations retried"
                    );
                }
                if inner.retry.settle(&done) {
                    return;
                }
                wait = (wait * 2).min(retry::MAX_WAIT);
            }
        });
    if spawned.is_err() {
        tracing::error!("cachesweeper: cannot start a thread to retry failed invalidations");
    }
}

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
