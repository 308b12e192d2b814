//! The one place that talks to Redis (and Valkey, which speaks the same protocol): a
//! standalone server or a Redis Cluster.
//!
//! - `conn.rs`: connections, one pipeline per server per batch, breakers, deadlines, slots.
//! - `ops.rs`: the operations (written once, as `async fn`s) and their Lua scripts.
//! - `../io_thread.rs`: the thread whose runtime owns the connections and runs the operations.
//!
//! Keys get a hash tag around their record (`ns|v|{model|key}`, `ns|f|{model|key}|...`), on
//! standalone too, so that data moves unchanged between the two: on a cluster a record's
//! counter and fragments share a slot, as they share a server on memcached (the record part is
//! `keys::routing_part`).

mod conn;
mod ops;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;

use self::conn::{Connections, Kind, Mode, Request};
use super::io_thread::IoThread;
use super::remote::{Remote, remote_setters};
use super::{Backend, BoxFuture, Leased, SetItem};
use crate::keys::routing_part;
use crate::{Error, Result};

/// The longest time to live sent to Redis (about 31,700 years): Redis refuses an expiry whose
/// time in milliseconds overflows, and a longer one is as good as this.
const MAX_TTL_MS: u64 = 1_000_000_000_000_000;

/// A Redis or Valkey server, or a Redis Cluster.
///
/// Same semantics as the memcached backend, through the same conformance suite:
/// counters raised atomically by a Lua script (never lowered, created from the clock when
/// missing), a page's reads in one `MGET` (one per slot on a cluster, in one pipeline per
/// node), stores in one pipeline of `SET … PX`, leases against stampedes (a placeholder set
/// with `NX` semantics by a script; released only while it is still this process's
/// placeholder), a deadline on every exchange and a circuit breaker per server: any failure is
/// a miss, and a dead server costs one timeout per retry window.
///
/// Connections are made at first use (start-up never waits on the cache) and live on an I/O
/// thread of the backend's own, which blocking and async callers alike hand their batches to.
///
/// ```no_run
/// use cachesweeper::backend::Redis;
///
/// let standalone = Redis::from_url("redis://127.0.0.1:6379")?;
/// let cluster = Redis::cluster("redis://10.0.0.1:7000,redis://10.0.0.2:7000")?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
///
/// Run Redis as a cache: `maxmemory` with an `allkeys-lru` (or `allkeys-lfu`) policy. Under
/// `noeviction` a full server refuses stores, and under the `volatile-*` policies fragments
/// stored without a time to live are never evicted.
#[derive(Clone)]
pub struct Redis {
    conns: Arc<Connections>,
    max_value_len: usize,
    /// This backend's lease placeholder: [`ops::PLACEHOLDER_PREFIX`] and a random token.
    placeholder: Arc<[u8]>,
    /// Last, so that it goes after the connections that live on it.
    io: Arc<IoThread>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("servers", &self.conns.name())
            .finish()
    }
}

/// Configures a [`Redis`] backend: a server ([`url`](Self::url)) or a cluster's seed nodes
/// ([`cluster_node`](Self::cluster_node)), with memcached's defaults (see each setter).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisBuilder {
    url: Option<String>,
    cluster: Vec<String>,
    remote: Remote,
}

remote_setters!(RedisBuilder);

impl RedisBuilder {
    /// A standalone server: `redis://[:password@]host[:port][/db]`, `rediss://…` (TLS, feature
    /// `redis-tls`) or `redis+unix:///path`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// A seed node of a Redis Cluster (`redis://host:port`); give one or more. The others are
    /// found from it.
    pub fn cluster_node(mut self, url: impl Into<String>) -> Self {
        self.cluster.push(url.into());
        self
    }

