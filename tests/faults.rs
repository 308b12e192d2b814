//! A cache fault never fails a page: memcached or Redis killed and restarted mid-run, a Redis
//! Cluster master killed, a port where nothing listens, a listener that accepts and never
//! answers. Every page renders, correct; the circuit breaker keeps a dead server from costing a
//! timeout per fragment.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use cachesweeper::backend::{Backend, Memcached, Null, Redis, SetItem};
use cachesweeper::{Error, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};
use cachesweeper_suite::silent::SilentListener;
use common::{Comment, comment};

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% for c in comments %}{% filter cachesweeper::filters::cachesweeper(c, 600, \"comment\") %}<p>{{ c.author }}: {{ c.body }}</p>{% endfilter %}{% endfor %}"
)]
struct Page<'a> {
    comments: &'a [Comment],
}

fn comments() -> Vec<Comment> {
    (0..20).map(|id| comment(id, 1)).collect()
}

fn reference(page: &Page<'_>) -> String {
    let uncached = Sweeper::builder().backend(Null).build().unwrap();
    uncached.scope().render(page).unwrap()
}

/// A sweeper on `url` with short timeouts and a short retry window, so the test runs fast.
fn sweeper(url: &str) -> Sweeper {
    let backend = Memcached::builder()
        .server(url)
        .connect_timeout(Duration::from_millis(50))
        .io_timeout(Duration::from_millis(50))
        .circuit_breaker(2, Duration::from_millis(300))
        .build()
        .unwrap();
    Sweeper::builder().backend(backend).l1(0).build().unwrap()
}

#[test]
fn memcached_killed_then_restarted_mid_run() {
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    let sweeper = sweeper(&server.url());
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);

    for _ in 0..5 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    assert_eq!(sweeper.stats().errors, 0);

    server.kill();
    for _ in 0..20 {
        assert_eq!(
            sweeper.scope().render(&page).unwrap(),
            expected,
            "a page failed with memcached dead"
        );
    }
    let dead = sweeper.stats();
    assert!(dead.errors > 0, "{dead:?}");

    server.restart();
    // Caching resumes by itself once the retry window has passed: bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
        let request = sweeper.scope();
        assert_eq!(request.render(&page).unwrap(), expected);
        if request.stats().hits == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume: {:?}",
            sweeper.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_host_name_that_does_not_resolve_fails_neither_start_up_nor_pages() {
    // `.invalid` never resolves (RFC 6761): a memcached host still starting, say. Building
    // the backend resolves nothing; each attempt does, and the breaker keeps them few.
    let sweeper = sweeper("memcache://cachesweeper-not-yet.invalid:11211");
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    for _ in 0..5 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    let stats = sweeper.stats();
    assert!(stats.errors > 0 && stats.round_trips <= 4, "{stats:?}");
    assert_eq!(stats.misses, 100);
}

#[test]
fn a_port_where_nothing_listens() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sweeper = sweeper(&format!("127.0.0.1:{port}"));
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    for _ in 0..10 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    let stats = sweeper.stats();
    // 10 batched renders and 10 renders of 20 single lookups: without the breaker, hundreds
    // of attempts. With it: two failures, then skipped until the (300 ms) window ends.
    assert!(stats.round_trips <= 4, "{stats:?}");
    assert_eq!(stats.misses, 400);
    assert!(stats.errors > 0);
}

#[test]
fn a_listener_that_accepts_and_never_answers() {
    let silent = SilentListener::start(Duration::from_secs(30));
    let port = silent.port();
    let sweeper = sweeper(&format!("127.0.0.1:{port}"));
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    for _ in 0..10 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    let stats = sweeper.stats();
    // Each attempt waits out the 50 ms timeout; the breaker stops attempts after two.
    assert!(stats.round_trips <= 3, "{stats:?}");
    assert_eq!(stats.misses, 200);
    drop(silent);
}

#[test]
fn invalidation_reports_a_dead_cache_as_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sweeper = sweeper(&format!("127.0.0.1:{port}"));
    assert!(sweeper.invalidate(&comment(1, 1)).is_err());
}

