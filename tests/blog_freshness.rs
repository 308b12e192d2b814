//! The production experiment of the never-stale guarantee, on the real blog: once a like has
//! been answered, no article page requested from then on, through either of two processes,
//! shows that comment without it.
//!
//! Deployed as production runs it: two blog processes on one database (`--db` on the same
//! SQLite file; and again with `--postgres` on the same PostgreSQL database) and one memcached
//! (`--memcache`), one hot article of 30 comments, and, for `CACHESWEEPER_BLOG_FRESHNESS_SECS`
//! seconds (default 8; the run is 20):
//!
//! - 6 **likers**: each POSTs `/articles/1/comments/{cid}/like` for a random comment through a
//!   random process; once the answer (303) has arrived, the like is *acknowledged*: the blog
//!   committed it, then invalidated the comment, before answering. Every like adds exactly one,
//!   so a per-comment atomic counts the acknowledged likes.
//! - 2 **foreign writers**: each likes a random comment with an `UPDATE` of its own on the
//!   database (a connection that is not the blog's, as `sqlite3` or `psql` in a shell is),
//!   every 20 ms. Its like is *acknowledged* [`FOREIGN_LAG`] after its commit: the change log's
//!   follower in each process applies foreign writes within its lag (SQLite: its 10 ms poll
//!   interval; PostgreSQL: a notification; see `tests/changes.rs` and
//!   `tests/changes_postgres.rs` for the measured lags), and the bound leaves room for a
//!   loaded machine.
//! - 8 **readers**: each notes every comment's acknowledged count, then GETs `/articles/1`
//!   through a random process and reads every comment's `data-likes`. A comment that shows fewer
//!   than its initial count (read before the load) plus the likes acknowledged when the read
//!   started is a **stale comment read**: the page shows its state from before a write whose
//!   answer had arrived (or, for a foreign write, that committed longer than the bound ago).
//!
//! It prints `blog freshness: reads=N writes=N stale_comment_reads=N hits=H misses=M` (hits and
//! misses from `/stats` of both processes, during the load) and a line of details (stale pages,
//! failures, cache errors, read and like latency percentiles), then asserts no stale read, no
//! failed request, that the cache was used, and that the database holds every acknowledged like
//! exactly (none lost to a busy database).
//!
//! Before the never-stale redesign, a 20 s run found 34,014 stale comment reads out of 42,911
//! page reads.
//!
//! And again behind a real Varnish (`examples/blog/varnish.vcl`, in front of the first
//! process; both purge it): the readers are visitors without a cookie, whose pages Varnish
//! keeps, reading through it; the likers like through it and through the second process.
//! A page Varnish keeps must be purged by every like on it, and a page rendered from rows read
//! before a like must never reach it after that like's purge.
//!
//! Run: `CACHESWEEPER_BLOG_FRESHNESS_SECS=20 cargo test --test blog_freshness -- --nocapture`

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachesweeper_suite::free_port;
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::postgres::PostgresProcess;
use cachesweeper_suite::varnish::VarnishProcess;
use common::blog::{Client, Server, Stats, TempFile, comment_counts, comment_ids};
use common::random_below;

const COMMENTS: usize = 30;
const LIKERS: usize = 6;
const READERS: usize = 8;
const FOREIGN_WRITERS: usize = 2;
/// How long after its commit a foreign write must show on every page that begins reading.
const FOREIGN_LAG: Duration = Duration::from_millis(100);
const PAGE: &str = "/articles/1";
/// How long each comment list render takes behind Varnish: longer than the purges' settle
/// time (50 ms), which alone would cover a faster render.
const SLOW_RENDER_MS: u64 = 100;

/// How long the load runs: `CACHESWEEPER_BLOG_FRESHNESS_SECS`, 8 s by default.
fn load_duration() -> Duration {
    let secs = match std::env::var("CACHESWEEPER_BLOG_FRESHNESS_SECS") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("CACHESWEEPER_BLOG_FRESHNESS_SECS={value:?}: not seconds")),
        Err(_) => 8,
    };
    Duration::from_secs(secs)
}