    /// Builds the backend and starts its I/O thread. Nothing is dialed: connections are made
    /// at first use, so a server that is down does not fail this call.
    pub fn build(self) -> Result<Redis> {
        let bad = |url: &str, error: redis::RedisError| {
            Error::Config(format!(
                "redis URL {:?}: {error}{}",
                redacted(url),
                tls_hint(url)
            ))
        };
        let (io, name, mode) = match (self.url, self.cluster.is_empty()) {
            (Some(url), true) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| bad(&url, e))?;
                let io = IoThread::start(&format!("redis {}", redacted(&url)))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.remote.connect_timeout))
                    .set_response_timeout(Some(self.remote.io_timeout))
                    // One attempt per reconnection: the breaker paces them, not a backoff
                    // that would hold a request for seconds.
                    .set_number_of_retries(0);
                // Made inside the I/O thread's runtime: the lazy connection spawns its tasks
                // there, not on the caller's runtime.
                let manager = {
                    let _guard = io.handle.enter();
                    ConnectionManager::new_lazy_with_config(client, config)
                }
                .map_err(|e| bad(&url, e))?;
                (io, redacted(&url), Mode::Standalone(manager))
            }
            (None, false) => {
                let name = self
                    .cluster
                    .iter()
                    .map(|url| redacted(url))
                    .collect::<Vec<_>>()
                    .join(",");
                let client = ClusterClientBuilder::new(self.cluster.iter().map(String::as_str))
                    .connection_timeout(self.remote.connect_timeout)
                    .response_timeout(self.remote.io_timeout)
                    // One retry: enough to follow a MOVED after a resharding; the exchange's
                    // deadline bounds the rest.
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(50)
                    .build()
                    .map_err(|e| bad(&name, e))?;
                let io = IoThread::start(&format!("redis {name}"))?;
                (io, name, Mode::Cluster(Box::new(client)))
            }
            (Some(_), false) => {
                return Err(Error::Config(
                    "redis: give a server URL or cluster nodes, not both".into(),
                ));
            }
            (None, true) => {
                return Err(Error::Config(
                    "redis: give a server URL or at least one cluster node".into(),
                ));
            }
        };
        Ok(Redis {
            conns: Arc::new(Connections::new(name, self.remote, mode)),
            max_value_len: self.remote.max_value_len,
            placeholder: placeholder(),
            io: Arc::new(io),
        })
    }
}

/// A URL without its password, for logs and errors.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() => {
            format!("{scheme}://{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn tls_hint(url: &str) -> &'static str {
    if cfg!(feature = "redis-tls") || !url.trim_start().starts_with("rediss://") {
        ""
    } else {
        " (rediss:// needs cachesweeper's `redis-tls` feature)"
    }
}

/// A lease placeholder unique to this backend: a random token from std's hasher keys, the
/// process id and the time.
fn placeholder() -> Arc<[u8]> {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut token = ops::PLACEHOLDER_PREFIX.to_vec();
    token.extend_from_slice(format!("{:016x}", hasher.finish()).as_bytes());
    token.into()
}

/// The key as stored in Redis: the record's part in a hash tag (see the module docs). A key
/// whose record part is the whole key (a hashed, too long key) has no tag.
fn tagged(key: &str) -> String {
    let record = routing_part(key);
    if record.len() == key.len() {
        return key.to_owned();
    }
    // `namespace|v|` or `namespace|f|`: the record part starts after the second separator.
    let start = key.find('|').map_or(0, |i| i + 3);
    debug_assert!(key[start..].starts_with(record), "{key}");
    let end = start + record.len();
    let mut out = String::with_capacity(key.len() + 2);
    out.push_str(&key[..start]);
    out.push('{');
    out.push_str(record);
    out.push('}');
    out.push_str(&key[end..]);
    out
}

fn tagged_all(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| tagged(key)).collect()
}

fn names(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

/// A time to live in milliseconds: rounded up (never 0, which Redis refuses) and clamped.
fn px(ttl: Duration) -> u64 {
    let ms = ttl
        .as_millis()
        .saturating_add(u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000)));
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

fn each<T>(count: usize) -> impl FnOnce(Error) -> Vec<Result<T>> {
    move |error| super::batch::all_err(count, error)
}

impl Redis {
    /// A builder, for a cluster, timeouts, the circuit breaker and the value size limit.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// A standalone server: `redis://host:port` (see [`RedisBuilder::url`]).
    pub fn from_url(url: &str) -> Result<Redis> {
        Redis::builder().url(url).build()
    }

