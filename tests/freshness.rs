//! The never-stale checker (issue 11): once `invalidate(record)` has returned (called after the
//! write committed), no page rendered from then on, in any process sharing the cache, shows
//! that record's state from before the write.
//!
//! A blog page nests three levels of fragments (blog > article > comment); a comment touches
//! its article, an article touches its blog. The "database" holds each comment's like count.
//!
//! - A **writer** commits `likes + 1`, sleeps a little, calls `invalidate(&comment)` (or, every
//!   other write, `invalidate_async(&comment)`), and only
//!   once that returned records the count as *acknowledged* (a per-comment maximum).
//! - A **reader** notes every comment's acknowledged count when its read starts, then takes
//!   `sweeper.scope()`, loads the rows, sleeps 0-5 ms (and, one read in 20, a "slow request"
//!   pause of 120-240 ms: longer than today's 100 ms settle; this is what makes it learn
//!   versions late), and renders the page through that scope, in turn with
//!   `scope.render(&page)` and `scope.render_async(&page)` (on the reader's own runtime).
//!   Every comment on the page must show at least the count
//!   acknowledged when the read started; one that shows less is a **violation**: it shows the
//!   state from before a write whose `invalidate` had returned.
//!
//! A writer acknowledges its count only when `invalidate` returned `Ok`: the guarantee is for
//! those. An invalidation that failed (the cache was down or its circuit breaker open) is
//! counted (`invalidate_errors`); it is retried by the sweeper, and `tests/failed_invalidation.rs`
//! checks what becomes of it.
//!
//! Scenarios: (a) embedded; (b) memcached, two sweepers (two application processes, each with
//! its own L1); (c) slow comment bodies (0-20 ms each); (d) lease contention: 8 readers on one
//! hot article over three sweepers; (e) memcached killed and restarted on its port mid-run;
//! (f) this test binary re-executed as a writer process and a reader process, sharing a SQLite
//! file as the database and one memcached with this process; (g) Redis, two sweepers; (h) a
//! three-master Redis Cluster, two sweepers; (i) Redis killed and restarted mid-run; (j) lease
//! contention on Redis. Issue 20 added what the checker had not modelled: (k) records versioned
//! by a field alone, touching nothing, nested in counter- and field-versioned fragments; (l)
//! counters really evicted by memcached's LRU (`-m 2` and a filler of small items) while one
//! process's reads cross a slow link (10 ms); (m) debug renders interleaved with ordinary ones
//! in two processes (an ordinary page showing a debug mark fails it); (n) a hot record under
//! sustained reads from six threads while two writers invalidate it (every invalidation must
//! return `Ok`); (o) each write through a sweeper dropped right after, one process's link to
//! memcached losing what it sends for the run's last half second: afterwards every page must
//! come to show every committed like; (p) a Redis Cluster with a replica per master, whose
//! master (of comment 1's counter) loses its link to the replica, dies, and is replaced by it
//! mid-run. From (k) on, each prints its `invalidate_errors`.
//!
//! Each scenario runs for a few seconds, prints
//! `freshness <scenario>: reads=N writes=N violations=N` (and a line of details), then asserts
//! no violation, no failed or incomplete page, and that the cache was used (hits > 0).
//!
//! Run on the code before the redesign of issue 11 (a second bump after a 100 ms settle,
//! one-level touches), every scenario failed, with thousands of violations each.
//!
//! Diagnostics, to see which cause of staleness remains:
//! `CACHESWEEPER_FRESHNESS_INVALIDATE_ANCESTORS=1` makes writers also invalidate the comment's
//! article (which touches the blog), taking one-level `touches` out of the picture;
//! `CACHESWEEPER_FRESHNESS_NO_PAUSES=1` drops the slow-request pauses.
//!
//! Run: `cargo test --test freshness -- --nocapture` (the scenarios run one at a time, in
//! about 25 s in all).

mod common;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use askama::Template;
use cachesweeper::backend::{Backend as _, Embedded, Memcached, Redis, SetItem};
use cachesweeper::{Scope, Sweepable, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};
use cachesweeper_suite::slow_link::SlowLink;
use common::random_below;

// ---------------------------------------------------------------------------------------------
// Models and the page
// ---------------------------------------------------------------------------------------------

/// The top level: counter-versioned, touched by its articles.
#[derive(Debug, Clone, Sweepable)]
struct Blog {
    id: i64,
}

/// Counter-versioned; touches its blog, touched by its comments.
#[derive(Debug, Clone, Sweepable)]
struct Article {
    id: i64,
    #[sweeper(touches = Blog)]
    blog_id: i64,
}

/// Counter-versioned (likes change it); touches its article.
#[derive(Debug, Clone, Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
    likes: u32,
}

/// A comment's body: sleeps up to `max_ms` when rendered (slow fragment bodies).
struct Body {
    max_ms: u64,
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        sleep_up_to(self.max_ms);
        f.write_str("text")
    }
}

struct CommentRow {
    comment: Comment,
    body: Body,
}