/// What the threads share.
struct Shared {
    /// The comments' ids, in page order.
    ids: Vec<i64>,
    /// Each comment's like count before the load.
    initial: Vec<u64>,
    /// Each comment's likes whose POST has been answered.
    acked: Vec<AtomicU64>,
    /// Each comment's likes sent (answered or not): no page can show more.
    sent: Vec<AtomicU64>,
    /// When each foreign like on each comment was committed.
    foreign: Vec<Mutex<Vec<Instant>>>,
    foreign_writes: AtomicU64,
    stop: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    stale_comment_reads: AtomicU64,
    stale_pages: AtomicU64,
    /// Reads Varnish answered from what it kept.
    kept_reads: AtomicU64,
    /// Comments showing more likes than were ever sent: the page is misread.
    impossible: AtomicU64,
    /// The first few stale reads, described.
    examples: Mutex<Vec<String>>,
    /// Failed requests (transport errors, unexpected statuses, malformed pages), described.
    failures: Mutex<Vec<String>>,
    /// How long each answered read and like took.
    read_times: Mutex<Vec<Duration>>,
    write_times: Mutex<Vec<Duration>>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// The database both blog processes and the foreign writers share.
enum Database {
    Sqlite(TempFile),
    Postgres(PostgresProcess),
}

impl Database {
    /// The blog's command-line arguments for it.
    fn args(&self) -> [String; 2] {
        match self {
            Database::Sqlite(file) => ["--db".to_owned(), file.arg().to_owned()],
            Database::Postgres(server) => ["--postgres".to_owned(), server.url("blog")],
        }
    }

    /// A connection of its own that likes a comment (`UPDATE comments SET likes = likes + 1
    /// WHERE id = …`) and says how many rows it changed.
    fn liker(&self) -> Box<dyn FnMut(i64) -> Result<u64, String> + '_> {
        const LIKE: &str = "UPDATE comments SET likes = likes + 1 WHERE id = ";
        match self {
            Database::Sqlite(file) => {
                let conn =
                    rusqlite::Connection::open(file.path()).expect("open the blog's database");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                Box::new(move |id| {
                    conn.execute(&format!("{LIKE}?1"), [id])
                        .map(|n| n as u64)
                        .map_err(|error| error.to_string())
                })
            }
            Database::Postgres(server) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = runtime.block_on(async {
                    let (client, connection) =
                        tokio_postgres::connect(&server.url("blog"), tokio_postgres::NoTls)
                            .await
                            .expect("connect to the blog's database");
                    tokio::spawn(connection);
                    client
                });
                Box::new(move |id| {
                    runtime
                        .block_on(client.execute(&format!("{LIKE}$1"), &[&id]))
                        .map_err(|error| error.to_string())
                })
            }
        }
    }
}

/// Where the readers and likers send their requests.
enum Front {
    /// Straight to the two processes.
    Direct,
    /// The readers through a Varnish in front of the first process (as visitors without a
    /// cookie, whose pages it keeps); the likers through it and to the second process.
    Varnish,
}

#[test]
fn two_blog_processes_on_one_database_and_one_memcached_never_show_an_answered_like_missing() {
    // Each of these runs two blogs, a loaded memcached and maybe Varnish or PostgreSQL on 2
    // cores, and bounds how soon a foreign write shows: one at a time, servers' starts too.
    let _one = common::one_at_a_time();
    freshness(Database::Sqlite(TempFile::new("sqlite3")), Front::Direct);
}

#[test]
fn two_blog_processes_behind_varnish_never_show_an_answered_like_missing() {
    let _one = common::one_at_a_time();
    freshness(Database::Sqlite(TempFile::new("sqlite3")), Front::Varnish);
}

#[test]
fn two_blog_processes_on_one_postgres_database_never_show_an_answered_like_missing() {
    let _one = common::one_at_a_time();
    let Some(server) = PostgresProcess::start() else {
        return;
    };
    server.create_database("blog");
    freshness(Database::Postgres(server), Front::Direct);
}

