//! A cache fault never fails a page: memcached or Redis killed and restarted mid-run, a Redis
//! Cluster master killed, a port where nothing listens, a listener that accepts and never
//! answers. Every page renders, correct; the circuit breaker keeps a dead server from costing a
//! timeout per fragment.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use askama::Template;
use cachesweeper::Sweeper;
use cachesweeper::backend::{Memcached, Null, Redis};
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
