//! The one place that talks to memcached.
//!
//! Built on the `memcache` crate's meta-protocol client (`memcache::exp`), not its classic
//! client: the meta client pipelines a batch into one round trip per server, bounds every
//! exchange with a deadline, dials lazily (so start-up never waits on the cache), and its
//! arithmetic command creates a missing counter atomically (`ma` with `N`/`J`), which is what
//! version counters need. The classic client's `add` cannot even report whether it stored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memcache::exp::{self, Arithmetic, Get, MetaClient, Set, Ttl};

use super::breaker::{Attempt, Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_AFTER};
use super::rendezvous::Rendezvous;
use super::ring::Ring;
use super::{Backend, Leased, SetItem};
use crate::keys::routing_part;
use crate::{Error, Result};

/// How long counters live in memcached: refreshed on every bump, and a counter recreated after
/// expiry starts from a clock-seeded value, so expiry only costs misses, never stale content.
const COUNTER_TTL_SECS: u32 = 30 * 24 * 60 * 60;

/// memcached's default item size limit (`-I 1m`), less room for the key and item header.
const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 - 512;

/// One or more memcached servers.
///
/// Each server has its own connection pool and circuit breaker: after a few transport failures
/// in a row (a refused connection, a timeout) it is skipped for a retry window, so a dead server
/// costs one timeout per window, not one per fragment; then one call probes it again. With
/// several servers, keys are spread by rendezvous hashing (or libmemcached's ketama ring, see
/// [`Distribution`]), with a hash that is the same in every build, and a batch is split per
/// server, the groups sent in parallel; a server that is down fails only its keys.
///
/// ```no_run
/// use cachesweeper::backend::Memcached;
///
/// let cache = Memcached::from_url("memcache://10.0.0.1:11211,memcache://10.0.0.2:11211")?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
#[derive(Clone)]
pub struct Memcached {
    servers: Arc<[Server]>,
    router: Option<Arc<Router>>,
    failover: bool,
    name: String,
    max_value_len: usize,
}

/// How keys are spread over several servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distribution {
    /// Weighted rendezvous hashing (the default): the most even spread, and only a server's
    /// share of keys moves when it joins or leaves. See the `rendezvous` module docs.
    #[default]
    Rendezvous,
    /// libmemcached's weighted ketama ring (MD5, 160 points per server), for operators who want
    /// libmemcached's distribution of a server list. Less even: with three servers, about one
    /// server list in twenty puts more than 15% over an even share on one server. Either way
    /// cachesweeper hashes the record part of a key (the model and record key), not the whole key.
    Ketama,
}

enum Router {
    Rendezvous(Rendezvous),
    Ketama(Ring),
}

impl Router {
    fn server_for(&self, key: &[u8]) -> usize {
        match self {
            Router::Rendezvous(r) => r.server_for(key),
            Router::Ketama(r) => r.server_for(key),
        }
    }

    fn server_for_excluding(&self, key: &[u8], excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        match self {
            Router::Rendezvous(r) => r.server_for_excluding(key, excluded),
            Router::Ketama(r) => r.server_for_excluding(key, excluded),
        }
    }
}

struct Server {
    addr: String,
    /// Made at first use, which resolves the address, and made again after the breaker
    /// opened: a host name that does not resolve yet (a container still starting) fails
    /// neither start-up nor every call after it, and one that moves is followed.
    client: Mutex<Option<Arc<MetaClient>>>,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_idle: usize,
    breaker: Breaker,
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
/// Defaults suit a cache on the same LAN: 100 ms to connect, 200 ms for a whole exchange, a
/// server skipped for 2 s after 2 transport failures in a row. A cache that answers slower than
/// that is treated as down, and fragments are rendered instead.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcachedBuilder {
    servers: Vec<(String, u32)>,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_idle: usize,
    max_value_len: usize,
    failure_threshold: u32,
    retry_after: Duration,
    failover: bool,
    distribution: Distribution,
}

impl Default for MemcachedBuilder {
    fn default() -> Self {
        MemcachedBuilder {
            servers: Vec::new(),
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(200),
            max_idle: 16,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            retry_after: DEFAULT_RETRY_AFTER,
            failover: false,
            distribution: Distribution::default(),
        }
    }
}

impl MemcachedBuilder {
    /// Adds a server, as `host:port` or `memcache://host:port`.
    pub fn server(self, server: impl Into<String>) -> Self {
        self.weighted_server(server, 1)
    }