fn freshness(db: Database, front: Front) {
    let Some(memcached) = MemcachedProcess::start() else {
        eprintln!("memcached is not installed: skipping the blog freshness test");
        return;
    };
    let url = memcached.url();
    let comments = COMMENTS.to_string();
    let [db_flag, db_arg] = db.args();
    let mut args = vec![
        db_flag,
        db_arg,
        "--memcache".to_owned(),
        url,
        "--articles".to_owned(),
        "1".to_owned(),
        "--comments".to_owned(),
        comments,
    ];
    // Varnish first, pointed at the port the first process will take.
    let first_port = free_port();
    let varnish = match front {
        Front::Direct => None,
        Front::Varnish => {
            let vcl =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/varnish.vcl");
            let Some(varnish) = VarnishProcess::start(&vcl, first_port) else {
                return;
            };
            args.push("--varnish".to_owned());
            args.push(format!("127.0.0.1:{}", varnish.port()));
            // Renders slower than the purges' settle time: a page rendered from comments read
            // before a like reaches Varnish after both its purges, unless marked so that
            // Varnish does not keep it.
            args.push("--slow-render-ms".to_owned());
            args.push(SLOW_RENDER_MS.to_string());
            Some(varnish)
        }
    };
    let with_addr = |addr: String| {
        let mut all = vec!["--addr".to_owned(), addr];
        all.extend(args.iter().cloned());
        all
    };
    let first_args = with_addr(format!("127.0.0.1:{first_port}"));
    let second_args = with_addr("127.0.0.1:0".to_owned());
    // One after the other: the first seeds the empty database before it listens (`start` returns
    // once it does); the second finds the data there and does not seed.
    let mut servers = [
        Server::start(&strs(&first_args)),
        Server::start(&strs(&second_args)),
    ];
    // Behind Varnish the writers pause between likes (about 2 a second in all, a few times
    // the slow render's length apart): a page every like purges at once would never stay kept
    // long enough to be read from Varnish, which is what is under test, and the page a like
    // during a render would leave behind must stay long enough to be read.
    let (pause, foreign_pause) = match front {
        Front::Direct => (Duration::ZERO, Duration::from_millis(20)),
        Front::Varnish => (Duration::from_millis(2000), Duration::from_millis(2000)),
    };
    // Who reads and who likes, where.
    let readers_at = || -> Vec<Client> {
        match &varnish {
            None => servers.iter().map(Client::new).collect(),
            Some(varnish) => vec![Client::new(&servers[0]).without_cookie_at(&varnish.url())],
        }
    };
    let likers_at = || -> Vec<Client> {
        match &varnish {
            None => servers.iter().map(Client::new).collect(),
            Some(varnish) => vec![
                Client::new(&servers[0]).at(&varnish.url()),
                Client::new(&servers[1]),
            ],
        }
    };

    // The page before the load: the comments and their initial counts, the same through both.
    let probes: Vec<Client> = servers.iter().map(Client::new).collect();
    let first = probes[0].get(PAGE);
    assert_eq!(first.status, 200, "GET {PAGE}");
    let ids = comment_ids(&first.body);
    assert_eq!(ids.len(), COMMENTS, "comments on the page");
    let initial: Vec<u64> = ids
        .iter()
        .map(|&id| comment_counts(&first.body, id).0 as u64)
        .collect();
    assert_eq!(
        probes[1].get(PAGE).body,
        first.body,
        "the two processes differ"
    );

    let shared = Shared {
        ids,
        initial,
        acked: (0..COMMENTS).map(|_| AtomicU64::new(0)).collect(),
        sent: (0..COMMENTS).map(|_| AtomicU64::new(0)).collect(),
        foreign: (0..COMMENTS).map(|_| Mutex::new(Vec::new())).collect(),
        foreign_writes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        stale_comment_reads: AtomicU64::new(0),
        stale_pages: AtomicU64::new(0),
        kept_reads: AtomicU64::new(0),
        impossible: AtomicU64::new(0),
        examples: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        read_times: Mutex::new(Vec::new()),
        write_times: Mutex::new(Vec::new()),
    };
    let before: Vec<Stats> = probes.iter().map(Client::stats).collect();
    let duration = load_duration();
    let started = Instant::now();
    std::thread::scope(|threads| {
        for _ in 0..LIKERS {
            threads.spawn(|| liker(&shared, &likers_at(), pause));
        }
        for _ in 0..READERS {
            threads.spawn(|| reader(&shared, &readers_at()));
        }
        for _ in 0..FOREIGN_WRITERS {
            threads.spawn(|| foreign_writer(&shared, &db, foreign_pause));
        }
        std::thread::sleep(duration);
        shared.stop.store(true, Ordering::SeqCst);
    });
    let elapsed = started.elapsed();
    let during: Vec<Stats> = probes
        .iter()
        .zip(&before)
        .map(|(client, before)| client.stats().since(before))
        .collect();
    let (hits, misses) = during
        .iter()
        .fold((0, 0), |(h, m), s| (h + s.hits, m + s.misses));

    let reads = shared.reads.load(Ordering::SeqCst);
    let writes = shared.writes.load(Ordering::SeqCst);
    let stale = shared.stale_comment_reads.load(Ordering::SeqCst);
    let foreign_writes = shared.foreign_writes.load(Ordering::SeqCst);
    eprintln!(
        "blog freshness: reads={reads} writes={writes} foreign_writes={foreign_writes} stale_comment_reads={stale} hits={hits} misses={misses}"
    );
    eprintln!(
        "blog freshness:   {:.1} s, stale_pages={} kept_by_varnish={} impossible_counts={} \
         failures={} cache errors={} invalidations={} (per process: {:?})",
        elapsed.as_secs_f64(),
        shared.stale_pages.load(Ordering::SeqCst),
        shared.kept_reads.load(Ordering::SeqCst),
        shared.impossible.load(Ordering::SeqCst),
        shared.failures.lock().unwrap().len(),
        during.iter().map(|s| s.errors).sum::<u64>(),
        during.iter().map(|s| s.invalidations).sum::<u64>(),
        during
            .iter()
            .map(|s| (s.hits, s.misses))
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "blog freshness:   read latency {}; like latency {}",
        percentiles(&mut shared.read_times.lock().unwrap()),
        percentiles(&mut shared.write_times.lock().unwrap()),
    );
    for example in shared.examples.lock().unwrap().iter() {
        eprintln!("blog freshness:   e.g. {example}");
    }

    for server in &mut servers {
        server.assert_running();
    }
    let failures = shared.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(stale, 0, "stale comment reads (see the examples above)");
    assert_eq!(
        shared.impossible.load(Ordering::SeqCst),
        0,
        "pages showing likes never sent"
    );
    assert!(
        reads > 0 && writes > 0 && foreign_writes > 0,
        "no load: reads={reads} writes={writes} foreign_writes={foreign_writes}"
    );
    assert!(hits > 0, "the cache was never hit (misses={misses})");
    if varnish.is_some() {
        assert!(
            shared.kept_reads.load(Ordering::SeqCst) > 0,
            "Varnish never answered a read from what it kept"
        );
    }
    for server in &servers {
        assert!(
            !server.log().contains("could not invalidate"),
            "an invalidation failed; log:\n{}",
            server.log()
        );
    }

    // Every like was answered: the database holds each of them, once, and both processes show
    // exactly that now (a foreign like counts once its bound has passed, as during the load).
    std::thread::sleep(FOREIGN_LAG);
    for (p, probe) in probes.iter().enumerate() {
        let page = probe.get(PAGE);
        assert_eq!(page.status, 200);
        for (i, &id) in shared.ids.iter().enumerate() {
            let expected = shared.initial[i]
                + shared.acked[i].load(Ordering::SeqCst)
                + shared.foreign[i].lock().unwrap().len() as u64;
            assert_eq!(
                comment_counts(&page.body, id).0 as u64,
                expected,
                "process {p}, comment {id} after the load"
            );
        }
    }
}

