//! Pages cost a constant number of cache round trips, whatever the number of fragments:
//! counted through the backend itself (a counting wrapper), for N = 10, 100 and 1000, on the
//! embedded cache, memcached, Redis and a three-master Redis Cluster. On Redis the backend's own
//! count of pipelines sent is checked too: on a cluster, at most one per node per batch. And an
//! invalidation on memcached costs one round trip where the process knows the counter, two
//! where it does not: counted on the wire, by a proxy.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use askama::Template;
use cachesweeper::backend::{Backend, BoxFuture, Embedded, Leased, Memcached, Redis, SetItem};
use cachesweeper::{Result, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};
use common::{Article, Comment, Page, Renders, article, comment, known};

/// Counts calls and keys per kind of backend operation.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Backend>,
    calls: AtomicUsize,
    counter_keys: AtomicUsize,
}

impl Counting {
    fn new(inner: Arc<dyn Backend>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
            counter_keys: AtomicUsize::new(0),
        })
    }
    fn take(&self) -> (usize, usize) {
        (
            self.calls.swap(0, Relaxed),
            self.counter_keys.swap(0, Relaxed),
        )
    }
}

impl Backend for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        self.calls.fetch_add(1, Relaxed);
        self.inner.get_leased(keys, lease)
    }
    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        self.calls.fetch_add(1, Relaxed);
        self.inner.set_many(items)
    }
    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        self.calls.fetch_add(1, Relaxed);
        self.counter_keys.fetch_add(keys.len(), Relaxed);
        self.inner.incr_each(keys, delta, initial)
    }
    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        self.calls.fetch_add(1, Relaxed);
        self.counter_keys.fetch_add(keys.len(), Relaxed);
        self.inner.raise_each(keys, floor)
    }
    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        self.calls.fetch_add(1, Relaxed);
        self.inner.release_leases(keys)
    }
    fn fresh_counter(&self, now: u64) -> u64 {
        self.inner.fresh_counter(now)
    }
    fn max_value_len(&self) -> usize {
        self.inner.max_value_len()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
}

/// A flat page: one fragment per comment.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{{ renders.tick(\"page\") }}{% for c in comments %}{% filter cachesweeper::filters::cachesweeper(c, 600, \"comment\") %}<p>{{ renders.tick(\"comment\") }}{{ c.body }}</p>{% endfilter %}{% endfor %}"
)]
struct Flat<'a> {
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

/// Russian doll: the list is a fragment of the article, each comment a fragment inside it; the
/// article's header uses the article's version too (one version lookup for both).
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 600, \"head\") %}<h1>{{ article.title }}</h1>{% endfilter %}\
{% filter cachesweeper::filters::cachesweeper(article, 600, \"list\") %}{{ renders.tick(\"list\") }}<ol>\
{% for c in comments %}{% filter cachesweeper::filters::cachesweeper(c, 600, \"comment\") %}<li>{{ renders.tick(\"comment\") }}{{ c.body }}</li>{% endfilter %}{% endfor %}\
</ol>{% endfilter %}"
)]
struct Nested<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

/// Field-versioned records: no version round trip at all.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% for p in pages %}{% filter cachesweeper::filters::cachesweeper(p, 600, \"link\") %}<a>{{ p.slug }}</a>{% endfilter %}{% endfor %}"
)]
struct Pages<'a> {
    pages: &'a [Page],
}

struct Setup {
    name: &'static str,
    sweeper: Sweeper,
    counting: Arc<Counting>,
    l1: bool,
    /// The Redis backend under the counting wrapper, for its own count of pipelines, and how
    /// many servers a batch may go to.
    redis: Option<(Redis, u64)>,
    seen_pipelines: std::sync::atomic::AtomicU64,
    _server: Option<Box<dyn std::any::Any>>,
}

impl Setup {
    /// Pipelines the Redis backend sent since the last call.
    fn pipelines(&self) -> u64 {
        let Some((redis, _)) = &self.redis else {
            return 0;
        };
        let now = redis.round_trips();
        now - self.seen_pipelines.swap(now, Relaxed)
    }
}

