//! The async API: `render_async` on a borrowed page and `invalidate_async` give what the
//! blocking calls give, in the same round trips, and never stall the runtime's thread, not
//! even while memcached or Redis is unreachable.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use askama::Template;
use cachesweeper::Sweeper;
use cachesweeper::backend::{Memcached, Redis};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::RedisProcess;
use common::{Article, Comment, Renders, article, cases, comment, known};

mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "article.html")]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

fn counts(list: &[(&'static str, u32)]) -> BTreeMap<&'static str, u32> {
    list.iter().copied().collect()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Compiles only if the future can move between a multi-threaded runtime's workers (what
/// `tokio::spawn` and axum handlers need).
fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

#[test]
fn an_async_render_of_a_borrowed_page_matches_the_blocking_one() {
    let _one = common::one_at_a_time();
    let runtime = current_thread();
    for case in cases() {
        let s = &case.sweeper;
        let article = article(1);
        let mut comments: Vec<Comment> = (1..=20).map(|id| comment(id, 1)).collect();
        known(s, [&article]);
        known(s, &comments);
        let renders = Renders::default();
        let page = |comments: &[Comment]| {
            let page = ArticlePage {
                article: &article,
                comments,
                renders: &renders,
            };
            let before = s.stats();
            let html = runtime
                .block_on(assert_send(s.scope().render_async(&page)))
                .unwrap();
            (html, s.stats() - before)
        };

        let (cold, cold_stats) = page(&comments);
        // The list is rendered twice, as by the blocking render: once in a record pass, to find
        // the comments in it and fetch them in one batch, then for real.
        assert_eq!(
            renders.take(),
            counts(&[("article", 1), ("comment", 20), ("list", 2)]),
            "{}",
            case.name
        );
        let before = s.stats();
        let blocking = s
            .scope()
            .render(&ArticlePage {
                article: &article,
                comments: &comments,
                renders: &renders,
            })
            .unwrap();
        let blocking_stats = s.stats() - before;
        assert_eq!(cold, blocking, "{}: the same page either way", case.name);
        assert_eq!(renders.take(), counts(&[]), "{}", case.name);

        let (warm, warm_stats) = page(&comments);
        assert_eq!(warm, cold, "{}", case.name);
        assert_eq!(
            renders.take(),
            counts(&[]),
            "{}: warm renders nothing",
            case.name
        );
        assert_eq!(warm_stats.hits, 2, "{}: two outer fragments", case.name);
        // The same round trips as the blocking render (versions, then fragments not in the L1).
        assert_eq!(
            warm_stats.round_trips, blocking_stats.round_trips,
            "{}",
            case.name
        );
        assert!(cold_stats.round_trips <= 8, "{}: {cold_stats:?}", case.name);

        comments[4].likes += 1;
        runtime.block_on(s.invalidate_async(&comments[4])).unwrap();
        let (voted, _) = page(&comments);
        assert_eq!(
            renders.take(),
            counts(&[("article", 1), ("comment", 1), ("list", 2)]),
            "{}: the vote re-renders its comment and the fragments around it",
            case.name
        );
        assert!(
            voted.contains(r#"id="comment-5" data-likes="1""#),
            "{}",
            case.name
        );
    }
}

#[test]
fn an_async_invalidation_dropped_before_it_is_done_still_lands() {
    let _one = common::one_at_a_time();
    let runtime = current_thread();
    for case in cases() {
        let s = &case.sweeper;
        let comment = comment(1, 1);
        let before = s.version(&comment).unwrap();
        // Polled once, then dropped: as when a client disconnects in the middle of a vote.
        runtime.block_on(async {
            let invalidation = std::pin::pin!(s.invalidate_async(&comment));
            let _ = futures_poll_once(invalidation).await;
        });
        s.flush(Duration::from_secs(5)).unwrap();
        assert_ne!(s.version(&comment).unwrap(), before, "{}", case.name);
    }
}

/// Polls `future` once and gives up on it.
async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// The longest gap between ticks of a 5 ms ticker on the same current-thread runtime while
/// `work` runs, and `work`'s result.
fn longest_tick_gap<T>(work: impl Future<Output = T>) -> (Duration, T) {
    let runtime = current_thread();
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let longest = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let (stop, longest) = (Arc::clone(&stop), Arc::clone(&longest));
            async move {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let now = Instant::now();
                    let gap = u64::try_from((now - last).as_micros()).unwrap_or(u64::MAX);
                    longest.fetch_max(gap, Ordering::Relaxed);
                    last = now;
                }
            }
        });
        // Let the ticker start.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let output = work.await;
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
        (
            Duration::from_micros(longest.load(Ordering::Relaxed)),
            output,
        )
    })
}

