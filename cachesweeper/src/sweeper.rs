//! The sweeper handle: versions, fragment keys, invalidation and the fail-open fragment path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, Embedded, SetItem};
use crate::keys::{KeyParts, KeySpace, Version};
use crate::stats::{Stats, StatsSnapshot};
use crate::{Error, ModelRef, Result, Sweepable, value};

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
    inner: Arc<Inner>,
    /// A scope's own counters, kept in addition to the shared ones (see [`Sweeper::scope`]).
    scope: Option<Arc<Stats>>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn Backend>,
    keys: KeySpace,
    stats: Stats,
    last_warning: AtomicU64,
}

/// Configures a [`Sweeper`].
#[derive(Debug, Default)]
#[must_use]
pub struct SweeperBuilder {
    namespace: Option<String>,
    backend: Option<Arc<dyn Backend>>,
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

    /// Checks the configuration and builds the sweeper.
    pub fn build(self) -> Result<Sweeper> {
        let keys = KeySpace::new(self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE))?;
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(Embedded::new(DEFAULT_EMBEDDED_BYTES)));
        Ok(Sweeper {
            inner: Arc::new(Inner {
                backend,
                keys,
                stats: Stats::default(),
                last_warning: AtomicU64::new(0),
            }),
            scope: None,
        })
    }
}

/// A value never used by a counter before: nanoseconds since the epoch. A counter that was
/// evicted, or lost with a restarted server, is recreated from here, so it cannot come back to a
/// value that an old fragment key carries (that would need more bumps than nanoseconds passed).
fn counter_seed() -> u64 {
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
        }
    }

    /// Counts an event in the shared counters and in this scope's.
    fn count(&self, event: impl Fn(&Stats)) {
        event(&self.inner.stats);
        if let Some(scope) = &self.scope {
            event(scope);
        }
    }

    /// Runs one backend call, counting it as a round trip and, if it fails, as an error.
    fn call<T>(&self, op: impl FnOnce(&dyn Backend) -> Result<T>) -> Result<T> {
        self.count(Stats::round_trip);
        let result = op(&*self.inner.backend);
        if let Err(error) = &result {
            self.count(Stats::error);
            self.warn(error);
        }
        result
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

    fn key_at<R: Sweepable + ?Sized>(
        &self,
        record: &R,
        version: &Version,
        parts: &KeyParts,
    ) -> String {
        self.inner
            .keys
            .fragment_key(R::MODEL, &record.sweeper_key(), version, parts)
    }

    /// Invalidates `record` and the parents it touches, in one atomic round trip: every
    /// fragment cached under their current versions stops being found.
    ///
    /// For a record versioned by a field alone, only its parents are bumped (its own version
    /// changes when the field does). Call it after the change is committed to your database:
    /// a render that starts after this returns sees the new version.
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
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.call(|b| b.incr_many(&keys, 1, counter_seed()))?;
        tracing::debug!(model = R::MODEL, key = %record.sweeper_key(), parents = parents.len(), "cachesweeper invalidate");
        Ok(())
    }

    /// Invalidates a record known only by reference (model name and key), e.g. from a
    /// database trigger or a message queue.
    pub fn invalidate_ref(&self, record: &ModelRef) -> Result<()> {
        let key = self.inner.keys.counter_key(record.model, &record.key);
        self.count(Stats::invalidation);
        self.call(|b| b.incr_many(&[&key], 1, counter_seed()))?;
        Ok(())
    }

    /// The fragment of `record` identified by `parts`: from the cache if it holds one for the
    /// record's current version, else from `render`, stored for `ttl`.
    ///
    /// Fails open: a cache error is counted in [`stats`](Self::stats), logged, and treated as a
    /// miss. Only `render`'s own error is returned, and nothing is stored then.
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
        let ttl = ttl.ttl();
        let key = match ttl {
            Some(_) => self
                .version(record)
                .ok()
                .map(|version| self.key_at(record, &version, parts)),
            None => None,
        };
        if let Some(key) = &key
            && let Some(hit) = self.lookup(key)
        {
            return Ok(hit);
        }
        self.count(Stats::miss);
        tracing::debug!(
            model = R::MODEL,
            key = key.as_deref().unwrap_or("-"),
            "cachesweeper miss"
        );
        let fragment = render()?;
        if let (Some(key), Some(ttl)) = (key, ttl) {
            self.store(&key, &fragment, ttl);
        }
        Ok(fragment)
    }

    /// A usable stored fragment under `key`, counting the hit; `None` on a miss of any kind.
    fn lookup(&self, key: &str) -> Option<String> {
        let stored = self.call(|b| b.get_many(&[key])).ok()?.pop()??;
        let len = stored.len();
        match value::decode(stored) {
            Some(fragment) => {
                self.count(|s| s.hit(len));
                tracing::debug!(key, bytes = len, "cachesweeper hit");
                Some(fragment)
            }
            None => {
                self.count(Stats::corrupt);
                tracing::debug!(
                    key,
                    "cachesweeper: stored value is not a fragment; re-rendering"
                );
                None
            }
        }
    }

    fn store(&self, key: &str, fragment: &str, ttl: Duration) {
        if value::encoded_len(fragment.len()) > self.inner.backend.max_value_len() {
            self.count(Stats::oversized);
            tracing::debug!(
                key,
                bytes = fragment.len(),
                "cachesweeper: fragment too large to store"
            );
            return;
        }
        let bytes = value::encode(fragment);
        let item = SetItem {
            key,
            value: &bytes,
            ttl: Some(ttl),
        };
        if self.call(|b| b.set_many(&[item])).is_ok() {
            self.count(|s| s.written(bytes.len()));
        }
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
