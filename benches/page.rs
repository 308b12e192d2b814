//! A page of N = 10, 100 and 1000 blog comments, each one the blog's cached comment fragment
//! (its body renders Markdown), rendered with `Sweeper::render`:
//!
//! - uncached: a sweeper on the `Null` backend;
//! - cold (every fragment new: a fresh namespace or cache per iteration, its records' versions
//!   set a second earlier, outside the timing, so that the render stores every fragment) and
//!   warm, on the embedded backend, on memcached without the L1, on memcached with the L1
//!   (the default), and on Redis without and with the L1;
//! - the baseline: django-cache-sweeper's per-fragment algorithm against the same memcached, one
//!   request and one response per call, as the original did; once with the `memcache` crate's
//!   meta client (`baseline_meta`), once with the text protocol on a bare socket
//!   (`baseline_text`).
//!
//! Round trips per page are measured once per configuration from `stats()` deltas (the baseline
//! counts its own calls) and printed as `round-trips ...` lines.
//!
//! The harness starts its own memcached and Redis on free loopback ports and kills them at the
//! end.
//! `cargo bench --bench page`; see BENCHMARKS.md.

#[allow(dead_code, unused_imports)] // its unit tests are the example's to run
#[path = "../examples/blog/markdown.rs"]
mod markdown;
#[allow(dead_code)]
#[path = "../examples/blog/models.rs"]
mod models;

mod common;

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use cachesweeper::backend::{Backend, Embedded, Leased, Memcached, Null, Redis, SetItem, block_on};
use cachesweeper::{StatsSnapshot, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::RedisProcess;
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main,
};
use memcache::exp::{Get, MetaClient, Set, Ttl};

use common::cached::{CommentsPage, CommentsPageWithoutHoles};
use common::plain;
use models::Comment;

const SIZES: [usize; 3] = [10, 100, 1000];

/// A namespace never used before in this run (and, with the run's start time, in any other).
fn fresh_namespace(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{prefix}{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A sweeper configuration under test.
#[derive(Clone, Copy)]
enum Config {
    Embedded,
    Memcached,
    MemcachedL1,
    Redis,
    RedisL1,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Embedded => "embedded",
            Config::Memcached => "memcached",
            Config::MemcachedL1 => "memcached_l1",
            Config::Redis => "redis",
            Config::RedisL1 => "redis_l1",
        }
    }
}

/// A server under test (memcached or Redis) and one client on it, shared by every sweeper so
/// that cold runs measure a cold cache, not new connections.
struct Server {
    _process: Box<dyn std::any::Any>,
    addr: String,
    backend: Arc<dyn Backend>,
}

impl Server {
    fn start() -> Option<Server> {
        // 1 GiB so that the cold runs' fresh namespaces never evict anything during the run.
        let process = MemcachedProcess::start_with(&["-m", "1024"])?;
        let backend = Arc::new(Memcached::from_url(&process.url()).expect("memcached url"));
        Some(Server {
            addr: format!("127.0.0.1:{}", process.port()),
            backend,
            _process: Box::new(process),
        })
    }

    fn redis() -> Option<Server> {
        let process = RedisProcess::start_with(&["--maxmemory", "1gb"])?;
        let backend = Arc::new(Redis::from_url(&process.url()).expect("redis url"));
        Some(Server {
            addr: format!("127.0.0.1:{}", process.port()),
            backend,
            _process: Box::new(process),
        })
    }
}

/// A fresh sweeper (new namespace, new L1) of `config`: every fragment and counter is new.
fn sweeper(config: Config, server: Option<&Server>) -> Sweeper {
    let builder = Sweeper::builder().namespace(fresh_namespace(config.name()));
    match (config, server) {
        (Config::Embedded, _) => builder.backend(Embedded::new(64 << 20)),
        (Config::Memcached | Config::Redis, Some(s)) => builder.backend(s.backend.clone()).l1(0),
        (Config::MemcachedL1 | Config::RedisL1, Some(s)) => builder.backend(s.backend.clone()),
        _ => unreachable!("memcached and Redis configurations need a server"),
    }
    .build()
    .expect("sweeper")
}