/// A sweeper on Redis with the same short timeouts and retry window as [`sweeper`]; `url` is a
/// server, or a cluster's seed nodes with `cluster`.
fn redis_sweeper(url: &str, cluster: bool) -> Sweeper {
    let builder = Redis::builder()
        .connect_timeout(Duration::from_millis(50))
        .io_timeout(Duration::from_millis(50))
        .circuit_breaker(2, Duration::from_millis(300));
    let builder = if cluster {
        url.split(',').fold(builder, |b, node| b.cluster_node(node))
    } else {
        builder.url(url)
    };
    Sweeper::builder()
        .backend(builder.build().unwrap())
        .l1(0)
        .build()
        .unwrap()
}

/// Renders until a render hits every fragment, within `within`.
fn until_all_hit(sweeper: &Sweeper, page: &Page<'_>, expected: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        assert_eq!(sweeper.scope().render(page).unwrap(), expected);
        let request = sweeper.scope();
        assert_eq!(request.render(page).unwrap(), expected);
        if request.stats().hits == page.comments.len() as u64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume: {:?}",
            sweeper.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn redis_killed_then_restarted_mid_run() {
    let Some(mut server) = RedisProcess::start() else {
        return;
    };
    let sweeper = redis_sweeper(&server.url(), false);
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    until_all_hit(&sweeper, &page, &expected, Duration::from_secs(5));
    assert_eq!(sweeper.stats().errors, 0);

    server.kill();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            sweeper.scope().render(&page).unwrap(),
            expected,
            "a page failed with Redis dead"
        );
    }
    let dead = sweeper.stats();
    assert!(dead.errors > 0, "{dead:?}");
    // 20 pages with the breaker: a few refused connections, not 20 pages' worth of timeouts.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    server.restart();
    // The connection reconnects by itself once the retry window has passed: bounded wait.
    until_all_hit(&sweeper, &page, &expected, Duration::from_secs(10));
}

#[test]
fn redis_paused_then_resumed() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let sweeper = redis_sweeper(&server.url(), false);
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    until_all_hit(&sweeper, &page, &expected, Duration::from_secs(5));
    server.pause();
    let before = sweeper.stats();
    for _ in 0..10 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    let stats = sweeper.stats() - before;
    // Each attempt waits out the 50 ms timeout; the breaker stops attempts after two.
    assert!(stats.round_trips <= 3, "{stats:?}");
    assert_eq!(stats.misses, 200);
    server.resume();
    until_all_hit(&sweeper, &page, &expected, Duration::from_secs(10));
}

#[test]
fn a_redis_listener_that_accepts_and_never_answers() {
    let silent = SilentListener::start(Duration::from_secs(30));
    let port = silent.port();
    let sweeper = redis_sweeper(&format!("redis://127.0.0.1:{port}"), false);
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    }
    // Bounded: two attempts of about 100 ms, then skipped (a generous bound for a busy machine).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let stats = sweeper.stats();
    assert!(stats.round_trips <= 3, "{stats:?}");
    assert_eq!(stats.misses, 200);
    assert!(stats.errors > 0);
    assert!(sweeper.invalidate(&comment(1, 1)).is_err());
    drop(silent);
}

#[test]
fn a_redis_port_where_nothing_listens() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for cluster in [false, true] {
        let sweeper = redis_sweeper(&format!("redis://127.0.0.1:{port}"), cluster);
        let comments = comments();
        let page = Page {
            comments: &comments,
        };
        let expected = reference(&page);
        for _ in 0..10 {
            assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
            assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
        }
        let stats = sweeper.stats();
        assert!(stats.round_trips <= 4, "cluster: {cluster}: {stats:?}");
        assert_eq!(stats.misses, 400);
        assert!(sweeper.invalidate(&comment(1, 1)).is_err());
    }
}