    /// Adds a server that takes `weight` times the share of keys of a weight-1 server (for a
    /// server with more memory).
    pub fn weighted_server(mut self, server: impl Into<String>, weight: u32) -> Self {
        self.servers.push((server.into(), weight));
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

    /// Skips a server after this many transport failures in a row, for `retry_after`, then
    /// probes it with one call.
    pub fn circuit_breaker(mut self, failures: u32, retry_after: Duration) -> Self {
        self.failure_threshold = failures;
        self.retry_after = retry_after;
        self
    }

    /// Sends the keys of a server that is skipped to the next live server on the ring (off by
    /// default). Caching goes on at full rate while a server is down, at a price: the records
    /// whose counters lived there get new counters on the next server, and when the server
    /// comes back its old counters are found again, with old versions whose fragments may still
    /// be stored. Off, a down server's fragments are rendered until it returns.
    pub fn failover(mut self, failover: bool) -> Self {
        self.failover = failover;
        self
    }

    /// How keys are spread over several servers (default [`Distribution::Rendezvous`]).
    pub fn distribution(mut self, distribution: Distribution) -> Self {
        self.distribution = distribution;
        self
    }

    /// Builds the backend. Addresses are resolved and connections made at first use, so a
    /// server that is down, or a host name that does not resolve yet, does not fail this call.
    pub fn build(self) -> Result<Memcached> {
        if self.servers.is_empty() {
            return Err(Error::Config("memcached needs at least one server".into()));
        }
        let mut servers = Vec::with_capacity(self.servers.len());
        let mut weights = Vec::with_capacity(self.servers.len());
        for (server, weight) in &self.servers {
            if *weight == 0 {
                return Err(Error::Config(format!(
                    "memcached server {server:?}: weight 0"
                )));
            }
            let addr = parse_server(server)?;
            if weights.iter().any(|(a, _)| a == &addr) {
                return Err(Error::Config(format!(
                    "memcached server {addr} is listed twice"
                )));
            }
            weights.push((addr.clone(), *weight));
            servers.push(Server {
                addr,
                client: Mutex::new(None),
                connect_timeout: self.connect_timeout,
                io_timeout: self.io_timeout,
                max_idle: self.max_idle,
                breaker: Breaker::new(self.failure_threshold, self.retry_after),
            });
        }
        let name = weights
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Memcached {
            router: (servers.len() > 1).then(|| {
                Arc::new(match self.distribution {
                    Distribution::Rendezvous => Router::Rendezvous(Rendezvous::new(&weights)),
                    Distribution::Ketama => Router::Ketama(Ring::new(&weights)),
                })
            }),
            servers: servers.into(),
            failover: self.failover,
            name,
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

/// Whether an error says the server could not be reached in time (as opposed to an answer).
fn is_transport(error: &exp::Error) -> bool {
    matches!(
        error,
        exp::Error::Io(_) | exp::Error::Timeout { .. } | exp::Error::Ambiguous { .. }
    )
}

impl Server {
    fn error(&self, error: exp::Error) -> Error {
        if is_transport(&error) {
            Error::unavailable(&self.addr, error)
        } else {
            Error::backend(&self.addr, error)
        }
    }

    /// The client, made now (resolving the address) if there is none.
    fn client(&self) -> std::result::Result<Arc<MetaClient>, exp::Error> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = &*slot {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            MetaClient::builder()
                .connect_timeout(Some(self.connect_timeout))
                .io_timeout(Some(self.io_timeout))
                .max_idle(self.max_idle)
                .connect(self.addr.as_str())?,
        );
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Counts a transport failure; once the breaker opens, the client goes too, so that the
    /// next attempt resolves the address again.
    fn failed(&self, attempt: Attempt<'_>) {
        attempt.failure();
        if self.breaker.is_open() {
            *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Runs a batch on this server through its breaker; one result per operation.
    fn run<O: exp::Operation>(&self, ops: Vec<O>) -> Vec<Result<O::Output>> {
        let count = ops.len();
        let attempt = match self.breaker.allow() {
            Ok(attempt) => attempt,
            Err(wait) => {
                let skipped = Error::CircuitOpen {
                    backend: self.addr.clone(),
                    retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                };
                return (0..count).map(|_| Err(skipped.clone())).collect();
            }
        };
        match self.client().and_then(|client| client.run_many(ops)) {
            Err(error) => {
                if is_transport(&error) {
                    self.failed(attempt);
                } else {
                    attempt.success();
                }
                let error = self.error(error);
                (0..count).map(|_| Err(error.clone())).collect()
            }
            Ok(results) => {
                if results
                    .iter()
                    .any(|r| matches!(r, Err(e) if is_transport(e)))
                {
                    self.failed(attempt);
                } else {
                    attempt.success();
                }
                results
                    .into_iter()
                    .map(|r| r.map_err(|e| self.error(e)))
                    .collect()
            }
        }
    }
}

impl Memcached {
    /// A builder, for timeouts, weights, the circuit breaker and failover.
    pub fn builder() -> MemcachedBuilder {
        MemcachedBuilder::default()
    }

    /// One or more servers, comma-separated: `memcache://10.0.0.1:11211,memcache://10.0.0.2:11211`.
    /// A server may carry a weight: `memcache://10.0.0.3:11211?weight=2`.
    pub fn from_url(urls: &str) -> Result<Memcached> {
        let mut builder = Memcached::builder();
        for url in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (server, weight) = match url.split_once('?') {
                None => (url, 1),
                Some((server, query)) => {
                    let weight = query
                        .strip_prefix("weight=")
                        .and_then(|w| w.parse::<u32>().ok())
                        .filter(|&w| w > 0)
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "memcached server {url:?}: the only option is `?weight=N` (N ≥ 1)"
                            ))
                        })?;
                    (server, weight)
                }
            };
            builder = builder.weighted_server(server, weight);
        }
        builder.build()
    }

    /// The server that holds `key` (decided by its record, see [`routing_part`]).
    fn route(&self, key: &str) -> usize {
        let Some(router) = &self.router else { return 0 };
        let key = routing_part(key);
        if self.failover {
            router
                .server_for_excluding(key.as_bytes(), &|i| self.servers[i].breaker.is_open())
                .unwrap_or_else(|| router.server_for(key.as_bytes()))
        } else {
            router.server_for(key.as_bytes())
        }
    }

    /// Splits a batch by server, runs the groups (in parallel when there are several) and puts
    /// the results back in the order of `keys`; `make(i)` builds the operation of `keys[i]`.
    fn batch<T: Send, O: exp::Operation<Output = T> + Send>(
        &self,
        keys: &[&str],
        make: impl Fn(usize) -> O + Sync,
    ) -> Vec<Result<T>> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (i, key) in keys.iter().enumerate() {
            groups[self.route(key)].push(i);
        }
        let run_group = |server: usize, indices: &Vec<usize>| {
            let ops = indices.iter().map(|&i| make(i)).collect();
            self.servers[server].run(ops)
        };
        let busy: Vec<(usize, &Vec<usize>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect();
        let answers: Vec<Vec<Result<T>>> = if busy.len() <= 1 {
            busy.iter()
                .map(|&(server, indices)| run_group(server, indices))
                .collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = busy[1..]
                    .iter()
                    .map(|&(server, indices)| scope.spawn(move || run_group(server, indices)))
                    .collect();
                let mut answers = vec![run_group(busy[0].0, busy[0].1)];
                answers.extend(handles.into_iter().map(|h| h.join().expect("batch thread")));
                answers
            })
        };
        let mut out: Vec<Option<Result<T>>> = (0..keys.len()).map(|_| None).collect();
        for ((_, indices), results) in busy.iter().zip(answers) {
            for (&i, result) in indices.iter().zip(results) {
                out[i] = Some(result);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every key was routed to one server"))
            .collect()
    }
}

/// How many compare-and-add rounds [`Memcached::raise_each`] makes before it reports a counter
/// as contended (each round loses only to another raise of the same counter).
const RAISE_ATTEMPTS: usize = 16;

fn ttl(ttl: Option<Duration>) -> Ttl {
    /// memcached reads a time to live of more than 30 days as an absolute unix time, in 32 bits.
    const MAX_RELATIVE: u64 = 30 * 24 * 60 * 60;
    match ttl {
        None => Ttl::NEVER,
        // memcached counts whole seconds; round up so a short TTL never means "forever" (0).
        Some(d) => {
            let secs = d
                .as_secs()
                .saturating_add(u64::from(d.subsec_nanos() > 0))
                .max(1);
            if secs <= MAX_RELATIVE {
                return Ttl::secs(u32::try_from(secs).expect("30 days fit"));
            }
            // Longer: an absolute time, clamped to the last one memcached can hold (early
            // 2106) rather than refused, which would fail the whole batch.
            let latest = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX));
            let at = SystemTime::now()
                .checked_add(d)
                .map_or(latest, |at| at.min(latest));
            Ttl::at(at)
        }
    }
}