/// Requests, one after another as a server's would be: each renders the article page and one in
/// four votes on a comment first. Returns how many ran. The pages are small (8 comments): what
/// the ticker must not see is a wait on the network; a page rendered whole while the cache is
/// down is CPU work between two yields, which a debug build on a busy 2-core machine makes long.
async fn requests(s: &Sweeper, comments: &mut [Comment], count: usize) -> usize {
    let article = article(1);
    let renders = Renders::default();
    for i in 0..count {
        if i % 4 == 0 {
            let voted = i / 4 % comments.len();
            comments[voted].likes += 1;
            let _ = s.invalidate_async(&comments[voted]).await;
        }
        let request = s.scope();
        let page = ArticlePage {
            article: &article,
            comments,
            renders: &renders,
        };
        let html = request.render_async(&page).await.unwrap();
        assert!(html.contains(&format!("comment-{}", comments.len())));
        // A server returns to its runtime between requests.
        tokio::task::yield_now().await;
    }
    count
}

/// The comments of the ticker tests' pages.
fn ticker_comments() -> Vec<Comment> {
    (1..=8).map(|id| comment(id, 1)).collect()
}

/// The ticker tests' connect and I/O timeouts: a thread blocked on the network instead of
/// yielding would stall the ticker for at least this long.
const NETWORK_WAIT: Duration = Duration::from_millis(300);

/// The gap the ticker may see. It separates a wait on the network (at least [`NETWORK_WAIT`])
/// from a page rendered between two yields, which is CPU work that a debug build on a loaded
/// 2-core CI machine stretches past 25 ms: a tight bound here made the test flaky, not sharper.
const MAX_GAP: Duration = Duration::from_millis(100);

#[test]
fn a_ticker_on_the_same_thread_keeps_ticking_while_pages_render_and_records_are_invalidated() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let backend = Memcached::builder()
        .server(server.url())
        .io_timeout(NETWORK_WAIT)
        .build()
        .unwrap();
    let s = Sweeper::builder().backend(backend).build().unwrap();
    let mut comments = ticker_comments();
    known(&s, [&article(1)]);
    known(&s, &comments);

    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 200));
    let stats = s.stats();
    eprintln!("memcached up: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.hits > 0 && stats.errors == 0, "{stats:?}");
    assert!(
        gap <= MAX_GAP,
        "memcached up: the ticker stalled for {gap:?}"
    );

    // A server that stops answering mid-run: every exchange times out (NETWORK_WAIT), then the
    // breaker opens; neither may hold up the thread.
    server.pause();
    let before = s.stats();
    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 40));
    let stats = s.stats() - before;
    server.resume();
    eprintln!("memcached paused: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.errors > 0, "the pause was seen: {stats:?}");
    assert!(
        gap <= MAX_GAP,
        "memcached paused: the ticker stalled for {gap:?}"
    );
    // The votes that failed meanwhile are retried, and land once it answers again.
    s.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_ticker_keeps_ticking_while_the_cache_host_never_answers() {
    let _one = common::one_at_a_time();
    // Accepts connections and never says a word: connects succeed, every exchange times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let backend = Memcached::builder()
        .server(addr.to_string())
        .connect_timeout(NETWORK_WAIT)
        .io_timeout(NETWORK_WAIT)
        .build()
        .unwrap();
    let s = Sweeper::builder().backend(backend).build().unwrap();
    let mut comments = ticker_comments();
    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 40));
    let stats = s.stats();
    eprintln!("silent host: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.errors > 0 && stats.hits == 0, "{stats:?}");
    assert!(
        gap <= MAX_GAP,
        "silent host: the ticker stalled for {gap:?}"
    );
    drop(silent);
}

#[test]
fn a_ticker_keeps_ticking_on_redis_up_then_paused() {
    let _one = common::one_at_a_time();
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let backend = Redis::builder()
        .url(server.url())
        .io_timeout(NETWORK_WAIT)
        .build()
        .unwrap();
    let s = Sweeper::builder().backend(backend).build().unwrap();
    let mut comments = ticker_comments();
    known(&s, [&article(1)]);
    known(&s, &comments);

    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 200));
    let stats = s.stats();
    eprintln!("redis up: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.hits > 0 && stats.errors == 0, "{stats:?}");
    assert!(gap <= MAX_GAP, "redis up: the ticker stalled for {gap:?}");

    server.pause();
    let before = s.stats();
    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 40));
    let stats = s.stats() - before;
    server.resume();
    eprintln!("redis paused: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.errors > 0, "the pause was seen: {stats:?}");
    assert!(
        gap <= MAX_GAP,
        "redis paused: the ticker stalled for {gap:?}"
    );
    s.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_ticker_keeps_ticking_while_a_redis_host_never_answers() {
    let _one = common::one_at_a_time();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let backend = Redis::builder()
        .url(format!("redis://{addr}"))
        .connect_timeout(NETWORK_WAIT)
        .io_timeout(NETWORK_WAIT)
        .build()
        .unwrap();
    let s = Sweeper::builder().backend(backend).build().unwrap();
    let mut comments = ticker_comments();
    let (gap, ran) = longest_tick_gap(requests(&s, &mut comments, 40));
    let stats = s.stats();
    eprintln!("silent redis host: {ran} requests, longest tick gap {gap:?}, {stats:?}");
    assert!(stats.errors > 0 && stats.hits == 0, "{stats:?}");
    assert!(
        gap <= MAX_GAP,
        "silent redis host: the ticker stalled for {gap:?}"
    );
    drop(silent);
}