#[test]
fn a_redis_cluster_master_killed() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let sweeper = redis_sweeper(&cluster.urls(), true);
    let comments = comments();
    let page = Page {
        comments: &comments,
    };
    let expected = reference(&page);
    until_all_hit(&sweeper, &page, &expected, Duration::from_secs(5));

    cluster.nodes_mut()[0].kill();
    let started = Instant::now();
    let before = sweeper.stats();
    for _ in 0..20 {
        assert_eq!(
            sweeper.scope().render(&page).unwrap(),
            expected,
            "a page failed with a master dead"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stats = sweeper.stats() - before;
    assert!(stats.errors > 0, "{stats:?}");
    // The records on the other two masters still hit (the cluster keeps serving the slots it
    // has: `cluster-require-full-coverage no`); those on the dead one are rendered.
    let request = sweeper.scope();
    assert_eq!(request.render(&page).unwrap(), expected);
    let last = request.stats();
    assert!(last.hits > 0 && last.misses > 0, "{last:?}");
}

// The memcached backend's own faults, through its `Backend` operations: what a render or an
// invalidation meets underneath.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A current-thread runtime, like a server's.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The longest gap a 5 ms ticker on the same current-thread runtime sees while `work` runs,
/// and `work`'s output.
fn with_ticker<T>(work: impl std::future::Future<Output = T>) -> (Duration, T) {
    use std::sync::atomic::{AtomicBool, Ordering};
    runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                longest
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let output = work.await;
        stop.store(true, Ordering::Relaxed);
        (ticker.await.unwrap(), output)
    })
}

#[test]
fn a_counter_read_of_a_value_that_is_no_number_fails_alone() {
    let Some(process) = MemcachedProcess::start() else {
        return;
    };
    let cache = Memcached::from_url(&process.url()).unwrap();
    runtime().block_on(async {
        let text = SetItem {
            key: "text",
            value: b"not a number",
            ttl: None,
        };
        cache.set_many(&[text]).await.unwrap();
        let read = cache.incr_each(&["before", "text", "after"], 0, 9).await;
        assert!(matches!(read[..], [Ok(9), Err(_), Ok(9)]), "{read:?}");
        // The next batch is in step.
        let read = cache.incr_each(&["after", "before"], 0, 1).await;
        assert!(matches!(read[..], [Ok(9), Ok(9)]), "{read:?}");
    });
}

/// Every operation, `calls` times at once (as tasks), against two keys: whether each failed,
/// and how long it took.
async fn call_every_operation(cache: Arc<Memcached>, calls: usize) -> Vec<(bool, Duration)> {
    const KEYS: [&str; 2] = ["a|1", "b|2"];
    const ITEM: [SetItem<'static>; 1] = [SetItem {
        key: "a|1",
        value: b"x",
        ttl: None,
    }];
    let lease = Duration::from_secs(1);
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                let started = Instant::now();
                let failed = match i % 5 {
                    0 => cache
                        .get_leased(&KEYS, lease)
                        .await
                        .iter()
                        .all(Result::is_err),
                    1 => cache.set_many(&ITEM).await.is_err(),
                    2 => cache
                        .incr_each(&KEYS, 0, 1)
                        .await
                        .iter()
                        .all(Result::is_err),
                    3 => cache.raise_each(&KEYS, 1).await.iter().all(Result::is_err),
                    _ => cache.release_leases(&KEYS).await.is_err(),
                };
                (failed, started.elapsed())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[test]
fn calls_to_an_unreachable_server_fail_in_time_and_open_the_breaker_without_blocking() {
    // Accepts connections (the kernel does, into the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let (connect, exchange) = (Duration::from_millis(100), Duration::from_millis(150));
    for (name, addr) in [
        ("silent", silent.local_addr().unwrap().to_string()),
        ("closed", format!("127.0.0.1:{closed}")),
    ] {
        // A loaded machine can take the thread away for tens of milliseconds now and then; a
        // call that blocked would stall the ticker in every run, not in one.
        let mut tries = 0;
        let cache = loop {
            let cache = Memcached::builder()
                .server(addr.as_str())
                .connect_timeout(connect)
                .io_timeout(exchange)
                .circuit_breaker(2, Duration::from_secs(60))
                .build()
                .unwrap();
            let (gap, outcomes) = with_ticker(call_every_operation(Arc::new(cache.clone()), 20));
            let slowest = outcomes.iter().map(|&(_, took)| took).max().unwrap();
            assert!(
                outcomes.iter().all(|&(failed, _)| failed),
                "{name}: a call succeeded"
            );
            tries += 1;
            if gap <= Duration::from_millis(20)
                && slowest <= connect + exchange + Duration::from_millis(100)
            {
                break cache;
            }
            assert!(
                tries < 5,
                "{name}: the ticker stalled for {gap:?}, the slowest call took {slowest:?}"
            );
        };
        // The breaker is open: the next call is skipped without the network.
        let (_, skipped) = with_ticker(cache.incr_each(&["a|1"], 0, 1));
        assert!(
            matches!(skipped[..], [Err(Error::CircuitOpen { .. })]),
            "{name}: {skipped:?}"
        );
    }
}

