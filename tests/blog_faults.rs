//! The blog example against a cache that is not there: its start-up never waits on memcached,
//! its pages never fail for it, and caching starts (or resumes) by itself once memcached
//! answers.
//!
//! - [`starts_with_nothing_listening_then_caches_once_memcached_comes`]: `--memcache` names a
//!   port where nothing listens; later a memcached is started on that very port.
//! - [`starts_with_a_silent_memcached`]: the port accepts connections and never answers.
//! - [`load_while_memcached_is_stopped_and_started`]: 8 client threads for 30 s while memcached
//!   is killed at 5 s, restarted at 12 s, killed at 18 s and restarted at 24 s: no request may
//!   fail, sampled pages must equal the uncached reference, and the figures are printed
//!   (`cargo test --test blog_faults -- --nocapture`).
//!
//! Every page is compared with a `--no-cache` server on the same SQLite file, as
//! `tests/blog_e2e.rs` does.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::silent::SilentListener;
use common::blog::{Client, Server, Stats, TempFile, comment_ids};

/// How long the blog may take to start (a debug build seeding a small database): far more
/// than it needs, far less than waiting on a cache would cost if start-up did.
const START_UP_LIMIT: Duration = Duration::from_secs(15);

/// A cached blog (`--memcache URL`) and the uncached reference on the same database file, with
/// how long the cached one took to start.
struct Blogs {
    cached: Server,
    reference: Server,
    start_up: Duration,
    _db: TempFile,
}

fn blogs(memcache_url: &str, articles: u32, comments: u32) -> Blogs {
    let db = TempFile::new("sqlite3");
    let articles = articles.to_string();
    let comments = comments.to_string();
    let common = ["--addr", "127.0.0.1:0", "--db", db.arg()];
    let started = Instant::now();
    let cached = Server::start(
        &[
            &common[..],
            &["--articles", &articles, "--comments", &comments],
            &["--memcache", memcache_url],
        ]
        .concat(),
    );
    let start_up = started.elapsed();
    assert!(
        start_up < START_UP_LIMIT,
        "the blog took {start_up:?} to start with --memcache {memcache_url}"
    );
    // Started second, on the same file: it finds the data there and does not seed.
    let reference = Server::start(&[&common[..], &["--no-cache"]].concat());
    Blogs {
        cached,
        reference,
        start_up,
        _db: db,
    }
}

/// A loopback port where nothing listens (bound, then released).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// GETs `path` from both servers: both 200, with the cached page's figures, and the same body.
/// Returns the cached page's `(hits, misses)` and how long it took.
fn same_page(blog: &Client, reference: &Client, path: &str) -> ((u64, u64), Duration) {
    let started = Instant::now();
    let page = blog.get(path);
    let took = started.elapsed();
    assert_eq!(page.status, 200, "GET {path}: {}", page.body);
    let expected = reference.get(path);
    assert_eq!(expected.status, 200, "reference GET {path}");
    assert!(
        page.body == expected.body,
        "GET {path}: the cached blog's page differs from the uncached one"
    );
    (page.cache(), took)
}