/// Gives `comments` their versions, as the application's earlier requests would have, in one
/// batch, on a remote backend: there a render that meets a counter it created itself cannot know
/// that its data is newer than an invalidation the cache may have lost, and stores nothing. A
/// "cold" page is meant to render and store every fragment, so its records are made known (since
/// a second ago) first, outside the timing, as `tests/common/mod.rs`'s `known` does. The
/// embedded backend creates a missing counter an hour in the past and needs nothing.
fn known(sweeper: &Sweeper, comments: &[Comment]) {
    if sweeper.backend().is_local() {
        return;
    }
    let keys: Vec<String> = comments.iter().map(|c| sweeper.counter_key(c)).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let a_second_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 1_000_000_000;
    for known in block_on(sweeper.backend().incr_each(&keys, 0, a_second_ago & !1)) {
        known.expect("versions");
    }
}

/// A fresh sweeper of `config` whose page records are already known: see [`known`].
fn known_sweeper(config: Config, server: Option<&Server>, comments: &[Comment]) -> Sweeper {
    let sweeper = sweeper(config, server);
    known(&sweeper, comments);
    sweeper
}

/// What one render did, as a `round-trips` line (and a row of BENCHMARKS.md).
fn report(label: &str, n: usize, delta: StatsSnapshot) {
    println!(
        "round-trips {label:<24} N={n:<5} round_trips={:<3} hits={:<5} l1_hits={:<5} misses={:<5} unstored={:<5} outdated={:<5} errors={}",
        delta.round_trips,
        delta.hits,
        delta.l1_hits,
        delta.misses,
        delta.unstored,
        delta.outdated,
        delta.errors
    );
    if delta.errors > 0 {
        eprintln!("WARNING: {label} N={n}: {} cache errors", delta.errors);
    }
}

/// How the baseline talks to memcached: one request, then its response, per call.
#[derive(Clone)]
enum Wire {
    /// The `memcache` crate's meta-protocol client (`mg`/`ms`), the client cachesweeper's own
    /// memcached backend uses: pooled connections, a deadline per exchange.
    Meta(MetaClient),
    /// The classic text protocol (`get`/`set`) on one persistent socket, as python-memcached
    /// spoke it under Django: the cheapest possible client.
    Text(Rc<RefCell<BufReader<TcpStream>>>),
}

impl Wire {
    fn name(&self) -> &'static str {
        match self {
            Wire::Meta(_) => "baseline_meta",
            Wire::Text(_) => "baseline_text",
        }
    }

    /// The meta client, with the same timeouts as cachesweeper's memcached backend.
    fn meta(addr: &str) -> Wire {
        let client = MetaClient::builder()
            .connect_timeout(Some(Duration::from_millis(100)))
            .io_timeout(Some(Duration::from_millis(200)))
            .connect(addr)
            .expect("memcached client");
        client.noop().expect("memcached answers"); // dial now, not in a timed iteration
        Wire::Meta(client)
    }

    fn text(addr: &str) -> Wire {
        let stream = TcpStream::connect(addr).expect("memcached socket");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        Wire::Text(Rc::new(RefCell::new(BufReader::new(stream))))
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Wire::Meta(client) => {
                let result = client.run(Get::new(key)).expect("baseline get");
                if result.hit() { result.value } else { None }
            }
            Wire::Text(conn) => {
                let mut conn = conn.borrow_mut();
                conn.get_mut()
                    .write_all(format!("get {key}\r\n").as_bytes())
                    .expect("write");
                let mut line = String::new();
                conn.read_line(&mut line).expect("read");
                if line == "END\r\n" {
                    return None;
                }
                // VALUE <key> <flags> <bytes>
                let len: usize = line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected reply {line:?}"));
                let mut value = vec![0; len + 2];
                conn.read_exact(&mut value).expect("value");
                value.truncate(len);
                line.clear();
                conn.read_line(&mut line).expect("read");
                assert_eq!(line, "END\r\n");
                Some(value)
            }
        }
    }

    fn set(&self, key: &str, value: &[u8], ttl_secs: u32) {
        match self {
            Wire::Meta(client) => {
                let ttl = if ttl_secs == 0 {
                    Ttl::NEVER
                } else {
                    Ttl::secs(ttl_secs)
                };
                client
                    .run(Set::new(key, value).ttl(ttl))
                    .expect("baseline set");
            }
            Wire::Text(conn) => {
                let mut conn = conn.borrow_mut();
                let mut request =
                    format!("set {key} 0 {ttl_secs} {}\r\n", value.len()).into_bytes();
                request.extend_from_slice(value);
                request.extend_from_slice(b"\r\n");
                conn.get_mut().write_all(&request).expect("write");
                let mut line = String::new();
                conn.read_line(&mut line).expect("read");
                assert_eq!(line, "STORED\r\n");
            }
        }
    }
}

