//! The sweeper handle: versions, fragment keys, invalidation and the single-fragment path.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Embedded};
use crate::by_fragment::{ByFragment, FragmentStats};
use crate::holes::HoleTable;
use crate::http_cache::HttpCaches;
use crate::io::{self, Blocking};
use crate::keys::{KeyParts, KeySpace, Version};
use crate::meter::{Meter, Metrics, Warnings};
use crate::purge::Purger;
use crate::session::Session;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::{FragmentStore, ReadFrom};
use crate::versions::Versions;
use crate::{ModelRef, Result, Sweepable, clock};

/// The default bound of the embedded backend: 64 MiB.
const DEFAULT_EMBEDDED_BYTES: u64 = 64 * 1024 * 1024;

/// The default namespace, the first component of every key.
const DEFAULT_NAMESPACE: &str = "cs";

/// The shared handle of a cache: build one at start-up, keep it in your application's state,
/// take a [`Scope`](crate::Scope) from it for each request, and invalidate records through it
/// after each write. Cheap to clone: clones share the backend and the counters. See
/// [`Scope::fragment`](crate::Scope::fragment) for an example.
#[derive(Clone, Debug)]
pub struct Sweeper {
    pub(crate) inner: Arc<Inner>,
    /// A scope's own counters, kept in addition to the shared ones (see [`Sweeper::scope`]):
    /// `None` on the shared handle, `Some` on a scope's and its renders' handles.
    pub(crate) scope: Option<Arc<Stats>>,
    /// The page render this handle belongs to, if any (see [`Scope::render`](crate::Scope)).
    pub(crate) session: Option<Arc<Session>>,
    /// The digest of the templates being rendered through this handle, for fragment keys.
    pub(crate) digest: &'static str,
    /// When this handle's data began to be read (see [`Sweeper::scope`]), on [`clock`].
    pub(crate) began: Option<u64>,
    /// How this handle's renders use the cache (see [`Scope::debug`](crate::Scope::debug) and
    /// [`Scope::uncached`](crate::Scope::uncached)).
    pub(crate) mode: Mode,
    /// The holes of the page render this handle belongs to, if any (see [`crate::Holes`]).
    pub(crate) holes: Option<Arc<HoleTable>>,
}

/// How a render uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Serves what the cache holds and stores what it renders.
    Cached,
    /// Serves what the cache holds, marked, and stores nothing.
    Debug,
    /// Neither looks anything up nor stores anything: every block is rendered.
    Uncached,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    /// The backend again, when it is the embedded one: fragments are kept there as objects.
    pub(crate) embedded: Option<Embedded>,
    pub(crate) keys: KeySpace,
    stats: Stats,
    warnings: Warnings,
    by_fragment: ByFragment,
    metrics: Metrics,
    pub(crate) versions: Versions,
    pub(crate) store: FragmentStore,
    /// The HTTP caches in front, if the application has any.
    pub(crate) http_caches: Option<HttpCaches>,
}

/// Configures a [`Sweeper`].
#[derive(Debug, Default)]
#[must_use]
pub struct SweeperBuilder {
    namespace: Option<String>,
    backend: Option<(Arc<dyn Backend>, Option<Embedded>)>,
    l1_bytes: Option<u64>,
    clock_skew: Duration,
    http_caches: Option<HttpCaches>,
}

