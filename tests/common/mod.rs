//! Models and backends shared by the integration tests.
#![allow(dead_code)] // each test crate uses part of this

pub mod blog;
pub mod browser;
pub mod forgetful;

use chrono::{DateTime, Utc};

use cachesweeper::Sweepable;
use cachesweeper::backend::{Memcached, Redis};
use cachesweeper::{Sweeper, backend::Embedded};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::RedisProcess;

/// A sweeper on the memcached at `url` that waits 2 s for an answer, not 200 ms: for tests
/// that require every call to a healthy server to succeed, on a loaded 2-core machine where an
/// exchange is sometimes slower than the default allows.
pub fn patient_memcached(url: &str) -> Sweeper {
    Sweeper::builder()
        .backend(
            Memcached::builder()
                .server(url)
                .io_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Held by each of a test file's load tests while it runs, so that they run one at a time:
/// they share 2 cores, and what they bound (gaps, lags, timeouts) would show another's load.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An article: versioned by `updated_at`, and touchable by its comments.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(counter)]
pub struct Article {
    pub id: i64,
    pub title: String,
    #[sweeper(version)]
    pub updated_at: DateTime<Utc>,
}

/// A comment on an article: counter-versioned (votes change it), touches its article.
#[derive(Debug, Clone, Sweepable)]
pub struct Comment {
    pub id: i64,
    #[sweeper(touches = Article)]
    pub article_id: i64,
    pub author: String,
    pub body: String,
    pub likes: u32,
}

/// A record versioned by its field alone: no counter, no round trip to learn its version.
#[derive(Debug, Clone, Sweepable)]
pub struct Page {
    #[sweeper(key)]
    pub slug: String,
    #[sweeper(version)]
    pub revision: u64,
}

pub fn article(id: i64) -> Article {
    Article {
        id,
        title: format!("Article {id}"),
        updated_at: DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap(),
    }
}

pub fn comment(id: i64, article_id: i64) -> Comment {
    Comment {
        id,
        article_id,
        author: format!("author{id}"),
        body: format!("comment <b>{id}</b> & more"),
        likes: 0,
    }
}

/// A sweeper on one backend, with whatever keeps that backend alive.
pub struct Case {
    pub name: &'static str,
    pub sweeper: Sweeper,
    pub server: Option<Box<dyn std::any::Any>>,
}

/// One sweeper per backend: embedded, memcached and Redis, each server fresh and its own (left
/// out only outside CI when it is not installed). The Redis Cluster is not among them: its
/// start takes a second or two, and the suites that take these cases call this often; the
/// cluster has its own tests (conformance, round trips, faults, freshness). Memcached's is a
/// [`patient_memcached`]: these tests require every call to succeed. The default timeouts have
/// tests of their own (`tests/faults.rs`, `tests/never_stale.rs`).
pub fn cases() -> Vec<Case> {
    let mut cases = vec![Case {
        name: "embedded",
        sweeper: Sweeper::builder()
            .backend(Embedded::new(16 * 1024 * 1024))
            .build()
            .unwrap(),
        server: None,
    }];
    if let Some(server) = MemcachedProcess::start() {
        let sweeper = patient_memcached(&server.url());
        cases.push(Case {
            name: "memcached",
            sweeper,
            server: Some(Box::new(server)),
        });
    }
    if let Some(server) = RedisProcess::start() {
        let sweeper = Sweeper::builder()
            .backend(Redis::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        cases.push(Case {
            name: "redis",
            sweeper,
            server: Some(Box::new(server)),
        });
    }
    cases
}

/// Counts how often each kind of fragment body was rendered: a template calls
/// `{{ renders.tick("kind") }}` inside a cached body, which outputs nothing.
#[derive(Debug, Default)]
pub struct Renders(std::sync::Mutex<std::collections::BTreeMap<&'static str, u32>>);

impl Renders {
    pub fn tick(&self, kind: &'static str) -> &'static str {
        *self.0.lock().unwrap().entry(kind).or_default() += 1;
        ""
    }

    /// The counts so far, and resets them.
    pub fn take(&self) -> std::collections::BTreeMap<&'static str, u32> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Gives `records` their versions, as the application's earlier requests would have, in one
/// batch: on a remote backend a render that meets a version it created itself cannot know that
/// its data is newer than an invalidation the cache may have lost, and stores nothing, so tests
/// that measure stores start from records the cache already knows (since a second ago).
pub fn known<'a, R: Sweepable + 'a>(sweeper: &Sweeper, records: impl IntoIterator<Item = &'a R>) {
    let keys: Vec<String> = records
        .into_iter()
        .map(|r| sweeper.counter_key(r))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let a_second_ago = now_ns() - 1_000_000_000;
    // Even: a version set by a raise (an odd one is a counter created after a loss, which
    // renders confirm before they store anything under it).
    for known in wait(sweeper.backend().incr_each(&keys, 0, a_second_ago & !1)) {
        known.unwrap();
    }
}

pub use cachesweeper::backend::block_on as wait;

/// Nanoseconds since the epoch, as versions count them.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A random number below `n` (0 if `n` is 0): xorshift, seeded per thread from std's random
/// hasher keys, for load tests that need no reproducible sequence (and no rand crate).
pub fn random_below(n: u64) -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        if n == 0 { 0 } else { x % n }
    })
}