    /// A Redis Cluster, from one or more seed nodes, comma-separated:
    /// `redis://10.0.0.1:7000,redis://10.0.0.2:7000`.
    pub fn cluster(urls: &str) -> Result<Redis> {
        urls.split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .fold(Redis::builder(), RedisBuilder::cluster_node)
            .build()
    }

    /// How many pipelines this backend has sent (to any server, on a cluster to each node
    /// separately; reading a cluster's slot map counts too). `Sweeper::stats().round_trips`
    /// counts batches; this counts what went over the network.
    pub fn round_trips(&self) -> u64 {
        self.conns.round_trips()
    }

    fn conns(&self) -> Arc<Connections> {
        Arc::clone(&self.conns)
    }

    fn sets(items: &[SetItem<'_>]) -> Vec<Request> {
        items
            .iter()
            .map(|item| {
                let key = tagged(item.key);
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(item.value);
                if let Some(ttl) = item.ttl {
                    set.arg("PX").arg(px(ttl));
                }
                Request {
                    key,
                    kind: Kind::Cmd(set),
                }
            })
            .collect()
    }
}

impl Backend for Redis {
    fn name(&self) -> &str {
        self.conns.name()
    }

    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        let placeholder = Arc::clone(&self.placeholder);
        let task = ops::get_leased(self.conns(), tagged_all(keys), lease, placeholder);
        Box::pin(self.io.run(task, each(keys.len())))
    }

    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        let task = ops::set_many(self.conns(), Self::sets(items));
        Box::pin(self.io.run(task, Err))
    }

    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        let task = ops::incr_each(self.conns(), tagged_all(keys), names(keys), delta, initial);
        Box::pin(self.io.run(task, each(keys.len())))
    }

    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        let task = ops::raise_each(self.conns(), tagged_all(keys), names(keys), floor);
        Box::pin(self.io.run(task, each(keys.len())))
    }

    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        let placeholder = Arc::clone(&self.placeholder);
        let task = ops::release_leases(self.conns(), tagged_all(keys), placeholder);
        Box::pin(self.io.run(task, Err))
    }

    fn fresh_counter(&self, now: u64) -> u64 {
        now | 1
    }

    fn max_value_len(&self) -> usize {
        self.max_value_len
    }

    fn is_local(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySpace;
    use crate::{KeyParts, Version};

    #[test]
    fn a_records_keys_share_a_hash_tag() {
        let keys = KeySpace::new("blog").unwrap();
        let counter = tagged(&keys.counter_key("app::Comment", "4{2}"));
        let version = Version {
            field: None,
            counter: Some(7),
        };
        let fragment =
            tagged(&keys.fragment_key("app::Comment", "4{2}", &version, &KeyParts::new()));
        assert_eq!(counter, "blog|v|{app::Comment|4{2}}");
        assert!(
            fragment.starts_with("blog|f|{app::Comment|4{2}}|c7|"),
            "{fragment}"
        );
        // A `}` inside the record key cuts the tag short, at the same place in both.
        assert_eq!(
            conn::slot(counter.as_bytes()),
            conn::slot(fragment.as_bytes())
        );
        assert_eq!(tagged("blog|h|abc"), "blog|h|abc");
    }

    #[test]
    fn times_to_live_in_milliseconds() {
        assert_eq!(px(Duration::from_secs(1)), 1_000);
        assert_eq!(px(Duration::from_micros(1)), 1);
        assert_eq!(px(Duration::from_micros(1_500)), 2);
        assert_eq!(px(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn urls() {
        assert_eq!(
            redacted("redis://:secret@cache:6379/0"),
            "redis://cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        assert!(Redis::from_url("memcache://x:1").is_err());
        assert!(Redis::builder().build().is_err());
        let both = Redis::builder()
            .url("redis://a:1")
            .cluster_node("redis://b:1");
        assert!(both.build().is_err());
        // Nothing is dialed when built.
        let cluster = Redis::cluster("redis://127.0.0.1:1, redis://127.0.0.1:2").unwrap();
        assert_eq!(cluster.name(), "redis://127.0.0.1:1,redis://127.0.0.1:2");
    }
}