impl SweeperBuilder {
    /// The first component of every key (default `cs`): give two applications sharing one
    /// memcached different namespaces and they never see each other's versions or fragments.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Where fragments and counters live (default: an [`Embedded`] cache of 64 MiB). A backend
    /// shared with another sweeper is passed as its `Arc<dyn Backend>`
    /// ([`Sweeper::backend`]), or as a clone of the [`Embedded`] (which then keeps fragments
    /// as objects, not encoded: only a backend passed as an `Embedded` does).
    pub fn backend<B: Backend + 'static>(mut self, backend: B) -> Self {
        let embedded = (&backend as &dyn std::any::Any)
            .downcast_ref::<Embedded>()
            .cloned();
        self.backend = Some((Arc::new(backend), embedded));
        self
    }

    /// Bounds the process-local L1 of fragments in front of a remote backend; 0 turns it off.
    /// By default it holds 32 MiB in front of a remote backend and is off in front of a local
    /// one. It never serves stale content: a fragment key's content never changes.
    pub fn l1(mut self, max_bytes: u64) -> Self {
        self.l1_bytes = Some(max_bytes);
        self
    }

    /// How far apart the clocks of the processes sharing the cache may be (default zero: the
    /// processes of one host share its clock). Across hosts, give the bound your clock
    /// synchronisation keeps (NTP on a LAN: a few milliseconds): a larger value stores a little
    /// less right after each invalidation, a smaller one may store stale content ([Never
    /// stale](crate#never-stale)).
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// The HTTP caches in front of the application (Varnish, a CDN): pages the same for
    /// everyone are then [`Caching::Shared`](crate::http_cache::Caching::Shared), tagged with
    /// the records they show, and every invalidation purges its records' tags from each cache
    /// after raising their counters, before it returns (see [`crate::http_cache`]).
    pub fn http_caches(mut self, caches: HttpCaches) -> Self {
        self.http_caches = Some(caches);
        self
    }

    /// Checks the configuration and builds the sweeper.
    pub fn build(self) -> Result<Sweeper> {
        if self
            .http_caches
            .as_ref()
            .is_some_and(|caches| caches.purge_to.is_empty())
        {
            return Err(crate::Error::Config(
                "http_caches: purge_to names no cache, so nothing would purge a shared page"
                    .to_owned(),
            ));
        }
        let keys = KeySpace::new(self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE))?;
        let (backend, embedded) = self.backend.unwrap_or_else(|| {
            let embedded = Embedded::new(DEFAULT_EMBEDDED_BYTES);
            (Arc::new(embedded.clone()), Some(embedded))
        });
        let l1_bytes = self.l1_bytes.unwrap_or(if backend.is_local() {
            0
        } else {
            crate::l1::DEFAULT_L1_BYTES
        });
        let metrics = Metrics::new(backend.name());
        Ok(Sweeper {
            inner: Arc::new(Inner {
                store: FragmentStore::new(l1_bytes, self.clock_skew),
                versions: Versions::new(self.http_caches.as_ref().map(Purger::start)),
                backend,
                embedded,
                keys,
                stats: Stats::default(),
                warnings: Warnings::default(),
                by_fragment: ByFragment::default(),
                metrics,
                http_caches: self.http_caches,
            }),
            scope: None,
            session: None,
            digest: "",
            began: None,
            mode: Mode::Cached,
            holes: None,
        })
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

    /// A sweeper on a Redis (or Valkey) server: `redis://127.0.0.1:6379`.
    #[cfg(feature = "redis")]
    pub fn redis(url: &str) -> Result<Sweeper> {
        Self::builder()
            .backend(crate::backend::Redis::from_url(url)?)
            .build()
    }

    /// A sweeper on a Redis Cluster, from one or more seed nodes, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    #[cfg(feature = "redis")]
    pub fn redis_cluster(urls: &str) -> Result<Sweeper> {
        Self::builder()
            .backend(crate::backend::Redis::cluster(urls)?)
            .build()
    }

    /// The backend in use (clone the `Arc` to share it with another sweeper).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The counters so far, of everything done through this sweeper and all its scopes (a
    /// [`Scope`](crate::Scope) has counters of its own).
    pub fn stats(&self) -> StatsSnapshot {
        self.scope
            .as_deref()
            .unwrap_or(&self.inner.stats)
            .snapshot()
    }

    /// Hits and misses by fragment name since the sweeper was built, sorted by name: a
    /// block's name (the filter's third argument, or the first key part given to
    /// [`Scope::fragment`](crate::Scope::fragment)), or the record's model for a fragment without one. The
    /// first 256 names are counted apart, later ones together under `(other)`.
    ///
    /// ```
    /// # use askama::Template;
    /// # #[derive(cachesweeper::Sweepable)] struct Post { id: i64 }
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"body\") %}x{% endfilter %}")]
    /// struct Page { post: Post }
    ///
    /// let sweeper = cachesweeper::Sweeper::embedded();
    /// for _ in 0..4 {
    ///     sweeper.scope().render(&Page { post: Post { id: 1 } })?;
    /// }
    /// let body = &sweeper.fragment_stats()[0];
    /// assert_eq!((body.name.as_str(), body.hits, body.misses), ("body", 3, 1));
    /// assert_eq!(body.hit_rate(), 0.75);
    /// # Ok::<(), askama::Error>(())
    /// ```
    pub fn fragment_stats(&self) -> Vec<FragmentStats> {
        self.inner.by_fragment.snapshot()
    }

    /// When this handle's data began to be read, for the store rule. A debug or uncached
    /// handle stores nothing.
    pub(crate) fn stamp(&self) -> ReadFrom {
        match self.mode {
            Mode::Cached => ReadFrom::At(self.began.unwrap_or_else(clock::now)),
            Mode::Debug | Mode::Uncached => ReadFrom::StoresNothing,
        }
    }

    /// The counters and backend calls of this handle.
    pub(crate) fn meter(&self) -> Meter<'_> {
        Meter {
            backend: &*self.inner.backend,
            embedded: self.inner.embedded.as_ref(),
            shared: &self.inner.stats,
            by_fragment: &self.inner.by_fragment,
            metrics: &self.inner.metrics,
            scope: self.scope.as_deref(),
            warnings: &self.inner.warnings,
        }
    }

    /// The handle a page render passes to its template.
    pub(crate) fn for_session(
        &self,
        session: Arc<Session>,
        digest: &'static str,
        began: ReadFrom,
        holes: Arc<HoleTable>,
    ) -> Sweeper {
        Sweeper {
            inner: Arc::clone(&self.inner),
            scope: self.scope.clone(),
            session: Some(session),
            digest,
            began: match began {
                ReadFrom::At(at) => Some(at),
                ReadFrom::StoresNothing => self.began,
            },
            mode: self.mode,
            holes: Some(holes),
        }
    }

    /// A fragment's HTML on its way into the store, with this render's hole markers cut out
    /// (see [`HoleTable::cut`]).
    pub(crate) fn cut_holes(&self, html: String) -> (String, Arc<[crate::holes::Placed]>) {
        match &self.holes {
            Some(holes) => holes.cut(html),
            None => (html, Arc::new([])),
        }
    }

    /// This handle with a page render's holes, for an uncached page (which has no session).
    pub(crate) fn with_holes(&self, holes: Arc<HoleTable>) -> Sweeper {
        Sweeper {
            holes: Some(holes),
            ..self.clone()
        }
    }

    /// The record's current version. Costs one round trip for records with a counter (which is
    /// created if missing), none for records versioned by a field alone.
    pub fn version<R: Sweepable + ?Sized>(&self, record: &R) -> Result<Version> {
        let field = record.sweeper_version_field();
        let counter = if R::COUNTER {
            let key = self.counter_key(record);
            let read = io::block_on(self.inner.versions.read(&self.meter(), &[&key]));
            Some(read.into_iter().next().expect("one key")?)
        } else {
            None
        };
        Ok(Version { field, counter })
    }

    /// The key of `record`'s version counter (whether or not it has one).
    pub fn counter_key<R: Sweepable + ?Sized>(&self, record: &R) -> String {
        self.inner
            .keys
            .counter_key(R::sweeper_model(), &record.sweeper_key())
    }

    /// The tag that names `record` to an HTTP cache in front (see [`crate::http_cache`]): what
    /// a shared page showing it is tagged with, and what its invalidation purges. For a
    /// response of the application's own that shows the record (a JSON endpoint, a feed).
    pub fn http_tag<R: Sweepable + ?Sized>(&self, record: &R) -> String {
        KeySpace::http_tag(&self.counter_key(record))
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

    /// Invalidates `record` and the parents it touches: every fragment cached under their
    /// current versions stops being found, and so does every fragment that contains one of
    /// them, at any depth (a record versioned by a field alone has a counter too, for the
    /// fragments that contain it). The record and its parents are raised in one batch (two
    /// round trips on memcached). Call it **after** the change is committed to your database:
    /// the guarantee once it returns `Ok`, and what it does not cover, are in [Never
    /// stale](crate#never-stale).
    ///
    /// If the cache cannot be reached, it returns the error and retries the invalidation in
    /// the background until the cache takes it; until then this process serves and stores
    /// nothing under the record's version.
    ///
    /// With HTTP caches in front ([`SweeperBuilder::http_caches`]), it then purges the
    /// records' tags from them and returns once they are purged, the settle time (50 ms)
    /// after the first: from async code, use `invalidate_async`, which awaits it.
    pub fn invalidate<R: Sweepable + ?Sized>(&self, record: &R) -> Result<()> {
        io::block_on(self.raise(self.invalidation(record)))
    }

    /// [`invalidate`](Self::invalidate) for async callers (feature `tokio`), awaiting the raise.
    /// If the task is dropped before it is done, the invalidation goes to the retry thread,
    /// like one that failed. [`flush`](Self::flush) waits for those on shutdown.
    ///
    /// ```no_run
    /// # #[derive(cachesweeper::Sweepable)] struct Comment { id: i64 }
    /// async fn vote(sweeper: &cachesweeper::Sweeper, comment: &Comment) -> cachesweeper::Result<()> {
    ///     // ... commit the vote, then:
    ///     sweeper.invalidate_async(comment).await
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn invalidate_async<R: Sweepable + ?Sized>(&self, record: &R) -> Result<()> {
        self.raise(self.invalidation(record)).await
    }

    /// Raises the counters of one invalidation, counted as one, then purges them from the
    /// HTTP caches.
    pub(crate) async fn raise(&self, keys: Vec<String>) -> Result<()> {
        let (keys, result) = self.raise_unpurged(keys).await;
        self.purge(&keys).await;
        result
    }

    /// Raises the counters of one invalidation, counted as one: the keys, for the caller to
    /// [`purge`](Self::purge) (queued before it lets go of what others wait for, awaited
    /// after), and the first error.
    pub(crate) async fn raise_unpurged(&self, keys: Vec<String>) -> (Vec<String>, Result<()>) {
        self.meter().invalidation();
        let meter = self.meter();
        self.inner
            .versions
            .raise(&meter, &self.inner.backend, keys)
            .await
    }

    /// Queues the purge of raised counters from the HTTP caches in front, if there are any;
    /// the future waits for it (see [`Versions::purge`]).
    pub(crate) fn purge(&self, raised: &[String]) -> crate::purge::Wait {
        self.inner.versions.purge(raised)
    }

    /// The counters an invalidation of `record` raises.
    fn invalidation<R: Sweepable + ?Sized>(&self, record: &R) -> Vec<String> {
        let mut parents = Vec::new();
        record.sweeper_parents(&mut parents);
        let mut keys: Vec<String> = parents
            .iter()
            .map(|parent| self.inner.keys.counter_key(parent.model, &parent.key))
            .collect();
        keys.push(self.counter_key(record));
        tracing::debug!(model = R::sweeper_model(), key = %record.sweeper_key(), parents = parents.len(), "cachesweeper invalidate");
        keys
    }

    /// The counter key of the record of `model` with key form `key`.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn record_counter_key(&self, model: &str, key: &str) -> String {
        self.inner.keys.counter_key(model, key)
    }

    /// Whether an invalidation that failed is still being retried.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn invalidations_pending(&self) -> bool {
        self.inner.versions.pending()
    }

    /// Invalidates a record known only by reference (model name and key), e.g. from a
    /// database trigger or a message queue. Its parents are not known here, so they are not
    /// raised; fragments that contain it still miss.
    pub fn invalidate_ref(&self, record: &ModelRef) -> Result<()> {
        let key = self.inner.keys.counter_key(record.model, &record.key);
        io::block_on(self.raise(vec![key]))
    }

    /// Waits until every invalidation that failed (or whose async caller was dropped) has
    /// reached the cache, for at most `timeout`: call it on shutdown, after the last write,
    /// so that none is lost with the process. Fails with
    /// [`Error::InvalidationPending`](crate::Error::InvalidationPending) naming a counter
    /// still pending if the time ran out.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        io::block_on(self.inner.versions.flush(&Blocking, timeout))
    }

    /// [`flush`](Self::flush), awaiting instead of blocking (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub async fn flush_async(&self, timeout: Duration) -> Result<()> {
        self.inner.versions.flush(&io::Async, timeout).await
    }
}