/// django-cache-sweeper 0.1.2's algorithm, per fragment: `get` the record's version key (and
/// `set` it when missing), `get` the fragment key under that version, and on a miss render the
/// fragment and `set` it. Every call is one request and one response, as with Django's cache
/// API on python-memcached; nothing is batched, nothing is kept in process.
struct Baseline {
    wire: Wire,
    namespace: String,
    calls: Cell<u64>,
}

impl Baseline {
    /// A baseline on `wire` (clones share its connections) under a fresh key prefix.
    fn new(wire: &Wire) -> Baseline {
        Baseline {
            wire: wire.clone(),
            namespace: fresh_namespace("django"),
            calls: Cell::new(0),
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.calls.set(self.calls.get() + 1);
        self.wire.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl_secs: u32) {
        self.calls.set(self.calls.get() + 1);
        self.wire.set(key, value, ttl_secs);
    }

    /// The original's `cache_token_key_for_record` and `{% cachesweeper %}` tag, for one
    /// comment.
    fn fragment(&self, comment: &Comment) -> String {
        let version_key = format!("{}.v.comment.{}", self.namespace, comment.id);
        let version = match self.get(&version_key) {
            Some(version) => String::from_utf8(version).expect("version"),
            None => {
                let version = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
                    .to_string();
                self.set(&version_key, version.as_bytes(), 0);
                version
            }
        };
        let fragment_key = format!(
            "{}.f.comment.{}.{version}.blog-comment-html",
            self.namespace, comment.id
        );
        if let Some(html) = self.get(&fragment_key) {
            return String::from_utf8(html).expect("fragment");
        }
        let html = plain::CommentFragment { comment }
            .render()
            .expect("renders");
        self.set(&fragment_key, html.as_bytes(), 600);
        html
    }

    fn page(&self, comments: &[Comment]) -> String {
        let mut html = String::new();
        for comment in comments {
            html.push_str(&self.fragment(comment));
        }
        html
    }

    fn take_calls(&self) -> u64 {
        self.calls.replace(0)
    }
}

/// The baseline on `wire`: cold (a fresh key prefix per iteration) and warm.
fn bench_baseline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    wire: &Wire,
    comments: &[Comment],
    expected: &str,
    n: usize,
) {
    let name = wire.name();
    let probe = Baseline::new(wire);
    assert_eq!(probe.page(comments), expected, "{name}");
    println!(
        "round-trips {:<24} N={n:<5} round_trips={}",
        format!("{name}/cold"),
        probe.take_calls()
    );
    group.bench_function(format!("{name}/cold/{n}"), |b| {
        b.iter_batched(
            || Baseline::new(wire),
            |baseline| {
                let html = baseline.page(black_box(comments));
                (baseline, html)
            },
            BatchSize::PerIteration,
        )
    });

    let warm = Baseline::new(wire);
    warm.page(comments);
    warm.take_calls();
    assert_eq!(warm.page(comments), expected, "{name}");
    println!(
        "round-trips {:<24} N={n:<5} round_trips={}",
        format!("{name}/warm"),
        warm.take_calls()
    );
    group.bench_function(format!("{name}/warm/{n}"), |b| {
        b.iter(|| warm.page(black_box(comments)))
    });
}

fn bench_config(
    group: &mut BenchmarkGroup<'_, WallTime>,
    config: Config,
    server: Option<&Server>,
    page: &CommentsPage<'_>,
    expected: &str,
    n: usize,
) {
    let name = config.name();

    // Cold: a fresh namespace (and L1) per iteration, built outside the timing, its records
    // already known to the cache so that the render stores every fragment (see `known`).
    let probe = known_sweeper(config, server, page.comments);
    assert_eq!(
        probe.scope().render(page).expect("renders"),
        expected,
        "{name}"
    );
    report(&format!("{name}/cold"), n, probe.stats());
    group.bench_function(format!("{name}/cold/{n}"), |b| {
        b.iter_batched(
            || known_sweeper(config, server, page.comments),
            |sweeper| {
                let html = sweeper.scope().render(black_box(page)).expect("renders");
                (sweeper, html) // dropped after the timing
            },
            BatchSize::PerIteration,
        )
    });

    // Warm: one sweeper, every fragment already stored.
    let warm = known_sweeper(config, server, page.comments);
    warm.scope().render(page).expect("renders");
    let before = warm.stats();
    assert_eq!(
        warm.scope().render(page).expect("renders"),
        expected,
        "{name}"
    );
    report(&format!("{name}/warm"), n, warm.stats() - before);
    group.bench_function(format!("{name}/warm/{n}"), |b| {
        b.iter(|| warm.scope().render(black_box(page)).expect("renders"))
    });
}

