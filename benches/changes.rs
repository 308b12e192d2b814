//! What the database's change log costs a write, against the hand-written `invalidate` it
//! replaces, on SQLite (a WAL file) with the embedded cache and with memcached:
//!
//! - `vote/*`: one like, as the blog runs it (a `BEGIN IMMEDIATE` transaction of one `UPDATE`,
//!   committed), then the comment and its article invalidated: by `Sweeper::invalidate` after
//!   the commit (`by_hand`), or by the log's WAL hook inside the commit (`change_log`);
//! - `bulk_1000/*`: one statement that likes the 1,000 comments of an article, then every one
//!   of them and the article invalidated: by hand, the application selects the ids and
//!   invalidates each record (`by_hand`); with the log, its trigger has logged them and the
//!   hook raises them in one batch (`change_log`).
//!
//! `cargo bench --bench changes`; see BENCHMARKS.md.

use std::time::Duration;

use cachesweeper::changes::sqlite::{ChangeLog, Connection};
use cachesweeper::{Sweepable, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::temp_file::TempFile;
use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::TransactionBehavior;

#[derive(Sweepable)]
#[sweeper(name = "bench::Article", table = "articles")]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
#[sweeper(name = "bench::Comment", table = "comments")]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

const COMMENTS: i64 = 1_000;

/// A database file with one article of [`COMMENTS`] comments; removed when dropped.
struct Database(TempFile);

impl Database {
    fn new() -> Database {
        let file = TempFile::new("sqlite");
        let conn = rusqlite::Connection::open(file.path()).expect("create");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("WAL");
        conn.execute_batch(
            "CREATE TABLE articles (id INTEGER PRIMARY KEY);
             CREATE TABLE comments (id INTEGER PRIMARY KEY, article_id INTEGER NOT NULL,
                                    likes INTEGER NOT NULL DEFAULT 0);
             INSERT INTO articles (id) VALUES (1);",
        )
        .expect("schema");
        let tx = conn.unchecked_transaction().expect("begin");
        for id in 1..=COMMENTS {
            tx.execute("INSERT INTO comments (id, article_id) VALUES (?1, 1)", [id])
                .expect("comment");
        }
        tx.commit().expect("commit");
        Database(file)
    }
}

fn like(conn: &rusqlite::Connection, id: i64) {
    let tx =
        rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).expect("begin");
    tx.execute("UPDATE comments SET likes = likes + 1 WHERE id = ?1", [id])
        .expect("like");
    tx.commit().expect("commit");
}

fn like_all(conn: &rusqlite::Connection) -> usize {
    conn.execute(
        "UPDATE comments SET likes = likes + 1 WHERE article_id = 1",
        [],
    )
    .expect("like all")
}

fn bench_backend(c: &mut Criterion, backend: &str, sweeper: &Sweeper) {
    let mut group = c.benchmark_group(format!("changes/{backend}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));

    // By hand: a plain connection, and the application's invalidate calls.
    let plain_db = Database::new();
    let plain = rusqlite::Connection::open(plain_db.0.path()).expect("open");
    let mut n = 0;
    group.bench_function("vote/by_hand", |b| {
        b.iter(|| {
            n = n % COMMENTS + 1;
            like(&plain, n);
            sweeper
                .invalidate(&Comment {
                    id: n,
                    article_id: 1,
                })
                .expect("invalidate");
        })
    });
    group.bench_function("bulk_1000/by_hand", |b| {
        b.iter(|| {
            assert_eq!(like_all(&plain), COMMENTS as usize);
            let ids: Vec<i64> = plain
                .prepare_cached("SELECT id FROM comments WHERE article_id = 1")
                .expect("prepare")
                .query_map([], |row| row.get(0))
                .expect("ids")
                .collect::<Result<_, _>>()
                .expect("ids");
            for id in ids {
                sweeper
                    .invalidate(&Comment { id, article_id: 1 })
                    .expect("invalidate");
            }
        })
    });

    // The change log: a connection of the log, and no invalidate call.
    let log_db = Database::new();
    let log = ChangeLog::builder(log_db.0.path())
        .install(sweeper)
        .expect("install");
    let conn: Connection = log.connect().expect("connect");
    let mut n = 0;
    group.bench_function("vote/change_log", |b| {
        b.iter(|| {
            n = n % COMMENTS + 1;
            like(&conn, n);
        })
    });
    group.bench_function("bulk_1000/change_log", |b| {
        b.iter(|| assert_eq!(like_all(&conn), COMMENTS as usize))
    });
    group.finish();
}

fn changes(c: &mut Criterion) {
    bench_backend(c, "embedded", &Sweeper::embedded());
    let memcached = MemcachedProcess::start().expect("memcached is installed");
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    bench_backend(c, "memcached", &sweeper);
}

criterion_group!(benches, changes);
criterion_main!(benches);