struct ArticleRows {
    article: Article,
    comments: Vec<CommentRow>,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(blog, 600, "blog") %}<blog id={{ blog.id }}>
{%- for a in articles %}
{%- filter cachesweeper::filters::cachesweeper(a.article, 600, "article") %}<article id={{ a.article.id }}>
{%- for c in a.comments %}
{%- filter cachesweeper::filters::cachesweeper(c.comment, 600, "comment") %}<c id={{ c.comment.id }} likes={{ c.comment.likes }}>{{ c.body }}</c>
{%- endfilter %}
{%- endfor %}</article>
{%- endfilter %}
{%- endfor %}</blog>
{%- endfilter %}"#
)]
struct BlogPage {
    blog: Blog,
    #[sweeper(belongs_to = blog)]
    articles: Vec<ArticleRows>,
}

/// A site versioned by a field alone, which never changes: a field-versioned outer fragment.
#[derive(Debug, Clone, Sweepable)]
struct Site {
    id: i64,
    #[sweeper(version)]
    revision: u64,
}

/// Counter-versioned, and touched by nothing.
#[derive(Debug, Clone, Sweepable)]
struct Section {
    id: i64,
}

/// Versioned by its like count alone (a field) and touching nothing: only the fragments that
/// remember the records rendered inside them (issue 20, item 1) miss when it changes.
#[derive(Debug, Clone, Sweepable)]
struct Reply {
    id: i64,
    #[sweeper(version)]
    likes: u32,
}

struct SectionRows {
    section: Section,
    replies: Vec<Reply>,
}

/// [`BlogPage`]'s shape with records versioned by a field inside a counter-versioned one,
/// inside a field-versioned one.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(site, 600, "site") %}<site id={{ site.id }}>
{%- for a in sections %}
{%- filter cachesweeper::filters::cachesweeper(a.section, 600, "section") %}<section id={{ a.section.id }}>
{%- for c in a.replies %}
{%- filter cachesweeper::filters::cachesweeper(c, 600, "reply") %}<c id={{ c.id }} likes={{ c.likes }}>text</c>
{%- endfilter %}
{%- endfor %}</section>
{%- endfilter %}
{%- endfor %}</site>
{%- endfilter %}"#
)]
struct FieldPage {
    site: Site,
    #[sweeper(belongs_to = site)]
    sections: Vec<SectionRows>,
}

/// Which models a scenario's page is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Models {
    /// [`BlogPage`]: counters at every level, each touching its parent.
    Counters,
    /// [`FieldPage`]: records versioned by a field, touching nothing.
    Fields,
}

/// How many articles, and comments per article; comment `i` (0-based) has id `i + 1` and
/// belongs to article `i / per_article + 1`, of blog 1.
#[derive(Debug, Clone, Copy)]
struct Shape {
    articles: usize,
    per_article: usize,
}

impl Shape {
    fn comments(self) -> usize {
        self.articles * self.per_article
    }

    fn article(self, i: usize) -> Article {
        Article {
            id: (i / self.per_article + 1) as i64,
            blog_id: 1,
        }
    }

    fn comment(self, i: usize, likes: u32) -> Comment {
        Comment {
            id: i as i64 + 1,
            article_id: self.article(i).id,
            likes,
        }
    }