fn setups() -> Vec<Setup> {
    let mut out = Vec::new();
    let embedded = Counting::new(Arc::new(Embedded::new(64 << 20)));
    out.push(Setup {
        name: "embedded",
        sweeper: Sweeper::builder()
            .backend(embedded.clone())
            .build()
            .unwrap(),
        counting: embedded,
        l1: false,
        redis: None,
        seen_pipelines: Default::default(),
        _server: None,
    });
    for l1 in [false, true] {
        let Some(server) = MemcachedProcess::start() else {
            break;
        };
        let counting = Counting::new(Arc::new(Memcached::from_url(&server.url()).unwrap()));
        let builder = Sweeper::builder().backend(counting.clone());
        let sweeper = if l1 { builder } else { builder.l1(0) }.build().unwrap();
        out.push(Setup {
            name: if l1 { "memcached+l1" } else { "memcached" },
            sweeper,
            counting,
            l1,
            redis: None,
            seen_pipelines: Default::default(),
            _server: Some(Box::new(server)),
        });
    }
    for l1 in [false, true] {
        let Some(server) = RedisProcess::start() else {
            break;
        };
        let redis = Redis::from_url(&server.url()).unwrap();
        out.push(redis_setup(
            if l1 { "redis+l1" } else { "redis" },
            redis,
            1,
            l1,
            Box::new(server),
        ));
    }
    if let Some(cluster) = RedisCluster::start() {
        // One cluster for both, in two namespaces (each setup's pages must start cold).
        let cluster = Arc::new(cluster);
        for (l1, name) in [(false, "redis-cluster"), (true, "redis-cluster+l1")] {
            let redis = Redis::cluster(&cluster.urls()).unwrap();
            out.push(redis_setup(
                name,
                redis,
                3,
                l1,
                Box::new(Arc::clone(&cluster)),
            ));
        }
    }
    out
}

fn redis_setup(
    name: &'static str,
    redis: Redis,
    servers: u64,
    l1: bool,
    server: Box<dyn std::any::Any>,
) -> Setup {
    let counting = Counting::new(Arc::new(redis.clone()));
    let builder = Sweeper::builder()
        .namespace(name.replace('+', "-"))
        .backend(counting.clone());
    let sweeper = if l1 { builder } else { builder.l1(0) }.build().unwrap();
    Setup {
        name,
        sweeper,
        counting,
        l1,
        redis: Some((redis, servers)),
        seen_pipelines: Default::default(),
        _server: Some(server),
    }
}

#[test]
fn a_flat_page_costs_the_same_round_trips_for_10_100_and_1000_fragments() {
    for setup in setups() {
        for n in [10, 100, 1000] {
            let comments: Vec<Comment> = (0..n).map(|id| comment(id + 10_000 * n, 1)).collect();
            known(&setup.sweeper, &comments);
            setup.counting.take();
            setup.pipelines();
            let renders = Renders::default();
            let page = Flat {
                comments: &comments,
                renders: &renders,
            };
            let label = format!("{} N={n}", setup.name);

            let cold = setup.sweeper.scope().render(&page).unwrap();
            // versions, fragments, one write
            assert_eq!(setup.counting.take(), (3, n as usize), "{label}: cold");
            if let Some((_, servers)) = setup.redis {
                // Versions, fragments (a read, then leases on the misses), one write: one
                // pipeline each per server.
                let pipelines = setup.pipelines();
                assert!(
                    pipelines <= 4 * servers,
                    "{label}: cold: {pipelines} pipelines"
                );
                if servers == 1 {
                    assert_eq!(pipelines, 4, "{label}: cold");
                }
                println!("round-trips {label} cold: 3 batches, {pipelines} pipelines");
            }
            // The page itself: a record pass, a second one inside the bodies that missed,
            // the final pass; each comment body once.
            assert_eq!(
                renders.take(),
                [("comment", n as u32), ("page", 3)].into_iter().collect(),
                "{label}: renders"
            );

            let before = setup.sweeper.stats();
            let warm = setup.sweeper.scope().render(&page).unwrap();
            let expected_calls = if setup.l1 { 1 } else { 2 };
            assert_eq!(
                setup.counting.take(),
                (expected_calls, n as usize),
                "{label}: warm"
            );
            assert_eq!(warm, cold, "{label}");
            assert_eq!(
                renders.take(),
                [("page", 2)].into_iter().collect(),
                "{label}: warm: one record pass and the final one, no body"
            );
            let stats = setup.sweeper.stats() - before;
            assert_eq!((stats.hits, stats.misses), (n as u64, 0), "{label}");
            assert_eq!(
                stats.round_trips, expected_calls as u64,
                "{label}: stats agree"
            );
            if let Some((_, servers)) = setup.redis {
                let pipelines = setup.pipelines();
                let most = expected_calls as u64 * servers;
                assert!(
                    pipelines <= most,
                    "{label}: warm: {pipelines} pipelines > {most}"
                );
                if servers == 1 {
                    assert_eq!(pipelines, expected_calls as u64, "{label}: warm");
                }
                println!(
                    "round-trips {label} warm: {} batches, {pipelines} pipelines",
                    stats.round_trips
                );
            }
        }
    }
}