#[test]
fn starts_with_nothing_listening_then_caches_once_memcached_comes() {
    let port = unused_port();
    let url = format!("memcache://127.0.0.1:{port}");
    let Blogs {
        cached,
        reference,
        start_up,
        _db,
    } = blogs(&url, 3, 20);
    eprintln!("nothing listening: the blog started in {start_up:?}");
    let blog = Client::new(&cached);
    let reference = Client::new(&reference);

    for path in ["/", "/articles/1", "/articles/2", "/articles/1", "/"] {
        let ((hits, misses), took) = same_page(&blog, &reference, path);
        assert_eq!(hits, 0, "GET {path}: a hit with no cache");
        assert!(misses > 0, "GET {path}");
        assert!(took < Duration::from_secs(2), "GET {path} took {took:?}");
    }
    let down = blog.stats();
    assert!(down.errors > 0, "/stats counts no error: {down:?}");
    assert_eq!(down.hits, 0, "{down:?}");

    // memcached comes, on the port the blog was given: the blog starts caching by itself.
    let Some(_memcached) = MemcachedProcess::start_on(port) else {
        eprintln!("memcached is not installed: skipping the second half");
        return;
    };
    let came = Instant::now();
    let deadline = came + Duration::from_secs(10);
    let (figures, polls) = loop {
        let (figures, _) = same_page(&blog, &reference, "/articles/1");
        if figures.1 == 0 {
            break (figures, came.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "caching did not begin within 10 s of memcached starting: {figures:?}, {:?}",
            blog.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(figures.0 > 0, "misses=0 and no hit either: {figures:?}");
    eprintln!("nothing listening: caching began {polls:?} after memcached started ({figures:?})");
    let up = blog.stats().since(&down);
    assert!(up.hits > 0, "{up:?}");
    for path in ["/", "/articles/2", "/articles/3"] {
        same_page(&blog, &reference, path);
    }
}

#[test]
fn starts_with_a_silent_memcached() {
    let mut silent = SilentListener::start(Duration::from_secs(30));
    let url = format!("memcache://127.0.0.1:{}", silent.port());
    let Blogs {
        cached,
        reference,
        start_up,
        _db,
    } = blogs(&url, 3, 20);
    eprintln!("silent memcached: the blog started in {start_up:?}");
    let blog = Client::new(&cached);
    let reference = Client::new(&reference);

    // Across more than one retry window of the circuit breaker (2 s), so that it probes the
    // silent server again at least once.
    let paths = ["/articles/1", "/", "/articles/2", "/articles/3"];
    let until = Instant::now() + Duration::from_millis(2_600);
    let mut latencies = Vec::new();
    for path in paths.iter().cycle() {
        let ((hits, misses), took) = same_page(&blog, &reference, path);
        assert_eq!(hits, 0, "GET {path}: a hit from a silent cache");
        assert!(misses > 0, "GET {path}");
        latencies.push(took);
        if Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = blog.stats();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "silent memcached: {} pages, slowest {slowest:?}, first {:?}; {stats:?}; {} connections held",
        latencies.len(),
        latencies[0],
        silent.stop(),
    );
    assert!(stats.errors > 0, "/stats counts no error: {stats:?}");
    // Each exchange has a 200 ms deadline and the breaker opens after two failures: a page may
    // wait out a few deadlines, never seconds.
    assert!(
        slowest < Duration::from_secs(2),
        "a page took {slowest:?} with a silent memcached"
    );
}

// ---------------------------------------------------------------------------------------------
// Load while memcached is stopped and started.

const CLIENTS: usize = 8;
const LOAD: Duration = Duration::from_secs(30);
/// Per client: a bound on the requests, whatever the speed of the machine.
const MAX_REQUESTS_PER_CLIENT: usize = 4_000;
/// Pause between a client's requests.
const THINK: Duration = Duration::from_millis(10);
/// Every request must be answered, whole, within this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Articles seeded; articles `1..=VOTED` receive likes, the others none.
const ARTICLES: u32 = 4;
const VOTED: i64 = 3;
const COMMENTS: u32 = 30;

#[derive(Debug, Clone, Copy)]
enum Action {
    Kill,
    Restart,
}

/// When the controller acts, from the start of the load.
const SCHEDULE: [(Duration, Action); 4] = [
    (Duration::from_secs(5), Action::Kill),
    (Duration::from_secs(12), Action::Restart),
    (Duration::from_secs(18), Action::Kill),
    (Duration::from_secs(24), Action::Restart),
];

/// One request of the load.
struct Sample {
    phase: usize,
    /// A like (`POST`, which invalidates) rather than a `GET`.
    post: bool,
    latency: Duration,
    ok: bool,
}

/// One comparison of a cached page with the reference's, with no vote in flight.
struct Check {
    phase: usize,
    path: String,
    equal: bool,
}

/// Whether memcached runs during phase `i` (phases are separated by the schedule's actions).
fn phase_is_up(i: usize) -> bool {
    i == 0 || matches!(SCHEDULE[i - 1].1, Action::Restart)
}

#[test]
#[ignore = "heavy: 30 s of load; run by scripts/test.sh"]
fn load_while_memcached_is_stopped_and_started() {
    let Some(mut memcached) = MemcachedProcess::start() else {
        eprintln!("memcached is not installed: skipping the load test");
        return;
    };
    let Blogs {
        mut cached,
        reference,
        start_up: _,
        _db,
    } = blogs(&memcached.url(), ARTICLES, COMMENTS);
    let setup = Client::new(&cached);
    let reference_client = Client::new(&reference);

    // The comments that clients like, on the voted articles only.
    let votable: Vec<(i64, i64)> = (1..=VOTED)
        .flat_map(|article| {
            let page = setup.get(&format!("/articles/{article}"));
            assert_eq!(page.status, 200);
            comment_ids(&page.body)
                .into_iter()
                .map(move |comment| (article, comment))
        })
        .collect();
    assert_eq!(votable.len(), VOTED as usize * COMMENTS as usize);
    let paths: Vec<String> = std::iter::once("/".to_owned())
        .chain((1..=i64::from(ARTICLES)).map(|a| format!("/articles/{a}")))
        .collect();
    // Warm: every page once, so the load starts from a cache that holds them.
    for path in &paths {
        same_page(&setup, &reference_client, path);
    }

    let phase = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Likes take it shared, a content check exclusively: a check compares with no vote in
    // flight, so the cached page must equal the reference exactly, voted articles included.
    let votes = RwLock::new(());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut phase_stats: Vec<(Duration, Stats)> = Vec::new();
    let start_stats = setup.stats();
    let start = Instant::now();

    let (samples, checks): (Vec<Sample>, Vec<Check>) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (cached, phase, stop, votes, failures, votable, paths) =
                    (&cached, &phase, &stop, &votes, &failures, &votable, &paths);
                scope.spawn(move || {
                    let client = Client::with_timeout(cached, CLIENT_TIMEOUT);
                    let mut samples = Vec::new();
                    for i in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || start.elapsed() >= LOAD {
                            break;
                        }
                        let turn = n * 7 + i;
                        let in_phase = phase.load(Ordering::SeqCst);
                        let like = turn % 16 == 0; // about one request in 16
                        // Taken before the clock starts: waiting on a content check is not
                        // the blog's latency.
                        let shared = like.then(|| votes.read().unwrap());
                        let began = Instant::now();
                        let (what, outcome) = if like {
                            let (article, comment) = votable[(turn * 31) % votable.len()];
                            let path = format!("/articles/{article}/comments/{comment}/like");
                            (format!("POST {path}"), client.try_post(&path, None))
                        } else {
                            let path = &paths[turn % paths.len()];
                            (format!("GET {path}"), client.try_get(path))
                        };
                        let latency = began.elapsed();
                        drop(shared);
                        let ok = match &outcome {
                            Ok(page) => (200..400).contains(&page.status),
                            Err(_) => false,
                        };
                        if !ok {
                            let at = start.elapsed();
                            let why = match outcome {
                                Ok(page) => format!("status {}: {:.200}", page.status, page.body),
                                Err(error) => error,
                            };
                            failures.lock().unwrap().push(format!(
                                "{what} at {at:.2?} (phase {in_phase}), {latency:?}: {why}"
                            ));
                        }
                        samples.push(Sample {
                            phase: in_phase,
                            post: like,
                            latency,
                            ok,
                        });
                        std::thread::sleep(THINK);
                    }
                    samples
                })
            })
            .collect();

        let checker = {
            let (cached, reference, phase, stop, votes, failures, paths) = (
                &cached, &reference, &phase, &stop, &votes, &failures, &paths,
            );
            scope.spawn(move || {
                let blog = Client::with_timeout(cached, CLIENT_TIMEOUT);
                let reference = Client::with_timeout(reference, CLIENT_TIMEOUT);
                let mut checks = Vec::new();
                for path in paths.iter().cycle() {
                    if stop.load(Ordering::Relaxed) || start.elapsed() >= LOAD {
                        break;
                    }
                    let in_phase = phase.load(Ordering::SeqCst);
                    let (page, expected) = {
                        let _exclusive = votes.write().unwrap();
                        (blog.try_get(path), reference.try_get(path))
                    };
                    match (page, expected) {
                        (Ok(page), Ok(expected)) => checks.push(Check {
                            phase: in_phase,
                            path: path.clone(),
                            equal: page.status == 200
                                && expected.status == 200
                                && page.body == expected.body,
                        }),
                        (page, expected) => failures.lock().unwrap().push(format!(
                            "content check GET {path} at {:.2?} (phase {in_phase}): \
                             blog {:?}, reference {:?}",
                            start.elapsed(),
                            page.err(),
                            expected.err()
                        )),
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                checks
            })
        };

        // The controller, on this thread.
        for (at, action) in SCHEDULE {
            std::thread::sleep(at.saturating_sub(start.elapsed()));
            phase_stats.push((start.elapsed(), setup.stats()));
            match action {
                Action::Kill => memcached.kill(),
                Action::Restart => memcached.restart(),
            }
            phase.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(LOAD.saturating_sub(start.elapsed()));
        stop.store(true, Ordering::Relaxed);
        phase_stats.push((start.elapsed(), setup.stats()));

        let samples = clients
            .into_iter()
            .flat_map(|client| client.join().expect("a client thread"))
            .collect();
        (samples, checker.join().expect("the checker thread"))
    });

    cached.assert_running();
    let log = cached.log();

    // The figures.
    print_figures(&samples, &start_stats, &phase_stats);
    let total = phase_stats
        .last()
        .expect("the final figures")
        .1
        .since(&start_stats);
    let checks_by_phase: Vec<String> = (0..phase_stats.len())
        .map(|i| {
            let of_phase = checks.iter().filter(|c| c.phase == i);
            format!(
                "{}/{}",
                of_phase.clone().filter(|c| c.equal).count(),
                of_phase.count()
            )
        })
        .collect();
    eprintln!(
        "content checks (cached page == reference, no vote in flight), equal/total by phase: {}; \
         invalidations: {}\n",
        checks_by_phase.join(" "),
        total.invalidations
    );

    // The verdicts.
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests ({} load requests in all); the first ones:\n{}",
        failures.len(),
        samples.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    let wrong: Vec<String> = checks
        .iter()
        .filter(|c| !c.equal)
        .map(|c| format!("GET {} in phase {}", c.path, c.phase))
        .collect();
    assert!(
        wrong.is_empty(),
        "pages differ from the reference: {wrong:?}"
    );
    for i in 0..phase_stats.len() {
        let checked = checks.iter().filter(|c| c.phase == i).count();
        assert!(checked > 0, "no content check in phase {i}");
    }
    assert!(
        !log.contains("panicked") && !log.contains("request failed"),
        "the blog logged a failure:\n{log}"
    );
    // The outage was felt (errors counted while down), and caching resumed after the restart.
    for (i, window) in phase_stats.windows(2).enumerate() {
        let delta = window[1].1.since(&window[0].1);
        if !phase_is_up(i + 1) {
            assert!(delta.errors > 0, "phase {}: no cache error counted", i + 1);
        }
    }
    let last = phase_stats.len() - 1;
    let resumed = phase_stats[last].1.since(&phase_stats[last - 1].1);
    assert!(
        resumed.hits > 0,
        "no hit after the last restart: {resumed:?}"
    );

    // After the load, memcached up again: every page, cached or not, equals the reference.
    for path in &paths {
        same_page(&setup, &reference_client, path);
        same_page(&setup, &reference_client, path);
    }
}

/// The p50, p99 and max latency of `samples`, in ms.
fn latencies<'a>(samples: impl Iterator<Item = &'a Sample>) -> [f64; 3] {
    let mut latencies: Vec<Duration> = samples.map(|s| s.latency).collect();
    latencies.sort();
    let at = |q: usize| {
        let i = (latencies.len() * q / 100).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    [at(50), at(99), at(100)]
}

/// The load test's table: per phase, the requests and how they went, and the cache's work from
/// `/stats` deltas (which include the content checks' requests).
fn print_figures(samples: &[Sample], start: &Stats, phase_ends: &[(Duration, Stats)]) {
    eprintln!(
        "\nblog under load ({CLIENTS} clients, {THINK:?} think time, {CLIENT_TIMEOUT:?} client \
         timeout) while memcached is killed and restarted; latencies in ms (GET: pages; like: \
         POST + invalidation); hits/misses/errors from /stats deltas:"
    );
    let header = [
        "phase", "cache", "requests", "ok", "failed", "GET p50", "GET p99", "like p50", "like p99",
        "max", "hits", "misses", "errors",
    ];
    let row = |cells: [String; 13]| {
        let mut line = format!("{:<12} {:<5}", cells[0], cells[1]);
        for cell in &cells[2..] {
            line.push_str(&format!(" {cell:>8}"));
        }
        eprintln!("{line}");
    };
    row(header.map(str::to_owned));
    let mut rows: Vec<(String, &str, Vec<&Sample>, Stats)> = Vec::new();
    let mut phase_start = (Duration::ZERO, *start);
    for (i, &(end, stats)) in phase_ends.iter().enumerate() {
        rows.push((
            format!(
                "{:.1}-{:.1}s",
                phase_start.0.as_secs_f64(),
                end.as_secs_f64()
            ),
            if phase_is_up(i) { "up" } else { "down" },
            samples.iter().filter(|s| s.phase == i).collect(),
            stats.since(&phase_start.1),
        ));
        phase_start = (end, stats);
    }
    rows.push((
        "total".to_owned(),
        "",
        samples.iter().collect(),
        phase_start.1.since(start),
    ));
    for (phase, cache, of_phase, delta) in rows {
        let ok = of_phase.iter().filter(|s| s.ok).count();
        let [get50, get99, _] = latencies(of_phase.iter().copied().filter(|s| !s.post));
        let [post50, post99, _] = latencies(of_phase.iter().copied().filter(|s| s.post));
        let [_, _, max] = latencies(of_phase.iter().copied());
        let ms = |v: f64| format!("{v:.1}");
        row([
            phase,
            cache.to_owned(),
            of_phase.len().to_string(),
            ok.to_string(),
            (of_phase.len() - ok).to_string(),
            ms(get50),
            ms(get99),
            ms(post50),
            ms(post99),
            ms(max),
            delta.hits.to_string(),
            delta.misses.to_string(),
            delta.errors.to_string(),
        ]);
    }
}