fn page(c: &mut Criterion) {
    let server = Server::start();
    if server.is_none() {
        eprintln!("memcached not found: only the uncached, embedded and Redis benchmarks run");
    }
    let redis = Server::redis();
    if redis.is_none() {
        eprintln!("redis-server not found: the Redis benchmarks do not run");
    }
    let wires: Vec<Wire> = server
        .iter()
        .flat_map(|s| [Wire::meta(&s.addr), Wire::text(&s.addr)])
        .collect();
    for n in SIZES {
        let comments = common::comments(1, n);
        let page = CommentsPage {
            comments: &comments,
        };
        let expected: String = comments
            .iter()
            .map(|comment| {
                plain::CommentFragment { comment }
                    .render()
                    .expect("renders")
            })
            .collect();

        let mut group = c.benchmark_group("page");
        match n {
            // The baselines take tens of milliseconds a page: fewer samples.
            100 => {
                group
                    .sample_size(10)
                    .measurement_time(Duration::from_secs(2));
            }
            // Up to a third of a second a page: ten samples of one page each.
            1000 => {
                group
                    .sampling_mode(SamplingMode::Flat)
                    .sample_size(10)
                    .measurement_time(Duration::from_secs(4));
            }
            _ => {}
        }

        // Uncached: every fragment rendered (the Null backend's calls do no I/O).
        let null = Sweeper::builder().backend(Null).build().expect("sweeper");
        let before = null.stats();
        assert_eq!(
            null.scope().render(&page).expect("renders"),
            expected,
            "uncached"
        );
        report("uncached", n, null.stats() - before);
        group.bench_function(format!("uncached/{n}"), |b| {
            b.iter(|| null.scope().render(black_box(&page)).expect("renders"))
        });

        bench_config(&mut group, Config::Embedded, None, &page, &expected, n);
        if let Some(server) = &server {
            bench_config(
                &mut group,
                Config::Memcached,
                Some(server),
                &page,
                &expected,
                n,
            );
            bench_config(
                &mut group,
                Config::MemcachedL1,
                Some(server),
                &page,
                &expected,
                n,
            );

            for wire in &wires {
                bench_baseline(&mut group, wire, &comments, &expected, n);
            }
        }
        if let Some(redis) = &redis {
            for config in [Config::Redis, Config::RedisL1] {
                bench_config(&mut group, config, Some(redis), &page, &expected, n);
            }
        }
        group.finish();
    }
}