#[test]
fn nested_fragments_are_fetched_level_by_level() {
    for setup in setups() {
        for n in [10, 100, 1000] {
            let article = article(n);
            let mut comments: Vec<Comment> = (0..n).map(|id| comment(id + 10_000 * n, n)).collect();
            known(&setup.sweeper, [&article]);
            known(&setup.sweeper, &comments);
            setup.counting.take();
            let renders = Renders::default();
            let label = format!("{} N={n}", setup.name);
            let render = |comments: &[Comment]| {
                setup
                    .sweeper
                    .scope()
                    .render(&Nested {
                        article: &article,
                        comments,
                        renders: &renders,
                    })
                    .unwrap()
            };

            let cold = render(&comments);
            // level 1: versions + fragments; level 2: versions + fragments; one write.
            assert_eq!(setup.counting.take(), (5, 1 + n as usize), "{label}: cold");
            assert_eq!(renders.take().get("comment"), Some(&(n as u32)), "{label}");

            let warm = render(&comments);
            assert_eq!(warm, cold, "{label}");
            // The article's version once, with those of the comments inside its fragment (to
            // check they are all current), in the same batch.
            let expected = if setup.l1 {
                (1, 1 + n as usize)
            } else {
                (2, 1 + n as usize)
            };
            assert_eq!(
                setup.counting.take(),
                expected,
                "{label}: warm, the article's version and its contents' once"
            );

            // A vote on one comment: the article's fragments and that comment miss.
            comments[3].likes += 1;
            setup.sweeper.invalidate(&comments[3]).unwrap();
            setup.counting.take();
            let before = setup.sweeper.stats();
            render(&comments);
            let stats = setup.sweeper.stats() - before;
            let (calls, _) = setup.counting.take();
            // Level 1: versions (the article's, and the comments' it held last time), the
            // article's new keys; level 2: the one new key (the L1 answers the rest where there
            // is one), its version already known; one write.
            assert_eq!(calls, 4, "{label}: after a vote");
            assert_eq!(renders.take().get("comment"), Some(&1), "{label}");
            assert_eq!((stats.hits, stats.misses), (n as u64 - 1, 3), "{label}");
        }
    }
}

#[test]
fn field_versioned_records_need_no_version_round_trip() {
    for setup in setups() {
        let pages: Vec<Page> = (0..100)
            .map(|i| Page {
                slug: format!("p{i}"),
                revision: 1,
            })
            .collect();
        setup
            .sweeper
            .scope()
            .render(&Pages { pages: &pages })
            .unwrap();
        assert_eq!(
            setup.counting.take(),
            (2, 0),
            "{}: cold: fragments, write",
            setup.name
        );
        setup
            .sweeper
            .scope()
            .render(&Pages { pages: &pages })
            .unwrap();
        let expected = if setup.l1 { 0 } else { 1 };
        assert_eq!(setup.counting.take(), (expected, 0), "{}: warm", setup.name);
    }
}

#[test]
fn a_page_render_equals_a_plain_render() {
    let sweeper = Sweeper::embedded();
    let article = article(1);
    let comments: Vec<Comment> = (0..20).map(|id| comment(id, 1)).collect();
    let renders = Renders::default();
    let page = Nested {
        article: &article,
        comments: &comments,
        renders: &renders,
    };
    let uncached = Sweeper::builder()
        .backend(cachesweeper::backend::Null)
        .build()
        .unwrap();
    let plain = uncached.scope().render(&page).unwrap();
    assert_eq!(sweeper.scope().render(&page).unwrap(), plain);
    assert_eq!(sweeper.scope().render(&page).unwrap(), plain);
}

/// An owned page, for the async form.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% for c in comments %}{% filter cachesweeper::filters::cachesweeper(c, 600, \"comment\") %}<p>{{ c.body }}</p>{% endfilter %}{% endfor %}"
)]
struct OwnedPage {
    comments: Vec<Comment>,
}

