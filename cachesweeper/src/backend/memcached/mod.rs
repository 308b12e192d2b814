//! The one place that talks to memcached.
//!
//! Built on the `memcache` crate's meta-protocol client (`memcache::exp`), not its classic
//! client: the meta client pipelines a batch into one round trip per server, bounds every
//! exchange with a deadline, dials lazily (so start-up never waits on the cache), and its
//! arithmetic command creates a missing counter atomically (`ma` with `N`/`J`), which is what
//! version counters need. The classic client's `add` cannot even report whether it stored.
//!
//! Except counter reads, which have a codec and sockets of their own ([`counter_reads`]). Every
//! socket belongs to the backend's I/O thread ([`IoThread`]).

mod counter_reads;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memcache::exp::{self, Arithmetic, AsyncMetaClient, Get, MetaClient, Set, Ttl};

use self::counter_reads::Sockets;
use super::batch;
use super::breaker::Breaker;
use super::io_thread::IoThread;
use super::remote::{Remote, remote_setters};
use super::rendezvous::Rendezvous;
use super::{Backend, BoxFuture, COUNTER_TTL, Leased, SetItem};
use crate::keys::routing_part;
use crate::{Error, Result, lock};

/// [`COUNTER_TTL`] as memcached takes it (refreshed by every read, `mg … T`, and raise).
const COUNTER_TTL_SECS: u32 = COUNTER_TTL.as_secs() as u32;

/// One or more memcached servers.
///
/// Each server has its own connection pool and circuit breaker: after a few transport failures
/// in a row (a refused connection, a timeout) it is skipped for a retry window, so a dead server
/// costs one timeout per window, not one per fragment; then one call probes it again. With
/// several servers, keys are spread by weighted rendezvous hashing, with a hash that is the same
/// in every build, and a batch is split per server, the groups sent at once; a server that is
/// down fails only its keys.
///
/// Its connections belong to a thread of its own, whatever runtime (or none) its callers run
/// on: a blocking render parks its thread until the answer comes, an async one awaits it.
///
/// A raise (an invalidation) costs two round trips: a read that leaves the counter's CAS as it
/// is (`mg`), then a compare-and-add. Reads never make a raise fail, however hot the record;
/// a server run without CAS (`-C`) is refused for versions, loudly (see `without_cas`).
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
    router: Option<Arc<Rendezvous>>,
    name: String,
    max_value_len: usize,
    io: Arc<IoThread>,
}

struct Server {
    /// Made at first use, which resolves the address, and made again after the breaker
    /// opened: a host name that does not resolve yet (a container still starting) fails
    /// neither start-up nor every call after it, and one that moves is followed.
    client: Mutex<Option<AsyncMetaClient>>,
    /// Counter reads, the exchange a warm page repeats most, on sockets of their own (see
    /// `counter_reads`); also the server's address and limits, for the client.
    counters: Sockets,
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
/// Defaults (see each setter) suit a cache on the same LAN: a cache that answers slower is
/// treated as down, and fragments are rendered instead.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcachedBuilder {
    servers: Vec<(String, u32)>,
    remote: Remote,
    max_idle: usize,
}

impl Default for MemcachedBuilder {
    fn default() -> Self {
        MemcachedBuilder {
            servers: Vec::new(),
            remote: Remote::default(),
            max_idle: 16,
        }
    }
}

remote_setters!(MemcachedBuilder);

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

    /// How many idle connections to keep per server (default 16).
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = max_idle;
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
                client: Mutex::new(None),
                counters: Sockets::new(
                    addr,
                    self.remote.connect_timeout,
                    self.remote.io_timeout,
                    self.max_idle,
                ),
                breaker: self.remote.breaker(),
            });
        }
        let name = weights
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Memcached {
            router: (servers.len() > 1).then(|| Arc::new(Rendezvous::new(&weights))),
            servers: servers.into(),
            io: Arc::new(IoThread::start(&format!("memcached {name}"))?),
            name,
            max_value_len: self.remote.max_value_len,
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
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => match port.parse::<u16>() {
            Ok(_) => Ok(authority.to_owned()),
            Err(_) => Err(bad("port is not a number from 0 to 65535")),
        },
        _ => Ok(format!("{authority}:11211")),
    }
}