/// Likes random comments through random `clients`, `pause` apart, until told to stop.
fn liker(shared: &Shared, clients: &[Client], pause: Duration) {
    while !shared.stop.load(Ordering::SeqCst) {
        let c = random_below(COMMENTS as u64) as usize;
        let p = random_below(clients.len() as u64) as usize;
        let path = format!("{PAGE}/comments/{}/like", shared.ids[c]);
        shared.sent[c].fetch_add(1, Ordering::SeqCst);
        let sent = Instant::now();
        match clients[p].try_post(&path, None) {
            Ok(page) if page.status == 303 || page.status == 200 => {
                shared.acked[c].fetch_add(1, Ordering::SeqCst);
                shared.writes.fetch_add(1, Ordering::SeqCst);
                shared.write_times.lock().unwrap().push(sent.elapsed());
            }
            Ok(page) => shared.fail(format!(
                "POST {path} via process {p}: status {}: {}",
                page.status,
                abbreviated(&page.body)
            )),
            Err(error) => shared.fail(format!("POST {path} via process {p}: {error}")),
        }
        std::thread::sleep(pause);
    }
}

/// Likes random comments with SQL of its own on the database until told to stop: the writes
/// no blog process makes, which only the database's change log tells them about.
fn foreign_writer(shared: &Shared, db: &Database, pause: Duration) {
    let mut like = db.liker();
    while !shared.stop.load(Ordering::SeqCst) {
        let c = random_below(COMMENTS as u64) as usize;
        shared.sent[c].fetch_add(1, Ordering::SeqCst);
        match like(shared.ids[c]) {
            Ok(1) => {
                shared.foreign[c].lock().unwrap().push(Instant::now());
                shared.foreign_writes.fetch_add(1, Ordering::SeqCst);
            }
            other => shared.fail(format!(
                "foreign like of comment {}: {other:?}",
                shared.ids[c]
            )),
        }
        std::thread::sleep(pause);
    }
}