#[test]
fn the_async_form_costs_the_same_round_trips() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sweeper = Sweeper::embedded();
    let page = || OwnedPage {
        comments: (0..50).map(|id| comment(id, 1)).collect(),
    };
    let cold = runtime
        .block_on(sweeper.scope().render_async(&page()))
        .unwrap();
    let request = sweeper.scope();
    let warm = runtime.block_on(request.render_async(&page())).unwrap();
    assert_eq!(warm, cold);
    assert_eq!((request.stats().hits, request.stats().round_trips), (50, 2));
}

/// A backend on which every counter of one model fails (its server is down, say).
#[derive(Debug)]
struct FailingModel {
    inner: Arc<Counting>,
    model: &'static str,
}

impl Backend for FailingModel {
    fn name(&self) -> &str {
        "failing"
    }
    fn get_leased<'a>(
        &'a self,
        keys: &'a [&'a str],
        lease: Duration,
    ) -> BoxFuture<'a, Vec<Result<Leased>>> {
        self.inner.get_leased(keys, lease)
    }
    fn set_many<'a>(&'a self, items: &'a [SetItem<'a>]) -> BoxFuture<'a, Result<()>> {
        self.inner.set_many(items)
    }
    fn incr_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        delta: u64,
        initial: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        Box::pin(async move {
            let answers = self.inner.incr_each(keys, delta, initial).await;
            keys.iter()
                .zip(answers)
                .map(|(key, answer)| {
                    if key.contains(self.model) {
                        Err(cachesweeper::Error::CircuitOpen {
                            backend: "down".into(),
                            retry_in_ms: 1,
                        })
                    } else {
                        answer
                    }
                })
                .collect()
        })
    }
    fn raise_each<'a>(
        &'a self,
        keys: &'a [&'a str],
        floor: u64,
    ) -> BoxFuture<'a, Vec<Result<u64>>> {
        self.inner.raise_each(keys, floor)
    }
    fn release_leases<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<()>> {
        self.inner.release_leases(keys)
    }
    fn fresh_counter(&self, now: u64) -> u64 {
        self.inner.fresh_counter(now)
    }
    fn max_value_len(&self) -> usize {
        self.inner.max_value_len()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
}

#[test]
fn fragments_inside_one_whose_version_is_unknown_are_still_batched() {
    let counting = Counting::new(Arc::new(Embedded::new(64 << 20)));
    let backend = FailingModel {
        inner: counting.clone(),
        model: "Article",
    };
    let sweeper = Sweeper::builder().backend(backend).build().unwrap();
    let article = article(1);
    let comments: Vec<Comment> = (0..100).map(|id| comment(id, 1)).collect();
    let renders = Renders::default();
    let page = Nested {
        article: &article,
        comments: &comments,
        renders: &renders,
    };
    let first = sweeper.scope().render(&page).unwrap();
    assert_eq!(renders.take().get("comment"), Some(&100));
    counting.take();
    let request = sweeper.scope();
    assert_eq!(request.render(&page).unwrap(), first);
    // The article's fragments are rendered every time; the comments inside come from the
    // cache, fetched in one batch of versions and one of fragments, not one by one.
    let (calls, _) = counting.take();
    assert!(calls <= 4, "{calls} backend calls");
    assert_eq!(renders.take().get("comment"), None);
    assert_eq!(request.stats().hits, 100);
}

/// A proxy in front of a memcached server that counts what reaches the wire: round trips, not
/// backend calls (one `raise_each` may be several). The client stamps the commands of each
/// server's batch with opaque tokens from `O0` up, so every request line with `O0` starts one.
struct Wire {
    port: u16,
    batches: Arc<AtomicUsize>,
}

impl Wire {
    fn start(upstream: u16) -> Wire {
        use std::io::{BufRead, BufReader, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut answers, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut answers, &mut to_client);
                    let _ = to_client.shutdown(Shutdown::Both);
                });
                let counted = Arc::clone(&counted);
                std::thread::spawn(move || {
                    let (mut requests, mut server) = (BufReader::new(client), server);
                    let mut line = Vec::new();
                    loop {
                        // A batch is written at once: a command that begins a read of the
                        // socket begins a batch (these batches are a few short lines).
                        let fresh_read = requests.buffer().is_empty();
                        if !matches!(requests.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                            break;
                        }
                        let starts_batch = line.starts_with(b"m") && fresh_read;
                        if starts_batch {
                            counted.fetch_add(1, Relaxed);
                        }
                        if server.write_all(&line).is_err() {
                            break;
                        }
                        line.clear();
                    }
                    let _ = server.shutdown(Shutdown::Both);
                });
            }
        });
        Wire { port, batches }
    }

    fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    /// Round trips since the last call.
    fn take(&self) -> usize {
        self.batches.swap(0, Relaxed)
    }
}