/// An error that says whether the server could not be reached in time (as opposed to an
/// answer).
trait Transport: std::error::Error + Send + Sync + 'static {
    fn is_transport(&self) -> bool;
}

impl Transport for exp::Error {
    fn is_transport(&self) -> bool {
        matches!(
            self,
            exp::Error::Io(_) | exp::Error::Timeout { .. } | exp::Error::Ambiguous { .. }
        )
    }
}

impl Server {
    fn error(&self, error: impl Transport) -> Error {
        if error.is_transport() {
            Error::unavailable(&self.counters.addr, error)
        } else {
            Error::backend(&self.counters.addr, error)
        }
    }

    /// The server's client, made now if there is none. The slot is not locked while the
    /// address resolves (a std mutex held across an await would block every other task wanting
    /// it), so two tasks may both make one; the first one stored is kept, and its pool with it.
    async fn client(&self) -> exp::Result<AsyncMetaClient> {
        if let Some(client) = &*lock(&self.client) {
            return Ok(client.clone());
        }
        let client = MetaClient::builder()
            .connect_timeout(Some(self.counters.connect_timeout))
            .io_timeout(Some(self.counters.io_timeout))
            .max_idle(self.counters.max_idle)
            .connect_async(self.counters.addr.as_str())
            .await?;
        Ok(lock(&self.client).get_or_insert(client).clone())
    }

    /// After a transport failure: once the breaker has opened, the clients go too, so that the
    /// next attempt resolves the address again.
    fn forget_clients_if_open(&self) {
        if self.breaker.is_open() {
            *lock(&self.client) = None;
            self.counters.clear();
        }
    }

    /// Makes `call` (a batch) through the breaker. A transport failure, of the batch or of one
    /// of its operations (`op_failed`), counts against the server; the whole batch's failure is
    /// the error.
    async fn call<T, E: Transport>(
        &self,
        call: impl Future<Output = std::result::Result<Vec<T>, E>>,
        op_failed: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>> {
        let failed = |answer: &std::result::Result<Vec<T>, E>| match answer {
            Err(error) => error.is_transport(),
            Ok(answers) => answers.iter().any(&op_failed),
        };
        let answer = self
            .breaker
            .call(&self.counters.addr, call, &failed)
            .await?;
        if failed(&answer) {
            self.forget_clients_if_open();
        }
        answer.map_err(|error| self.error(error))
    }

    /// Runs a batch on this server through its breaker; one result per operation.
    async fn run<O: Op>(&self, ops: Vec<O>) -> Vec<Result<O::Output>> {
        let count = ops.len();
        let call = async { self.client().await?.run_many(ops).await };
        match self
            .call(call, |r| matches!(r, Err(e) if e.is_transport()))
            .await
        {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| self.error(e)))
                .collect(),
            Err(error) => batch::all_err(count, error),
        }
    }

    /// Runs a batch of counter reads on this server through its breaker; one value and CAS
    /// per read, or `None` for a counter that does not exist.
    async fn read_counters(&self, reads: &counter_reads::Batch) -> Vec<Peeked> {
        match self.call(self.counters.exchange(reads), |_| false).await {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| match answer {
                    counter_reads::Answer::Counter { value, cas } => Ok(Some((value, cas))),
                    counter_reads::Answer::Missing => Ok(None),
                    counter_reads::Answer::Refused(why) => {
                        Err(Error::backend_message(&self.counters.addr, why))
                    }
                })
                .collect(),
            Err(error) => batch::all_err(reads.len(), error),
        }
    }
}

/// A counter's value and CAS, or `None` where it does not exist.
type Peeked = Result<Option<(u64, u64)>>;

/// A version counter as a read found it.
#[derive(Debug, Clone, Copy)]
struct Counter {
    value: u64,
    cas: u64,
    /// Whether this read created it (at the value it was asked to).
    created: bool,
}

/// A meta-protocol operation, as the crate's client sends it.
trait Op: exp::Operation<Output: Send> + Send + Sync + 'static {}

