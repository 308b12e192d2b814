//! The one place that talks to memcached.
//!
//! Built on the `memcache` crate's meta-protocol client (`memcache::exp`), not its classic
//! client: the meta client pipelines a batch into one round trip per server, bounds every
//! exchange with a deadline, dials lazily (so start-up never waits on the cache), and its
//! arithmetic command creates a missing counter atomically (`ma` with `N`/`J`), which is what
//! version counters need. The classic client's `add` cannot even report whether it stored.

use std::time::Duration;

use memcache::exp::{self, Arithmetic, Get, MetaClient, Set, Ttl};

use super::{Backend, SetItem};
use crate::{Error, Result};

/// How long counters live in memcached: refreshed on every bump, and a counter recreated after
/// expiry starts from a clock-seeded value, so expiry only costs misses, never stale content.
const COUNTER_TTL_SECS: u32 = 30 * 24 * 60 * 60;

/// memcached's default item size limit (`-I 1m`), less room for the key and item header.
const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 - 512;

/// A memcached server, or several with keys spread by rendezvous hashing.
///
/// ```no_run
/// use cachesweeper::backend::Memcached;
///
/// let cache = Memcached::from_url("memcache://127.0.0.1:11211")?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
#[derive(Clone)]
pub struct Memcached {
    client: MetaClient,
    name: String,
    max_value_len: usize,
}

impl std::fmt::Debug for Memcached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memcached")
            .field("servers", &self.name)
            .finish()
    }
}

/// Configures a [`Memcached`] backend.
///
/// Defaults suit a cache on the same LAN: 100 ms to connect, 200 ms for a whole exchange. A cache
/// that answers slower than that is treated as down for that call, and the fragment is rendered.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcachedBuilder {
    servers: Vec<String>,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_idle: usize,
    max_value_len: usize,
}

impl Default for MemcachedBuilder {
    fn default() -> Self {
        MemcachedBuilder {
            servers: Vec::new(),
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(200),
            max_idle: 16,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

impl MemcachedBuilder {
    /// Adds a server, as `host:port` or `memcache://host:port`.
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.servers.push(server.into());
        self
    }

    /// How long dialing a server may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one exchange (a whole batch: write and read) may take.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// How many idle connections to keep per server.
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = max_idle;
        self
    }

    /// The largest value to store; larger fragments are rendered and not stored. Match it to
    /// memcached's `-I` setting.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes;
        self
    }

    /// Builds the backend. Addresses are resolved now; connections are made at first use, so a
    /// server that is down does not fail this call.
    pub fn build(self) -> Result<Memcached> {
        if self.servers.is_empty() {
            return Err(Error::Config("memcached needs at least one server".into()));
        }
        let addrs = self
            .servers
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>>>()?;
        let client = MetaClient::builder()
            .connect_timeout(Some(self.connect_timeout))
            .io_timeout(Some(self.io_timeout))
            .max_idle(self.max_idle)
            .connect_multiple(addrs.iter().map(String::as_str))
            .map_err(|e| Error::Config(format!("memcached servers {addrs:?}: {e}")))?;
        Ok(Memcached {
            client,
            name: addrs.join(","),
            max_value_len: self.max_value_len,
        })
    }
}

/// Parses `memcache://host:port`, `host:port` or `host` (port 11211).
fn parse_server(server: &str) -> Result<String> {
    let bad = |why: &str| Error::Config(format!("memcached server {server:?}: {why}"));
    let rest = match server.split_once("://") {
        Some(("memcache" | "memcached", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        None => server,
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return Err(bad("expected host:port"));
    }
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            port.parse::<u16>()
                .map_err(|_| bad("port is not a number from 0 to 65535"))?;
            true
        }
        _ => false,
    };
    Ok(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:11211")
    })
}

impl Memcached {
    /// A builder, for timeouts and several servers.
    pub fn builder() -> MemcachedBuilder {
        MemcachedBuilder::default()
    }

    /// One or more servers, comma-separated: `memcache://10.0.0.1:11211,memcache://10.0.0.2:11211`.
    pub fn from_url(urls: &str) -> Result<Memcached> {
        urls.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .fold(Memcached::builder(), MemcachedBuilder::server)
            .build()
    }

    fn error(&self, error: exp::Error) -> Error {
        match error {
            exp::Error::Io(_) | exp::Error::Timeout { .. } | exp::Error::Ambiguous { .. } => {
                Error::unavailable(&self.name, error)
            }
            other => Error::backend(&self.name, other),
        }
    }

    /// The first error of a batch, or the batch's own.
    fn all<T>(&self, results: exp::Result<Vec<exp::Result<T>>>) -> Result<Vec<T>> {
        results
            .map_err(|e| self.error(e))?
            .into_iter()
            .map(|r| r.map_err(|e| self.error(e)))
            .collect()
    }
}

fn ttl(ttl: Option<Duration>) -> Ttl {
    match ttl {
        None => Ttl::NEVER,
        // memcached counts whole seconds; round up so a short TTL never means "forever" (0).
        Some(d) => Ttl::secs(
            u32::try_from(d.as_secs_f64().ceil() as u64)
                .unwrap_or(u32::MAX)
                .max(1),
        ),
    }
}

impl Backend for Memcached {
    fn name(&self) -> &str {
        &self.name
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.all(self.client.run_many(keys.iter().map(Get::new)))?;
        Ok(results
            .into_iter()
            .map(|r| if r.hit() { r.value } else { None })
            .collect())
    }

    fn set_many(&self, items: &[SetItem<'_>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let sets = items
            .iter()
            .map(|item| Set::new(item.key, item.value).ttl(ttl(item.ttl)));
        self.all(self.client.run_many(sets)).map(drop)
    }

    fn add(&self, key: &str, value: &[u8], ttl_: Option<Duration>) -> Result<bool> {
        let result = self
            .client
            .run(Set::new(key, value).ttl(ttl(ttl_)).add())
            .map_err(|e| self.error(e))?;
        Ok(result.applied())
    }

    fn incr_many(&self, keys: &[&str], delta: u64, initial: u64) -> Result<Vec<u64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ops = keys.iter().map(|key| {
            Arithmetic::new(key)
                .delta(delta)
                .initial(initial, COUNTER_TTL_SECS)
                .ttl(Ttl::secs(COUNTER_TTL_SECS))
        });
        self.all(self.client.run_many(ops))?
            .into_iter()
            .zip(keys)
            .map(|(result, key)| {
                result.value.ok_or_else(|| Error::NotACounter {
                    key: (*key).to_owned(),
                })
            })
            .collect()
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let result = self
            .client
            .run(exp::Delete::new(key))
            .map_err(|e| self.error(e))?;
        Ok(result.applied())
    }

    fn max_value_len(&self) -> usize {
        self.max_value_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("memcache://127.0.0.1:11211").unwrap(),
            "127.0.0.1:11211"
        );
        assert_eq!(parse_server("localhost").unwrap(), "localhost:11211");
        assert_eq!(parse_server("cache:1").unwrap(), "cache:1");
        assert!(parse_server("redis://x:1").is_err());
        assert!(parse_server("x:notaport").is_err());
        assert!(parse_server("").is_err());
    }
}