#[test]
fn an_invalidation_costs_two_exchanges_whoever_read_the_counter() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let wire = Wire::start(server.port());
    let sweeper = Sweeper::builder()
        .backend(Memcached::from_url(&wire.url()).unwrap())
        .build()
        .unwrap();
    // Another process sharing the server.
    let other = Memcached::from_url(&server.url()).unwrap();
    let counter = |record: &Article| {
        common::wait(other.incr_each(&[&sweeper.counter_key(record)], 0, 0))[0]
            .clone()
            .unwrap()
    };
    // One invalidation: the sweeper's round trips (it counts backend calls, and a raise is one
    // call however many exchanges memcached needs) and the exchanges on the wire.
    let invalidate = |record: &Article| {
        wire.take();
        let before = sweeper.stats();
        sweeper.invalidate(record).unwrap();
        ((sweeper.stats() - before).round_trips, wire.take())
    };

    // A read (`mg`, which leaves the CAS as it is), then a compare-and-add: the same two
    // exchanges whether the counter was read here, raised here, or read elsewhere since.
    let read = article(1);
    let seen = sweeper.version(&read).unwrap().counter.unwrap();
    assert_eq!(invalidate(&read), (1, 2), "a counter read here");
    assert_eq!(invalidate(&read), (1, 2), "a counter raised here");
    assert!(counter(&read) > seen);
    assert_eq!(invalidate(&read), (1, 2), "a counter read elsewhere since");

    // Missing: the read finds nothing, the counter is created (odd: not confirmed), and
    // confirmed by a second raise: a read and a compare-and-add more.
    assert_eq!(invalidate(&article(3)), (2, 4), "a missing counter");

    // Raised by the other process since this one read it: it lands at the floor, not ahead of
    // the clock by how far the other raise moved the counter.
    let shared = article(4);
    known(&sweeper, [&shared]);
    let key = sweeper.counter_key(&shared);
    let elsewhere = common::wait(other.raise_each(&[&key], common::now_ns()))[0]
        .clone()
        .unwrap();
    assert_eq!(
        invalidate(&shared),
        (1, 2),
        "a counter raised elsewhere since"
    );
    let end = counter(&shared);
    assert!(
        end > elsewhere && end <= common::now_ns(),
        "{end} vs {elsewhere}"
    );

    // The async form is the same algorithm.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let awaited = article(5);
    sweeper.version(&awaited).unwrap();
    wire.take();
    runtime
        .block_on(sweeper.invalidate_async(&awaited))
        .unwrap();
    assert_eq!(wire.take(), 2, "an async invalidation");
}

#[test]
fn a_raise_ends_at_its_floor_or_above_after_a_restart_lost_the_counter() {
    // The counter is read here, then lost with its server, and recreated by a process whose
    // clock is a minute slow; the restarted server numbers CAS values from the start again,
    // so what this process noted may match the new counter's CAS by chance. Whatever it
    // matches, the invalidation's raise ends at its floor or above, and above the counter's
    // value.
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    let sweeper = Sweeper::builder()
        .backend(Memcached::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    let record = article(1);
    let key = sweeper.counter_key(&record);
    sweeper.version(&record).unwrap();
    server.restart();
    let slow = Memcached::from_url(&server.url()).unwrap();
    let recreated = common::wait(slow.incr_each(&[&key], 0, common::now_ns() - 60_000_000_000))[0]
        .clone()
        .unwrap();
    let floor = common::now_ns();
    // The first call after the restart may meet the dead connection.
    if sweeper.invalidate(&record).is_err() {
        sweeper.flush(Duration::from_secs(10)).unwrap();
    }
    let end = common::wait(slow.incr_each(&[&key], 0, 0))[0]
        .clone()
        .unwrap();
    assert!(
        end >= floor && end > recreated,
        "{end}: floor {floor}, was {recreated}"
    );
}