impl<O: exp::Operation<Output: Send> + Send + Sync + 'static> Op for O {}

impl Memcached {
    /// A builder, for timeouts, weights and the circuit breaker.
    pub fn builder() -> MemcachedBuilder {
        MemcachedBuilder::default()
    }

    /// One or more servers, comma-separated: `memcache://10.0.0.1:11211,memcache://10.0.0.2:11211`.
    /// A server may carry a weight: `memcache://10.0.0.3:11211?weight=2`.
    pub fn from_url(urls: &str) -> Result<Memcached> {
        let mut builder = Memcached::builder();
        for url in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (server, query) = url.split_once('?').unwrap_or((url, "weight=1"));
            let weight = query.strip_prefix("weight=").and_then(|w| w.parse().ok());
            let weight = weight.filter(|&w| w > 0).ok_or_else(|| {
                Error::Config(format!(
                    "memcached server {url:?}: the only option is `?weight=N` (N ≥ 1)"
                ))
            })?;
            builder = builder.weighted_server(server, weight);
        }
        builder.build()
    }

    /// The server that holds `key` (decided by its record, see [`routing_part`]).
    fn route(&self, key: &str) -> usize {
        let Some(router) = &self.router else { return 0 };
        // A key always goes to its own server, dead or alive: sending a dead server's keys to
        // another would bring its old counters back, older than the raises made meanwhile,
        // when it returns. Its fragments render until then.
        router.server_for(routing_part(key).as_bytes())
    }

    /// Sends each operation to the server of its key, one batch per server, the batches at
    /// once, and answers in their order.
    async fn run<O: Op>(&self, ops: Vec<(&str, O)>) -> Vec<Result<O::Output>> {
        let ops_of = |ops: Vec<(&str, O)>| ops.into_iter().map(|(_, op)| op).collect();
        if ops.is_empty() {
            return Vec::new();
        }
        if self.servers.len() == 1 {
            return self.servers[0].run(ops_of(ops)).await;
        }
        batch::scatter(
            ops,
            |(key, _)| self.route(key),
            |server, ops| self.servers[server].run(ops_of(ops)),
        )
        .await
    }

    /// A counter's value from an `ma` answer.
    fn counted(key: &str, answer: Result<exp::ArithmeticResult>) -> Result<u64> {
        answer?.value.ok_or_else(|| Error::NotACounter {
            key: key.to_owned(),
        })
    }

    /// The error of a server that answers CAS 0: memcached run with `-C`, where a compare
    /// checks nothing, so two raises of one counter could each add their whole gap and put it
    /// far ahead of the clock (nothing under it stored until the clock catches up). Versions
    /// are neither read nor raised there: pages render uncached, and the error says why.
    fn without_cas(&self, key: &str) -> Error {
        Error::backend_message(
            &self.servers[self.route(key)].counters.addr,
            "memcached answers without CAS (started with -C): cachesweeper needs CAS to raise \
             version counters safely; restart it without -C",
        )
    }

    async fn lookup(&self, keys: &[&str], lease: Duration) -> Vec<Result<Leased>> {
        // memcached's meta protocol lease (memcached >= 1.6): `mg <key> v N<secs>` creates an
        // empty placeholder on a miss and tells exactly one caller that it won; the others see
        // the placeholder as pending until the winner stores the value or the lease expires.
        let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1);
        self.run(on_each(keys, |key| Get::new(key).lease_ttl(secs)))
            .await
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

    async fn store(&self, items: &[SetItem<'_>]) -> Result<()> {
        let ops = items
            .iter()
            .map(|item| (item.key, Set::new(item.key, item.value).ttl(ttl(item.ttl))))
            .collect();
        first_err(self.run(ops).await)
    }

    /// The value and CAS of each counter in `keys` that exists (`None` for one that does not),
    /// refreshing its time to live, in one round trip, without changing its CAS (see
    /// `counter_reads`). A key that is not a plain memcached key (`counter_reads::is_plain`)
    /// fails the whole batch.
    async fn peek_counters(&self, keys: &[&str]) -> Vec<Peeked> {
        if keys.is_empty() {
            return Vec::new();
        }
        if let Some(bad) = keys.iter().find(|key| !counter_reads::is_plain(key)) {
            // The core's keys always are (see `Backend`); another caller's gets an error, never
            // a line that would put the exchange out of step.
            let error = Error::backend_message(
                &self.name,
                format_args!("{bad:?} is not a memcached key (at most 250 printable bytes)"),
            );
            return batch::all_err(keys.len(), error);
        }
        batch::scatter(
            keys.iter().copied(),
            |key| self.route(key),
            |server, keys| async move {
                let mut batch = counter_reads::Batch::new(keys.len());
                for key in keys {
                    batch.push(key, COUNTER_TTL_SECS);
                }
                self.servers[server].read_counters(&batch).await
            },
        )
        .await
    }

    /// Creates each counter in `keys` at `initial`, unless it exists (`ma` with a CAS no item
    /// has, which creates a missing item and leaves an existing one as it is): its value and
    /// CAS if this call created it, `None` if it existed.
    async fn create_counters(&self, keys: &[&str], initial: u64) -> Vec<Peeked> {
        let ops = on_each(keys, |key| {
            Arithmetic::new(key)
                .delta(0)
                .initial(initial, COUNTER_TTL_SECS)
                .compare_cas(u64::MAX)
                .return_cas()
        });
        let answers = self.run(ops).await.into_iter().zip(keys);
        answers
            .map(|(answer, key)| {
                let answer = answer?;
                if !answer.applied() {
                    return Ok(None);
                }
                let cas = answer.item.cas.unwrap_or(0);
                Ok(Some((Self::counted(key, Ok(answer))?, cas)))
            })
            .collect()
    }

    /// Each counter in `keys`, creating the missing ones at `initial`: one round trip when they
    /// all exist, two or three otherwise. A server without CAS fails its keys (see
    /// [`without_cas`](Self::without_cas)).
    async fn counters(&self, keys: &[&str], initial: u64) -> Vec<Result<Counter>> {
        let mut found = self.peek_counters(keys).await;
        let mut created = vec![false; keys.len()];
        // Missing: create them; those another client created meanwhile are read again.
        for round in 0..2 {
            let missing: Vec<usize> = (0..keys.len())
                .filter(|&i| matches!(found[i], Ok(None)))
                .collect();
            if missing.is_empty() {
                break;
            }
            let missing_keys: Vec<&str> = missing.iter().map(|&i| keys[i]).collect();
            let answers = if round == 0 {
                self.create_counters(&missing_keys, initial).await
            } else {
                self.peek_counters(&missing_keys).await
            };
            for (i, answer) in missing.into_iter().zip(answers) {
                created[i] = round == 0 && matches!(answer, Ok(Some(_)));
                found[i] = answer;
            }
        }
        found
            .into_iter()
            .enumerate()
            .map(|(i, answer)| match answer? {
                Some((_, 0)) => Err(self.without_cas(keys[i])),
                Some((value, cas)) => Ok(Counter {
                    value,
                    cas,
                    created: created[i],
                }),
                None => Err(Error::backend_message(
                    &self.name,
                    format_args!("counter {:?} vanished as it was created", keys[i]),
                )),
            })
            .collect()
    }

    async fn add(&self, keys: &[&str], delta: u64, initial: u64) -> Vec<Result<u64>> {
        if delta == 0 {
            return self
                .counters(keys, initial)
                .await
                .into_iter()
                .map(|counter| counter.map(|c| c.value))
                .collect();
        }
        let ops = on_each(keys, |key| {
            Arithmetic::new(key)
                .delta(delta)
                .initial(initial, COUNTER_TTL_SECS)
                .ttl(Ttl::secs(COUNTER_TTL_SECS))
        });
        let answers = self.run(ops).await.into_iter().zip(keys);
        answers
            .map(|(answer, key)| Self::counted(key, answer))
            .collect()
    }

    /// memcached has no atomic max, so each round reads the counters (creating missing ones at
    /// `floor | 1`) and adds to each what takes it to the even number at or above
    /// `max(value + 1, floor)`, only if nobody changed it since (`ma ... C<cas>`); those that
    /// changed go round again. Every step only ever adds, so a counter never decreases,
    /// whatever races with it; and the gap added was computed from the value it is added to,
    /// so a counter never lands ahead of the clock by more than a racer's step.
    ///
    /// Two round trips per round; only other raises of the same counter make a round fail
    /// (reads leave the CAS as it is). Under many raises of one counter at once, after
    /// [`BLIND_AFTER`] rounds a small gap is added unguarded (the counter still only grows, and
    /// ends at most [`BLIND_GAP`] past its floor for each racer).
    async fn raise(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>> {
        let mut out: Vec<Result<u64>> = keys.iter().map(|_| Ok(floor)).collect();
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        for attempt in 0..RAISE_ATTEMPTS {
            if pending.is_empty() {
                return out;
            }
            let pending_keys: Vec<&str> = pending.iter().map(|&i| keys[i]).collect();
            let read = self.counters(&pending_keys, floor | 1).await;
            // A counter found odd is confirmed past now, which is after the creation this read
            // saw (see `Backend::raise_each`).
            let seen_at = crate::clock::now();
            let mut lifts = Vec::new();
            let mut lifted = Vec::new();
            for (&i, counter) in pending.iter().zip(read) {
                match counter {
                    Err(error) => out[i] = Err(error),
                    // Created at the floor by this raise.
                    Ok(Counter {
                        value,
                        created: true,
                        ..
                    }) => out[i] = Ok(value),
                    Ok(Counter { value, cas, .. }) => {
                        let odd = !crate::versions::is_confirmed(value);
                        let floor = if odd { floor.max(seen_at) } else { floor };
                        let gap =
                            crate::versions::confirmed(floor.max(value.saturating_add(1))) - value;
                        let lift = Arithmetic::new(keys[i])
                            .delta(gap)
                            .ttl(Ttl::secs(COUNTER_TTL_SECS));
                        // Never unguarded on an odd counter: it might be another one by now.
                        lifts.push((
                            keys[i],
                            if attempt >= BLIND_AFTER && gap <= BLIND_GAP && !odd {
                                lift
                            } else {
                                lift.compare_cas(cas)
                            },
                        ));
                        lifted.push(i);
                    }
                }
            }
            let answers = self.run(lifts).await;
            pending.clear();
            for (&i, answer) in lifted.iter().zip(answers) {
                match answer {
                    Ok(r) if r.applied() => out[i] = Self::counted(keys[i], Ok(r)),
                    // Changed since it was read (another raise), or lost: read it again.
                    Ok(_) => pending.push(i),
                    Err(error) => out[i] = Err(error),
                }
            }
        }
        for i in pending {
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

    async fn release(&self, keys: &[&str]) -> Result<()> {
        first_err(self.run(on_each(keys, exp::Delete::new)).await)
    }
}

/// `op` on each key, with the key it routes by.
fn on_each<'k, O>(keys: &[&'k str], op: impl Fn(&'k str) -> O) -> Vec<(&'k str, O)> {
    keys.iter().map(|&key| (key, op(key))).collect()
}

/// Ok if every operation succeeded, else the first error.
fn first_err<T>(results: Vec<Result<T>>) -> Result<()> {
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// How many compare-and-add rounds [`Memcached::raise`] makes before it reports a counter
/// as contended (each round loses only to another change of the same counter).
const RAISE_ATTEMPTS: usize = 16;

/// After how many lost compare-and-add rounds a raise adds a small gap unguarded.
const BLIND_AFTER: usize = 3;

/// The largest gap (nanoseconds) a contended raise adds unguarded: the most a counter may end
/// past its floor for each raise racing on it.
const BLIND_GAP: u64 = 1_000_000;

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

    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        Box::pin(self.io.enter(self.lookup(keys, lease)))
    }

    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.io.enter(self.store(items)))
    }

    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(self.io.enter(self.add(keys, delta, initial)))
    }

    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(self.io.enter(self.raise(keys, floor)))
    }

    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.io.enter(self.release(keys)))
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