impl Backend for Memcached {
    fn name(&self) -> &str {
        &self.name
    }

    fn get_each(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>>> {
        self.batch(keys, |i| Get::new(keys[i]))
            .into_iter()
            .map(|r| r.map(|got| if got.hit() { got.value } else { None }))
            .collect()
    }

    fn get_leased(&self, keys: &[&str], lease: Duration) -> Vec<Result<Leased>> {
        // memcached's meta protocol lease (memcached >= 1.6): `mg <key> v N<secs>` creates an
        // empty placeholder on a miss and tells exactly one caller that it won; the others see
        // the placeholder as pending until the winner stores the value or the lease expires.
        let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1);
        self.batch(keys, |i| Get::new(keys[i]).lease_ttl(secs))
            .into_iter()
            .map(|r| {
                r.map(|got| match got.value {
                    Some(value) if got.hit() && !value.is_empty() => Leased::Hit(value),
                    _ if got.lease_busy() => Leased::Busy,
                    _ => Leased::Won,
                })
            })
            .collect()
    }

    fn set_many(&self, items: &[SetItem<'_>]) -> Result<()> {
        let keys: Vec<&str> = items.iter().map(|item| item.key).collect();
        self.batch(&keys, |i| {
            let item = &items[i];
            Set::new(item.key, item.value).ttl(ttl(item.ttl))
        })
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
    }

    fn incr_each(&self, keys: &[&str], delta: u64, initial: u64) -> Vec<Result<u64>> {
        self.batch(keys, |i| {
            Arithmetic::new(keys[i])
                .delta(delta)
                .initial(initial, COUNTER_TTL_SECS)
                .ttl(Ttl::secs(COUNTER_TTL_SECS))
        })
        .into_iter()
        .zip(keys)
        .map(|(result, key)| {
            result?.value.ok_or_else(|| Error::NotACounter {
                key: (*key).to_owned(),
            })
        })
        .collect()
    }

    fn raise_each(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>> {
        // memcached has no atomic max, so: add one (creating a missing counter at `floor`) and
        // learn the item's CAS; where that left the counter below `floor`, add the difference
        // only if nobody changed the counter since (`ma ... C<cas>`), else try again. Every step
        // only ever adds, so the counter never decreases, whatever races with it.
        let counter = |key: &str| {
            Arithmetic::new(key)
                .initial(floor, COUNTER_TTL_SECS)
                .ttl(Ttl::secs(COUNTER_TTL_SECS))
                .return_cas()
        };
        let mut out: Vec<Result<u64>> = keys.iter().map(|_| Ok(floor)).collect();
        // Runs `op` on the counters at `indices` in one batch: those it leaves at `floor` or
        // above are done; the others are returned with their value and CAS.
        let step = |indices: &[usize], delta: u64, out: &mut Vec<Result<u64>>| {
            let batch: Vec<&str> = indices.iter().map(|&i| keys[i]).collect();
            let mut low = Vec::new();
            let answers = self.batch(&batch, |j| counter(batch[j]).delta(delta));
            for (&i, answer) in indices.iter().zip(answers) {
                out[i] = answer.and_then(|r| {
                    let value = r.value.ok_or_else(|| Error::NotACounter {
                        key: keys[i].to_owned(),
                    })?;
                    if value < floor {
                        low.push((i, value, r.item.cas.unwrap_or(0)));
                    }
                    Ok(value)
                });
            }
            low
        };
        let all: Vec<usize> = (0..keys.len()).collect();
        let mut low = step(&all, 1, &mut out);
        for _ in 0..RAISE_ATTEMPTS {
            if low.is_empty() {
                break;
            }
            let pending: Vec<&str> = low.iter().map(|&(i, ..)| keys[i]).collect();
            let answers = self.batch(&pending, |j| {
                let (_, value, cas) = low[j];
                counter(pending[j]).delta(floor - value).compare_cas(cas)
            });
            let mut changed = Vec::new();
            for ((i, ..), answer) in low.iter().zip(answers) {
                match answer {
                    Ok(r) if r.applied() => out[*i] = Ok(r.value.unwrap_or(floor)),
                    // Changed since (another raise, most likely): read it again, then retry.
                    Ok(_) => changed.push(*i),
                    Err(error) => out[*i] = Err(error),
                }
            }
            low = step(&changed, 0, &mut out);
        }
        for (i, ..) in low {
            out[i] = Err(Error::backend_message(
                &self.name,
                format_args!(
                    "counter {:?} still contended after {RAISE_ATTEMPTS} attempts",
                    keys[i]
                ),
            ));
        }
        out
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let mut results = self.batch(&[key], |_| exp::Delete::new(key));
        results.pop().expect("one result").map(|r| r.applied())
    }

    fn release_leases(&self, keys: &[&str]) -> Result<()> {
        self.batch(keys, |i| exp::Delete::new(keys[i]))
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
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

    #[test]
    fn urls_with_weights() {
        // Addresses are resolved when the backend is built, not dialed.
        let cluster =
            Memcached::from_url("memcache://127.0.0.1:1, memcache://127.0.0.1:2?weight=3").unwrap();
        assert_eq!(cluster.name(), "127.0.0.1:1,127.0.0.1:2");
        assert!(Memcached::from_url("memcache://127.0.0.1:1?weight=0").is_err());
        assert!(Memcached::from_url("memcache://127.0.0.1:1?timeout=5").is_err());
        assert!(Memcached::from_url("memcache://127.0.0.1:1,memcache://127.0.0.1:1").is_err());
        assert!(Memcached::from_url("").is_err());
    }
}