#[test]
fn a_batch_is_split_per_server_and_a_silent_server_fails_only_its_keys() {
    let (Some(one), Some(two)) = (MemcachedProcess::start(), MemcachedProcess::start()) else {
        return;
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let keys: Vec<String> = (0..40).map(|i| format!("cs|v|Comment|{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let exchange = Duration::from_millis(150);
    let runtime = runtime();

    let both = Memcached::builder()
        .server(addr(one.port()))
        .server(addr(two.port()))
        .build()
        .unwrap();
    let on_one = Memcached::from_url(&one.url()).unwrap();
    // Which keys the first server holds: those it finds, once the pair has stored them all.
    let held_by_one: Vec<bool> = runtime.block_on(async {
        // Created even (confirmed), so that the raise goes to its floor.
        let created = both.incr_each(&keys, 0, 4).await;
        assert!(created.iter().all(|r| matches!(r, Ok(4))), "{created:?}");
        let raised = both.raise_each(&keys, 100).await;
        assert!(raised.iter().all(|r| matches!(r, Ok(100))), "{raised:?}");
        let read = both.incr_each(&keys, 0, 0).await;
        assert!(read.iter().all(|r| matches!(r, Ok(100))), "{read:?}");
        // A counter the first server does not hold is created there at 1.
        let read = on_one.incr_each(&keys, 0, 1).await;
        read.into_iter().map(|r| r.unwrap() == 100).collect()
    });
    let spread = held_by_one.iter().filter(|&&held| held).count();
    assert!(
        0 < spread && spread < keys.len(),
        "the keys span both servers"
    );

    // The second server silent: its keys fail after the exchange timeout, the others answer
    // what the first server holds (every key by now: 100 where the pair put it there, 1 where
    // the read above created it).
    let half = Memcached::builder()
        .server(addr(one.port()))
        .server(addr(silent.local_addr().unwrap().port()))
        .io_timeout(exchange)
        .build()
        .unwrap();
    let answers = runtime.block_on(half.incr_each(&keys, 0, 7));
    let mut failed = 0;
    for ((key, answer), held) in keys.iter().zip(&answers).zip(&held_by_one) {
        match answer {
            Ok(value) => assert_eq!(*value, if *held { 100 } else { 1 }, "{key}"),
            Err(Error::Unavailable { .. }) => failed += 1,
            Err(error) => panic!("{key}: {error:?}"),
        }
    }
    assert!(
        0 < failed && failed < keys.len(),
        "{failed} of {} keys failed: the silent server's only",
        keys.len()
    );

    // Both silent: the two exchanges wait side by side, not one after the other.
    let other_silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute = Memcached::builder()
        .server(addr(silent.local_addr().unwrap().port()))
        .server(addr(other_silent.local_addr().unwrap().port()))
        .io_timeout(exchange)
        .build()
        .unwrap();
    let started = Instant::now();
    let answers = runtime.block_on(mute.get_leased(&keys, Duration::from_secs(1)));
    assert!(answers.iter().all(Result::is_err));
    assert!(
        started.elapsed() < 2 * exchange,
        "{:?}: the servers were waited for in turn",
        started.elapsed()
    );
}

#[test]
fn a_client_is_made_at_first_use_and_again_once_the_server_is_back() {
    let port = free_port();
    let cache = Memcached::builder()
        .server(format!("127.0.0.1:{port}"))
        .circuit_breaker(1, Duration::from_millis(100))
        .build()
        .unwrap();
    let (_, down) = with_ticker(cache.incr_each(&["c|1"], 0, 5));
    assert!(
        matches!(down[..], [Err(Error::Unavailable { .. })]),
        "{down:?}"
    );
    let Some(_process) = MemcachedProcess::start_on(port) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(150));
    let (_, up) = with_ticker(cache.incr_each(&["c|1"], 0, 5));
    assert_eq!(up.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [5]);
}