    /// The page for loaded rows (`likes[i]`: comment `i`'s like count).
    fn page(self, likes: &[u32], body_ms: u64) -> BlogPage {
        BlogPage {
            blog: Blog { id: 1 },
            articles: (0..self.articles)
                .map(|a| ArticleRows {
                    article: self.article(a * self.per_article),
                    comments: (a * self.per_article..(a + 1) * self.per_article)
                        .map(|i| CommentRow {
                            comment: self.comment(i, likes[i]),
                            body: Body { max_ms: body_ms },
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl Shape {
    fn reply(self, i: usize, likes: u32) -> Reply {
        Reply {
            id: i as i64 + 1,
            likes,
        }
    }

    /// [`page`](Self::page) made of [`Models::Fields`].
    fn field_page(self, likes: &[u32]) -> FieldPage {
        FieldPage {
            site: Site { id: 1, revision: 1 },
            sections: (0..self.articles)
                .map(|a| SectionRows {
                    section: Section { id: a as i64 + 1 },
                    replies: (a * self.per_article..(a + 1) * self.per_article)
                        .map(|i| self.reply(i, likes[i]))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Renders `page` on `path` (see [`PATHS`]).
fn render_on<P>(
    path: usize,
    s: &Scope,
    page: &P,
    runtime: &tokio::runtime::Runtime,
) -> askama::Result<String>
where
    P: Template + cachesweeper::TemplateDigest + Sync,
{
    match path {
        0 => s.render(page),
        _ => runtime.block_on(s.render_async(page)),
    }
}

/// Invalidates `record`, blocking or async; whether it returned `Ok`.
fn invalidated<R: Sweepable>(
    s: &Sweeper,
    record: &R,
    async_: bool,
    runtime: &tokio::runtime::Runtime,
) -> bool {
    if async_ {
        runtime.block_on(s.invalidate_async(record)).is_ok()
    } else {
        s.invalidate(record).is_ok()
    }
}

/// Every comment's like count on a rendered page, by index; `None` if a comment is missing,
/// repeated, or unreadable.
fn shown_likes(html: &str, comments: usize) -> Option<Vec<u32>> {
    let mut shown = vec![None; comments];
    for (at, _) in html.match_indices("<c id=") {
        let rest = &html[at + "<c id=".len()..];
        let (id, rest) = rest.split_once(" likes=")?;
        let (likes, _) = rest.split_once('>')?;
        let i = id.parse::<usize>().ok()?.checked_sub(1)?;
        let slot = shown.get_mut(i)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(likes.parse::<u32>().ok()?);
    }
    shown.into_iter().collect()
}

/// Sleeps a random time from 0 to `max_ms` milliseconds (microsecond steps).
fn sleep_up_to(max_ms: u64) {
    if max_ms > 0 {
        std::thread::sleep(Duration::from_micros(random_below(max_ms * 1000 + 1)));
    }
}

// ---------------------------------------------------------------------------------------------
// The "database"
// ---------------------------------------------------------------------------------------------

trait Db: Sync {
    /// Every comment's acknowledged count: the highest count whose `invalidate` has returned.
    fn acked(&self) -> Vec<u32>;
    /// Every comment's committed like count (the rows a render loads).
    fn load(&self) -> Vec<u32>;
    /// Commits likes + 1 on comment `i`; returns the new count.
    fn commit_like(&self, i: usize) -> u32;
    /// Records that the invalidation of comment `i` at `likes` has returned.
    fn ack(&self, i: usize, likes: u32);
}

/// One process's database: a mutex per row, an atomic maximum per acknowledgement.
struct MemDb {
    rows: Vec<Mutex<u32>>,
    acked: Vec<AtomicU32>,
}

impl MemDb {
    fn new(comments: usize) -> MemDb {
        MemDb {
            rows: (0..comments).map(|_| Mutex::new(0)).collect(),
            acked: (0..comments).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl Db for MemDb {
    fn acked(&self) -> Vec<u32> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    fn load(&self) -> Vec<u32> {
        self.rows
            .iter()
            .map(|r| *r.lock().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }

    fn commit_like(&self, i: usize) -> u32 {
        let mut row = self.rows[i].lock().unwrap_or_else(PoisonError::into_inner);
        *row += 1;
        *row
    }

    fn ack(&self, i: usize, likes: u32) {
        self.acked[i].fetch_max(likes, Ordering::SeqCst);
    }
}

/// A database shared by processes: a SQLite file (WAL), one connection per thread.
struct SqliteDb {
    path: PathBuf,
}

impl SqliteDb {
    fn create(path: &Path, comments: usize) -> SqliteDb {
        let _ = std::fs::remove_file(path);
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE comments (id INTEGER PRIMARY KEY, likes INTEGER NOT NULL, acked INTEGER NOT NULL);",
        )
        .unwrap();
        for i in 0..comments {
            conn.execute("INSERT INTO comments VALUES (?1, 0, 0)", [i as i64])
                .unwrap();
        }
        SqliteDb {
            path: path.to_owned(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> T {
        thread_local! {
            static CONN: RefCell<Option<(PathBuf, rusqlite::Connection)>> = const { RefCell::new(None) };
        }
        CONN.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(p, _)| *p != self.path) {
                let conn = rusqlite::Connection::open(&self.path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                *cell = Some((self.path.clone(), conn));
            }
            f(&cell.as_ref().expect("just set").1).unwrap()
        })
    }

    fn column(&self, sql: &str) -> Vec<u32> {
        self.with(|c| {
            c.prepare_cached(sql)?
                .query_map([], |r| r.get::<_, u32>(0))?
                .collect()
        })
    }
}

impl Db for SqliteDb {
    fn acked(&self) -> Vec<u32> {
        self.column("SELECT acked FROM comments ORDER BY id")
    }

    fn load(&self) -> Vec<u32> {
        self.column("SELECT likes FROM comments ORDER BY id")
    }

    fn commit_like(&self, i: usize) -> u32 {
        self.with(|c| {
            c.query_row(
                "UPDATE comments SET likes = likes + 1 WHERE id = ?1 RETURNING likes",
                [i as i64],
                |r| r.get(0),
            )
        })
    }

    fn ack(&self, i: usize, likes: u32) {
        self.with(|c| {
            c.execute(
                "UPDATE comments SET acked = MAX(acked, ?2) WHERE id = ?1",
                rusqlite::params![i as i64, likes],
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    shape: Shape,
    readers: usize,
    writers: usize,
    /// Writers pick among the first `hot` comments (all of them if 0).
    hot: usize,
    /// A reader sleeps 0..=this many ms between loading its rows and rendering.
    read_delay_ms: u64,
    /// One read in `pause_every` (never if 0) also pauses `pause_ms` + 0..=`pause_ms` ms there:
    /// a slow request (a GC pause, a busy pool) that learns versions long after its data.
    pause_every: u64,
    pause_ms: u64,
    /// A writer sleeps 0..=this many ms between its commit and its `invalidate`.
    write_delay_ms: u64,
    /// A comment body sleeps 0..=this many ms when rendered.
    body_ms: u64,
    /// A writer sleeps 0..=this many ms after each write (0: writes as fast as it can).
    write_gap_ms: u64,
    duration: Duration,
    /// Reads per reader thread, at most.
    max_reads: u64,
    models: Models,
    /// One read in this many (never if 0) is a debug render (`scope().debug()`): its marks must
    /// never reach another page.
    debug_every: u64,
    /// Each write goes through a sweeper of its own, dropped right after (a request's clone):
    /// an invalidation that failed must still land.
    sweeper_per_write: bool,
    /// Every `invalidate` must return `Ok` (a healthy server, whatever the load).
    all_invalidations_ok: bool,
}

const BASE: Scenario = Scenario {
    name: "",
    shape: Shape {
        articles: 3,
        per_article: 4,
    },
    readers: 3,
    writers: 3,
    hot: 0,
    read_delay_ms: 5,
    pause_every: 20,
    pause_ms: 120,
    write_delay_ms: 5,
    body_ms: 0,
    write_gap_ms: 0,
    duration: Duration::from_secs(3),
    max_reads: 20_000,
    models: Models::Counters,
    debug_every: 0,
    sweeper_per_write: false,
    all_invalidations_ok: false,
};

/// What a run saw.
#[derive(Debug, Default)]
struct Tally {
    reads: AtomicU64,
    writes: AtomicU64,
    /// Comments shown with fewer likes than acknowledged when the read started.
    violations: AtomicU64,
    /// Pages with at least one violation.
    stale_pages: AtomicU64,
    /// Renders that returned an error (a cache error must never fail a page).
    page_errors: AtomicU64,
    /// Pages that did not show every comment exactly once.
    incomplete: AtomicU64,
    /// `invalidate` calls that returned an error (the count is acknowledged all the same).
    invalidate_errors: AtomicU64,
    /// Ordinary pages that showed a debug render's marks.
    marked: AtomicU64,
    /// Violations by render path (see [`PATHS`]).
    by_path: [AtomicU64; 2],
    /// The first few violations, described.
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    fn counters(&self) -> [&AtomicU64; 10] {
        [
            &self.reads,
            &self.writes,
            &self.violations,
            &self.stale_pages,
            &self.page_errors,
            &self.incomplete,
            &self.invalidate_errors,
            &self.marked,
            &self.by_path[0],
            &self.by_path[1],
        ]
    }

    /// The counters and `hits`, as a line (how a child process reports them).
    fn encode(&self, hits: u64) -> String {
        let mut figures: Vec<String> = self.counters().map(|c| Tally::get(c).to_string()).into();
        figures.push(hits.to_string());
        figures.join(" ")
    }

    /// Adds a child's counters (see [`encode`](Self::encode)); returns its hits.
    fn absorb(&self, line: &str) -> u64 {
        let figures: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(figures.len(), 11, "bad child output {line:?}");
        for (counter, figure) in self.counters().into_iter().zip(&figures) {
            counter.fetch_add(*figure, Ordering::SeqCst);
        }
        figures[10]
    }
}

/// How a reader renders its page, in turn: the blocking render, and the async render on the
/// reader's own runtime.
const PATHS: [&str; 2] = ["render", "render_async"];

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// Diagnostic: writers also invalidate the comment's article, which touches the blog.
fn invalidate_ancestors() -> bool {
    env_flag("CACHESWEEPER_FRESHNESS_INVALIDATE_ANCESTORS")
}

/// Diagnostic: no slow requests (readers only sleep `read_delay_ms`).
fn no_pauses() -> bool {
    env_flag("CACHESWEEPER_FRESHNESS_NO_PAUSES")
}

/// Runs `sc.readers` readers and `sc.writers` writers against `db`, spreading them over
/// `sweepers` (several sweepers on one memcached are several application processes, each with
/// its own L1), until `sc.duration` has passed or every reader did `sc.max_reads`. `during`
/// runs on the calling thread meanwhile (e.g. to restart the cache server).
fn run(sc: &Scenario, sweepers: &[Sweeper], db: &dyn Db, during: impl FnOnce(Instant)) -> Tally {
    let tally = Tally::default();
    let shape = sc.shape;
    let start = Instant::now();
    let deadline = start + sc.duration;
    let readers_done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let ancestors = invalidate_ancestors();
    std::thread::scope(|scope| {
        for r in 0..sc.readers {
            let (tally, stop, readers_done) = (&tally, &stop, &readers_done);
            scope.spawn(move || {
                let runtime = runtime();
                for n in 0..sc.max_reads {
                    if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        break;
                    }
                    let sweeper = &sweepers[(r + n as usize) % sweepers.len()];
                    let path = (r + n as usize) % PATHS.len();
                    // The read starts: what has been acknowledged so far must show.
                    let floor = db.acked();
                    let debug = sc.debug_every > 0 && random_below(sc.debug_every) == 0;
                    let s = if debug {
                        sweeper.scope().debug()
                    } else {
                        sweeper.scope()
                    };
                    let likes = db.load();
                    sleep_up_to(sc.read_delay_ms);
                    if sc.pause_every > 0 && !no_pauses() && random_below(sc.pause_every) == 0 {
                        std::thread::sleep(Duration::from_millis(sc.pause_ms));
                        sleep_up_to(sc.pause_ms);
                    }
                    let html = match sc.models {
                        Models::Counters => {
                            render_on(path, &s, &shape.page(&likes, sc.body_ms), &runtime)
                        }
                        Models::Fields => render_on(path, &s, &shape.field_page(&likes), &runtime),
                    };
                    tally.reads.fetch_add(1, Ordering::SeqCst);
                    let html = match html {
                        Ok(html) => html,
                        Err(error) => {
                            tally.page_errors.fetch_add(1, Ordering::SeqCst);
                            eprintln!("freshness {}: page failed: {error}", sc.name);
                            continue;
                        }
                    };
                    if !debug && html.contains("<!--cachesweeper") {
                        tally.marked.fetch_add(1, Ordering::SeqCst);
                    }
                    let Some(shown) = shown_likes(&html, shape.comments()) else {
                        tally.incomplete.fetch_add(1, Ordering::SeqCst);
                        continue;
                    };
                    let mut stale = 0;
                    for (i, (&shown, &floor)) in shown.iter().zip(&floor).enumerate() {
                        if shown < floor {
                            stale += 1;
                            let mut examples = tally.examples.lock().unwrap();
                            if examples.len() < 5 {
                                examples.push(format!(
                                    "comment {} showed {shown} likes, {floor} acknowledged before the read started ({} loaded; {}, sweeper {}, at {:?})",
                                    i + 1,
                                    likes[i],
                                    PATHS[path],
                                    (r + n as usize) % sweepers.len(),
                                    start.elapsed(),
                                ));
                            }
                        }
                    }
                    if stale > 0 {
                        tally.violations.fetch_add(stale, Ordering::SeqCst);
                        tally.stale_pages.fetch_add(1, Ordering::SeqCst);
                        tally.by_path[path].fetch_add(stale, Ordering::SeqCst);
                    }
                }
                readers_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for w in 0..sc.writers {
            let (tally, stop) = (&tally, &stop);
            scope.spawn(move || {
                let runtime = runtime();
                let hot = if sc.hot == 0 {
                    shape.comments()
                } else {
                    sc.hot
                };
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let own;
                    let mut sweeper = &sweepers[(w + n) % sweepers.len()];
                    if sc.sweeper_per_write {
                        own = Sweeper::builder()
                            .backend(std::sync::Arc::clone(sweeper.backend()))
                            .build()
                            .unwrap();
                        sweeper = &own;
                    }
                    n += 1;
                    let i = random_below(hot as u64) as usize;
                    let likes = db.commit_like(i); // committed
                    sleep_up_to(sc.write_delay_ms);
                    // Blocking and async invalidations in turn.
                    let async_ = n % 2 == 0;
                    let mut invalidated = match sc.models {
                        Models::Counters => {
                            invalidated(sweeper, &shape.comment(i, likes), async_, &runtime)
                        }
                        Models::Fields => {
                            invalidated(sweeper, &shape.reply(i, likes), async_, &runtime)
                        }
                    };
                    if ancestors {
                        invalidated &= sweeper.invalidate(&shape.article(i)).is_ok();
                    }
                    tally.writes.fetch_add(1, Ordering::SeqCst);
                    sleep_up_to(sc.write_gap_ms);
                    if !invalidated {
                        // Not acknowledged: the guarantee is for an invalidate that returned
                        // Ok. (A failed one is retried; tests/failed_invalidation.rs checks
                        // what becomes of it.)
                        tally.invalidate_errors.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    // Only now, once invalidate has returned, is the count acknowledged.
                    db.ack(i, likes);
                }
            });
        }
        during(start);
        // Stop the writers at the deadline, or once every reader is done (if there are any).
        while (sc.readers == 0 || readers_done.load(Ordering::SeqCst) < sc.readers as u64)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
    });
    tally
}

/// Prints a scenario's figures (the first line in the fixed format) and asserts the guarantee.
fn report(sc: &Scenario, tally: &Tally, sweepers: &[Sweeper], extra_hits: u64) {
    let g = Tally::get;
    let (reads, writes, violations) = (g(&tally.reads), g(&tally.writes), g(&tally.violations));
    let (mut hits, mut misses, mut errors) = (extra_hits, 0, 0);
    for s in sweepers {
        let stats = s.stats();
        hits += stats.hits;
        misses += stats.misses;
        errors += stats.errors;
    }
    eprintln!(
        "freshness {}: reads={reads} writes={writes} invalidate_errors={} violations={violations}",
        sc.name,
        g(&tally.invalidate_errors),
    );
    eprintln!(
        "freshness {}:   stale_pages={} (render={} render_async={}) page_errors={} incomplete={} invalidate_errors={} hits={hits} misses={misses} cache_errors={errors}{}",
        sc.name,
        g(&tally.stale_pages),
        g(&tally.by_path[0]),
        g(&tally.by_path[1]),
        g(&tally.page_errors),
        g(&tally.incomplete),
        g(&tally.invalidate_errors),
        if invalidate_ancestors() {
            " (writers also invalidate the article)"
        } else {
            ""
        },
    );
    let examples = tally.examples.lock().unwrap();
    for example in examples.iter() {
        eprintln!("freshness {}:   e.g. {example}", sc.name);
    }
    assert!(reads > 0 && writes > 0, "{}: nothing ran", sc.name);
    assert_eq!(g(&tally.page_errors), 0, "{}: pages failed", sc.name);
    assert_eq!(g(&tally.incomplete), 0, "{}: incomplete pages", sc.name);
    assert!(hits > 0, "{}: the cache was never hit", sc.name);
    assert_eq!(
        g(&tally.marked),
        0,
        "{}: a debug render's marks reached ordinary pages",
        sc.name
    );
    if sc.all_invalidations_ok {
        assert_eq!(
            g(&tally.invalidate_errors),
            0,
            "{}: invalidations failed against a healthy server",
            sc.name
        );
    }
    assert_eq!(
        violations,
        0,
        "{}: {violations} comments shown stale in {} pages, e.g. {examples:#?}",
        sc.name,
        g(&tally.stale_pages),
    );
}

/// A reader's or writer's own runtime, for the async calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn memcached_sweepers(server: &MemcachedProcess, n: usize) -> Vec<Sweeper> {
    (0..n)
        .map(|_| {
            Sweeper::builder()
                .backend(Memcached::from_url(&server.url()).unwrap())
                .build()
                .unwrap()
        })
        .collect()
}

/// [`memcached_sweepers`], each a [`common::patient_memcached`].
fn patient_memcached_sweepers(url: &str, n: usize) -> Vec<Sweeper> {
    (0..n).map(|_| common::patient_memcached(url)).collect()
}

fn in_memory(sc: &Scenario, sweepers: &[Sweeper], during: impl FnOnce(Instant)) {
    let db = MemDb::new(sc.shape.comments());
    let tally = run(sc, sweepers, &db, during);
    report(sc, &tally, sweepers, 0);
}

#[test]
fn a_embedded() {
    let _one = common::one_at_a_time();
    let sc = Scenario {
        name: "embedded",
        ..BASE
    };
    let sweeper = Sweeper::builder()
        .backend(Embedded::new(16 << 20))
        .build()
        .unwrap();
    in_memory(&sc, &[sweeper], |_| {});
}

#[test]
fn b_memcached() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "memcached",
        ..BASE
    };
    // Two sweepers: two application processes on one memcached, each with its own L1.
    in_memory(&sc, &memcached_sweepers(&server, 2), |_| {});
}

#[test]
fn c_slow_bodies() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "slow-bodies",
        shape: Shape {
            articles: 2,
            per_article: 6,
        },
        readers: 4,
        body_ms: 20,
        // Slow pages take a quarter of a second: writes paced so that some fragments live
        // long enough to be hit.
        write_gap_ms: 100,
        duration: Duration::from_secs(4),
        ..BASE
    };
    in_memory(&sc, &memcached_sweepers(&server, 2), |_| {});
}

#[test]
fn d_lease_contention() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    // Many readers on one hot article, in three "processes": they contend for the leases of
    // the same fragments whenever a write invalidates them.
    let sc = Scenario {
        name: "lease-contention",
        shape: Shape {
            articles: 1,
            per_article: 4,
        },
        readers: 8,
        writers: 2,
        hot: 2,
        body_ms: 2,
        ..BASE
    };
    in_memory(&sc, &memcached_sweepers(&server, 3), |_| {});
}

#[test]
fn e_memcached_restart() {
    let _one = common::one_at_a_time();
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "memcached-restart",
        duration: RESTART_RUN,
        ..BASE
    };
    let sweepers = memcached_sweepers(&server, 2);
    with_a_restart(&sc, &sweepers, || {
        server.kill();
        std::thread::sleep(Duration::from_millis(200));
        server.restart();
    });
}

/// How long a restart scenario runs: long enough to see the cache used again, since the
/// breaker skips the server for its 2 s window after the restart, then pending invalidations
/// land.
const RESTART_RUN: Duration = Duration::from_secs(6);

/// Runs `sc` on `sweepers`, restarting their cache server (`restart`: down for a moment, then
/// back, empty, on the same port) 1.5 s in, while writers and readers keep going; then checks
/// that the cache was used again after it.
fn with_a_restart(sc: &Scenario, sweepers: &[Sweeper], restart: impl FnOnce()) {
    let hits = |sweepers: &[Sweeper]| sweepers.iter().map(|s| s.stats().hits).sum::<u64>();
    let mut hits_at_restart = 0;
    in_memory(sc, sweepers, |start| {
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed()));
        restart();
        hits_at_restart = hits(sweepers);
        eprintln!(
            "freshness {}: cache server restarted at {:?}",
            sc.name,
            start.elapsed()
        );
    });
    assert!(
        hits(sweepers) > hits_at_restart,
        "{}: the cache was not used again after the restart",
        sc.name
    );
}

/// `n` sweepers, each on a Redis backend of its own (its own connection and lease token), as
/// `n` application processes would be.
fn redis_sweepers(n: usize, backend: impl Fn() -> Redis) -> Vec<Sweeper> {
    (0..n)
        .map(|_| Sweeper::builder().backend(backend()).build().unwrap())
        .collect()
}

#[test]
fn g_redis() {
    let _one = common::one_at_a_time();
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "redis",
        ..BASE
    };
    let sweepers = redis_sweepers(2, || Redis::from_url(&server.url()).unwrap());
    in_memory(&sc, &sweepers, |_| {});
}

#[test]
fn h_redis_cluster() {
    let _one = common::one_at_a_time();
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let sc = Scenario {
        name: "redis-cluster",
        ..BASE
    };
    let sweepers = redis_sweepers(2, || Redis::cluster(&cluster.urls()).unwrap());
    in_memory(&sc, &sweepers, |_| {});
}

#[test]
fn i_redis_restart() {
    let _one = common::one_at_a_time();
    let Some(mut server) = RedisProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "redis-restart",
        duration: RESTART_RUN,
        ..BASE
    };
    let sweepers = redis_sweepers(2, || Redis::from_url(&server.url()).unwrap());
    with_a_restart(&sc, &sweepers, || {
        server.kill();
        std::thread::sleep(Duration::from_millis(200));
        server.restart();
    });
}

#[test]
fn j_redis_lease_contention() {
    let _one = common::one_at_a_time();
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let sc = Scenario {
        name: "redis-lease-contention",
        shape: Shape {
            articles: 1,
            per_article: 4,
        },
        readers: 8,
        writers: 2,
        hot: 2,
        body_ms: 2,
        ..BASE
    };
    let sweepers = redis_sweepers(3, || Redis::from_url(&server.url()).unwrap());
    in_memory(&sc, &sweepers, |_| {});
}

/// Issue 20's scenarios: what the checker did not model before.
const ISSUE_20: Scenario = Scenario {
    name: "",
    all_invalidations_ok: true,
    ..BASE
};

#[test]
fn k_field_versioned_records() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    // Replies versioned by their like count alone, touching nothing, inside a counter-versioned
    // section inside a field-versioned site: only what the outer fragments remember of the
    // replies makes them miss.
    let sc = Scenario {
        name: "field-versioned",
        models: Models::Fields,
        ..ISSUE_20
    };
    in_memory(&sc, &patient_memcached_sweepers(&server.url(), 2), |_| {});
}

#[test]
fn l_evicted_counters_and_slow_reads() {
    let _one = common::one_at_a_time();
    // 2 MB: a filler of small items in the counters' slab class evicts counters all the time.
    let Some(server) = MemcachedProcess::start_with(&["-m", "2"]) else {
        return;
    };
    let sc = Scenario {
        name: "evicted-counters",
        ..ISSUE_20
    };
    // One process behind a slow link: its reads (which may recreate an evicted counter) arrive
    // 10 ms after they leave.
    let slow = SlowLink::start(server.port(), Duration::from_millis(10));
    let mut sweepers = patient_memcached_sweepers(&server.url(), 1);
    sweepers.extend(patient_memcached_sweepers(&slow.memcached_url(), 1));
    let filler = Memcached::from_url(&server.url()).unwrap();
    let evictions_before = server.stat("evictions").unwrap_or(0);
    in_memory(&sc, &sweepers, |start| {
        let value = b"1796304589033651339";
        let mut n = 0u64;
        while start.elapsed() < sc.duration {
            let keys: Vec<String> = (0..2_000)
                .map(|i| format!("ns|v|filler::Thing|{}", n * 2_000 + i))
                .collect();
            let items: Vec<SetItem<'_>> = keys
                .iter()
                .map(|key| SetItem {
                    key,
                    value,
                    ttl: None,
                })
                .collect();
            let _ = cachesweeper::backend::block_on(filler.set_many(&items));
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let evictions = server.stat("evictions").unwrap_or(0) - evictions_before;
    eprintln!("freshness {}: memcached evicted {evictions} items", sc.name);
    assert!(
        evictions > 10_000,
        "the filler evicted too little: {evictions}"
    );
}

#[test]
fn m_debug_renders() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    // One read in four is a debug render, in both processes, on pages whose outer fragment is
    // versioned by a field alone.
    let sc = Scenario {
        name: "debug-renders",
        models: Models::Fields,
        debug_every: 4,
        ..ISSUE_20
    };
    in_memory(&sc, &patient_memcached_sweepers(&server.url(), 2), |_| {});
}

#[test]
fn n_hot_record() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    // Every write on one comment of a small page, read by six readers over two processes, with
    // no pauses: the invalidations race the reads of the same counters, and every one must
    // return Ok.
    let sc = Scenario {
        name: "hot-record",
        shape: Shape {
            articles: 1,
            per_article: 2,
        },
        readers: 6,
        writers: 2,
        hot: 1,
        read_delay_ms: 0,
        pause_every: 0,
        ..ISSUE_20
    };
    in_memory(&sc, &patient_memcached_sweepers(&server.url(), 2), |_| {});
}

#[test]
fn o_dropped_sweeper_with_a_retry() {
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    // Two processes, one of them behind a link that loses everything it sends for the run's
    // last half second (one-way packet loss): its invalidations then fail, never reach the
    // server, and are left to the retry thread; each write goes through a sweeper of its own,
    // dropped right after. Once the link is back, every page must come to show every committed
    // like.
    let sc = Scenario {
        name: "dropped-sweeper",
        sweeper_per_write: true,
        duration: Duration::from_secs(2),
        ..BASE
    };
    let link = SlowLink::start(server.port(), Duration::ZERO);
    let mut sweepers = memcached_sweepers(&server, 1);
    sweepers.push(
        Sweeper::builder()
            .backend(Memcached::from_url(&link.memcached_url()).unwrap())
            .build()
            .unwrap(),
    );
    let db = MemDb::new(sc.shape.comments());
    let tally = run(&sc, &sweepers, &db, |start| {
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed()));
        link.set_cut(true);
        std::thread::sleep(
            sc.duration.saturating_sub(start.elapsed()) + Duration::from_millis(300),
        );
        link.set_cut(false);
    });
    report(&sc, &tally, &sweepers, 0);
    assert!(
        Tally::get(&tally.invalidate_errors) > 0,
        "the cut failed no invalidation"
    );
    let committed = db.load();
    // The retries wait out the breaker's window (2 s) before they reach the server again.
    let deadline = Instant::now() + Duration::from_secs(6);
    for (n, sweeper) in sweepers.iter().enumerate() {
        loop {
            let page = sc.shape.page(&committed, 0);
            let shown = shown_likes(&sweeper.scope().render(&page).unwrap(), sc.shape.comments());
            if shown.as_ref() == Some(&committed) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: sweeper {n} still shows {shown:?}, {committed:?} committed: a failed \
                 invalidation was forgotten",
                sc.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn p_redis_cluster_failover() {
    let _one = common::one_at_a_time();
    let Some(mut cluster) = RedisCluster::start_with_replicas(1) else {
        return;
    };
    // Writes paced (each comment written every few seconds), so that a raise lost in the
    // failover is not covered at once by the next write of the same comment.
    let sc = Scenario {
        name: "redis-cluster-failover",
        duration: RESTART_RUN,
        write_gap_ms: 600,
        read_delay_ms: 2,
        pause_every: 0,
        ..BASE
    };
    let sweepers = redis_sweepers(2, || Redis::cluster(&cluster.urls()).unwrap());
    let key = sweepers[0].counter_key(&sc.shape.comment(0, 0));
    let (master, replica) = cluster.master_and_replica(&key);
    with_a_restart(&sc, &sweepers, || {
        // The master's link to its replica breaks while writes go on, then the master dies and
        // the replica takes over: whatever only the master had is lost.
        cluster.nodes()[replica].pause();
        cluster.nodes()[master].command("CLIENT KILL TYPE replica");
        std::thread::sleep(Duration::from_millis(1_000));
        cluster.nodes_mut()[master].kill();
        cluster.nodes()[replica].resume();
        cluster.promote(replica);
    });
}

// ---------------------------------------------------------------------------------------------
// (f) Another OS process: this test binary, re-executed as a writer or a reader
// ---------------------------------------------------------------------------------------------

const ROLE_VAR: &str = "CACHESWEEPER_FRESHNESS_ROLE";
const URL_VAR: &str = "CACHESWEEPER_FRESHNESS_MEMCACHED";
const DB_VAR: &str = "CACHESWEEPER_FRESHNESS_DB";
const OUT_VAR: &str = "CACHESWEEPER_FRESHNESS_OUT";
const SECOND_PROCESS_TEST: &str = "f_second_process";

const SECOND_PROCESS: Scenario = Scenario {
    name: "second-process",
    readers: 2,
    writers: 2,
    duration: Duration::from_secs(5),
    ..BASE
};

/// In a child process: be a writer or a reader against the given memcached and SQLite file,
/// then write its counters to the output file.
fn child(role: &str) {
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let sweeper = Sweeper::builder()
        .backend(Memcached::from_url(&var(URL_VAR)).unwrap())
        .build()
        .unwrap();
    let db = SqliteDb {
        path: var(DB_VAR).into(),
    };
    let sc = match role {
        "writer" => Scenario {
            name: "second-process (child writer)",
            readers: 0,
            ..SECOND_PROCESS
        },
        "reader" => Scenario {
            name: "second-process (child reader)",
            writers: 0,
            ..SECOND_PROCESS
        },
        other => panic!("unknown role {other}"),
    };
    let tally = run(&sc, std::slice::from_ref(&sweeper), &db, |_| {});
    let g = Tally::get;
    eprintln!(
        "freshness {}: reads={} writes={} violations={}",
        sc.name,
        g(&tally.reads),
        g(&tally.writes),
        g(&tally.violations)
    );
    for example in tally.examples.lock().unwrap().iter() {
        eprintln!("freshness {}:   e.g. {example}", sc.name);
    }
    std::fs::write(var(OUT_VAR), tally.encode(sweeper.stats().hits)).unwrap();
}

#[test]
fn f_second_process() {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        return child(&role);
    }
    let _one = common::one_at_a_time();
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("cachesweeper-freshness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = SqliteDb::create(&dir.join("db.sqlite"), SECOND_PROCESS.shape.comments());
    let spawn = |role: &str| {
        let out = dir.join(format!("{role}.out"));
        let _ = std::fs::remove_file(&out);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", SECOND_PROCESS_TEST, "--nocapture"])
            .env(ROLE_VAR, role)
            .env(URL_VAR, server.url())
            .env(DB_VAR, &db.path)
            .env(OUT_VAR, &out)
            .spawn()
            .unwrap();
        (role.to_owned(), child, out)
    };
    // A writer process and a reader process; this one reads and writes too, with its own
    // sweeper (and L1) on the same memcached.
    let children = [spawn("writer"), spawn("reader")];
    let sweepers = memcached_sweepers(&server, 1);
    let tally = run(&SECOND_PROCESS, &sweepers, &db, |_| {});
    let mut child_hits = 0;
    for (role, mut child, out) in children {
        assert!(child.wait().unwrap().success(), "the {role} process failed");
        let line = std::fs::read_to_string(&out).unwrap();
        child_hits += tally.absorb(&line);
    }
    let _ = std::fs::remove_dir_all(&dir);
    report(&SECOND_PROCESS, &tally, &sweepers, child_hits);
}