/// `text` with its `%XX` escapes (those of a debug mark) decoded.
fn percent_decoded(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).expect("two hex digits"));
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// What holes cost (issue 23): a warm page of 50 of the blog's comments, each with its three
/// holes (the CSRF token of its two vote forms, the author's controls) filled for the viewer,
/// against the same page with the comment fragment as it was before holes, in one run. Both
/// are all hits; the holes' page also cuts nothing, puts the markers back into every fragment
/// it serves and scans the page once.
fn holes(c: &mut Criterion) {
    const N: usize = 50;
    let server = Server::start();
    let comments = common::comments(1, N);
    let with = CommentsPage {
        comments: &comments,
    };
    let without = CommentsPageWithoutHoles {
        comments: &comments,
    };
    let mut group = c.benchmark_group("holes");
    let configs = [Config::Embedded, Config::Memcached];
    for config in configs {
        let server = match config {
            Config::Embedded => None,
            _ => match &server {
                Some(server) => Some(server),
                None => continue,
            },
        };
        let name = config.name();
        let warm = known_sweeper(config, server, &comments);
        let null = Sweeper::builder().backend(Null).build().expect("sweeper");
        type Render<'a> = &'a dyn Fn(&Sweeper) -> askama::Result<String>;
        let pages: [(&str, Render<'_>); 2] = [
            ("with_holes", &|s| s.scope().render(&with)),
            ("without_holes", &|s| s.scope().render(&without)),
        ];
        for (label, html) in pages {
            let expected = html(&null).expect("renders");
            assert_eq!(html(&warm).expect("renders"), expected, "{name} {label}");
            let before = warm.stats();
            assert_eq!(html(&warm).expect("renders"), expected, "{name} {label}");
            let delta = warm.stats() - before;
            assert_eq!((delta.hits, delta.misses), (N as u64, 0), "{name} {label}");
            report(&format!("holes/{name}/{label}"), N, delta);
            group.bench_function(format!("{name}/{label}/{N}"), |b| {
                b.iter(|| html(black_box(&warm)).expect("renders"))
            });
        }
        assert_eq!(
            null.scope()
                .render(&with)
                .expect("renders")
                .matches(common::TOKEN)
                .count(),
            2 * N,
            "a token in every vote form"
        );
    }
    group.finish();
}

/// What one round trip costs on this machine, to read the page numbers by: the warm page's own
/// batches (its 100 version counters, its 100 fragments) through cachesweeper's memcached
/// backend, one fragment through the same backend, and one `get` of each baseline client.
fn round_trip(c: &mut Criterion) {
    fn get_leased(backend: &dyn Backend, keys: &[&str]) -> Vec<Leased> {
        let found = block_on(backend.get_leased(keys, Duration::from_secs(1)));
        found.into_iter().map(|found| found.expect("get")).collect()
    }
    fn incr(backend: &dyn Backend, keys: &[&str]) -> Vec<u64> {
        let counted = block_on(backend.incr_each(keys, 0, 1));
        counted
            .into_iter()
            .map(|counted| counted.expect("incr"))
            .collect()
    }
    let Some(server) = Server::start() else {
        return;
    };
    let comments = common::comments(1, 100);
    let sweeper = known_sweeper(Config::Memcached, Some(&server), &comments);
    sweeper
        .scope()
        .render(&CommentsPage {
            comments: &comments,
        })
        .expect("renders");
    // The page's fragment keys, as a debug render of it marks them (a key also names its
    // block's template by the Rust type of the template's render code, which only the render
    // knows).
    let marked = sweeper
        .scope()
        .debug()
        .render(&CommentsPage {
            comments: &comments,
        })
        .expect("renders");
    let fragment_keys: Vec<String> = marked
        .split(" key=\"")
        .skip(1)
        .map(|rest| percent_decoded(&rest[..rest.find('"').expect("a closing quote")]))
        .collect();
    assert_eq!(fragment_keys.len(), comments.len());
    let fragment_keys: Vec<&str> = fragment_keys.iter().map(String::as_str).collect();
    let counter_keys: Vec<String> = comments.iter().map(|c| sweeper.counter_key(c)).collect();
    let counter_keys: Vec<&str> = counter_keys.iter().map(String::as_str).collect();
    let backend = &server.backend;
    let found = get_leased(backend, &fragment_keys);
    let Leased::Hit(value) = found[0].clone() else {
        panic!("the page's fragments are stored under these keys")
    };
    assert!(found.iter().all(|found| matches!(found, Leased::Hit(_))));

    let mut group = c.benchmark_group("round_trip");
    group.bench_function("backend_get_many/1", |b| {
        b.iter(|| get_leased(backend, black_box(&fragment_keys[..1])))
    });
    group.bench_function("backend_get_many/100", |b| {
        b.iter(|| get_leased(backend, black_box(&fragment_keys)))
    });
    group.bench_function("backend_incr_many/100", |b| {
        b.iter(|| incr(backend, black_box(&counter_keys)))
    });
    for wire in [Wire::meta(&server.addr), Wire::text(&server.addr)] {
        wire.set("roundtrip-probe", &value, 600);
        group.bench_function(format!("{}_get/1", wire.name()), |b| {
            b.iter(|| wire.get(black_box("roundtrip-probe")).expect("stored"))
        });
    }
    // The same batches through the Redis backend (its blocking calls: a hand-off to its I/O
    // thread and back per batch), on the same page's keys and value.
    if let Some(redis) = Server::redis() {
        let backend = &redis.backend;
        let items: Vec<SetItem<'_>> = fragment_keys
            .iter()
            .map(|&key| SetItem {
                key,
                value: &value,
                ttl: None,
            })
            .collect();
        block_on(backend.set_many(&items)).expect("set_many");
        incr(backend, &counter_keys);
        group.bench_function("redis_get_many/1", |b| {
            b.iter(|| get_leased(backend, black_box(&fragment_keys[..1])))
        });
        group.bench_function("redis_get_many/100", |b| {
            b.iter(|| get_leased(backend, black_box(&fragment_keys)))
        });
        group.bench_function("redis_incr_many/100", |b| {
            b.iter(|| incr(backend, black_box(&counter_keys)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = page, holes, round_trip
}
criterion_main!(benches);