/// Reads the article page through random `clients` until told to stop, checking every comment
/// against the likes acknowledged when the read started.
fn reader(shared: &Shared, clients: &[Client]) {
    while !shared.stop.load(Ordering::SeqCst) {
        let p = random_below(clients.len() as u64) as usize;
        let starts = Instant::now();
        let acked: Vec<u64> = shared
            .acked
            .iter()
            .zip(&shared.foreign)
            .map(|(count, foreign)| {
                let applied = foreign
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|committed| starts.duration_since(**committed) > FOREIGN_LAG)
                    .count();
                count.load(Ordering::SeqCst) + applied as u64
            })
            .collect();
        let sent = Instant::now();
        let page = match clients[p].try_get(PAGE) {
            Ok(page) => page,
            Err(error) => {
                shared.fail(format!("GET {PAGE} via process {p}: {error}"));
                continue;
            }
        };
        if page.status != 200 || comment_ids(&page.body) != shared.ids {
            shared.fail(format!(
                "GET {PAGE} via process {p}: status {}, comments {:?}",
                page.status,
                comment_ids(&page.body)
            ));
            continue;
        }
        shared.reads.fetch_add(1, Ordering::SeqCst);
        if page.header("x-varnish-cache") == Some("hit") {
            shared.kept_reads.fetch_add(1, Ordering::SeqCst);
        }
        shared.read_times.lock().unwrap().push(sent.elapsed());
        let mut stale_here = 0;
        for (i, &id) in shared.ids.iter().enumerate() {
            let shown = comment_counts(&page.body, id).0 as u64;
            let at_least = shared.initial[i] + acked[i];
            if shown < at_least {
                stale_here += 1;
                let mut examples = shared.examples.lock().unwrap();
                if examples.len() < 5 {
                    examples.push(format!(
                        "client {p}, comment {id}: shows {shown} likes, {at_least} acknowledged \
                         when the read started (cache {:?}, varnish {:?})",
                        page.cache,
                        page.header("x-varnish-cache"),
                    ));
                }
            }
            if shown > shared.initial[i] + shared.sent[i].load(Ordering::SeqCst) {
                shared.impossible.fetch_add(1, Ordering::SeqCst);
            }
        }
        if stale_here > 0 {
            shared
                .stale_comment_reads
                .fetch_add(stale_here, Ordering::SeqCst);
            shared.stale_pages.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Arguments as `Server::start` takes them.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `p50=… p99=… max=…` of `times`, in milliseconds.
fn percentiles(times: &mut [Duration]) -> String {
    if times.is_empty() {
        return "none".to_owned();
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    format!(
        "p50={:.1}ms p99={:.1}ms max={:.1}ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// The start of a body, for messages.
fn abbreviated(body: &str) -> String {
    body.chars().take(200).collect()
}
