//! What the database's change log costs a write, against the hand-written `invalidate` it
//! replaces, on SQLite (a WAL file) and on PostgreSQL (a real server on loopback), each with the
//! embedded cache and with memcached:
//!
//! - `vote/*`: one like, as the blog runs it (a `BEGIN IMMEDIATE` transaction of one `UPDATE`,
//!   committed), then the comment and its article invalidated: by `Sweeper::invalidate` after
//!   the commit (`by_hand`), or by the log: SQLite's WAL hook inside the commit, PostgreSQL's
//!   `ChangeLog::commit` reading the log after it (`change_log`);
//! - `bulk_1000/*`: one statement that likes the 1,000 comments of an article, then every one
//!   of them and the article invalidated: by hand, the application selects the ids and
//!   invalidates each record (`by_hand`); with the log, its trigger has logged them and the
//!   log raises them in one batch (`change_log`).
//!
//! `cargo bench --bench changes`; see BENCHMARKS.md.

use std::time::Duration;

use cachesweeper::changes::{postgres, sqlite};
use cachesweeper::{Sweepable, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::postgres::PostgresProcess;
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
    let log = sqlite::ChangeLog::builder(log_db.0.path())
        .install(sweeper)
        .expect("install");
    let conn: sqlite::Connection = log.connect().expect("connect");
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

/// PostgreSQL's schema, with one article of [`COMMENTS`] comments.
const POSTGRES_SCHEMA: &str = "
    CREATE TABLE articles (id bigint PRIMARY KEY);
    CREATE TABLE comments (id bigint PRIMARY KEY, article_id bigint NOT NULL,
                           likes bigint NOT NULL DEFAULT 0);
    INSERT INTO articles (id) VALUES (1);
    INSERT INTO comments (id, article_id) SELECT i, 1 FROM generate_series(1, 1000) AS i;
";

/// The same writes on PostgreSQL, each way in a new database on `server`.
fn bench_postgres(c: &mut Criterion, backend: &str, sweeper: &Sweeper, server: &PostgresProcess) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let connect = |database: &str| {
        server.create_database(database);
        server.psql(database, POSTGRES_SCHEMA);
        let url = server.url(database);
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            client
        })
    };
    const LIKE: &str = "UPDATE comments SET likes = likes + 1 WHERE id = $1";
    const LIKE_ALL: &str = "UPDATE comments SET likes = likes + 1 WHERE article_id = 1";
    let mut group = c.benchmark_group(format!("changes-postgres/{backend}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));

    // By hand: the application's invalidate calls after its commit.
    let mut plain = connect(&format!("plain_{backend}"));
    let mut n = 0;
    group.bench_function("vote/by_hand", |b| {
        b.iter(|| {
            n = n % COMMENTS + 1;
            runtime.block_on(async {
                let tx = plain.transaction().await.expect("begin");
                tx.execute(LIKE, &[&n]).await.expect("like");
                tx.commit().await.expect("commit");
                sweeper
                    .invalidate_async(&Comment {
                        id: n,
                        article_id: 1,
                    })
                    .await
                    .expect("invalidate");
            })
        })
    });
    group.bench_function("bulk_1000/by_hand", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let changed = plain.execute(LIKE_ALL, &[]).await.expect("like all");
                assert_eq!(changed, COMMENTS as u64);
                let ids = plain
                    .query("SELECT id FROM comments WHERE article_id = 1", &[])
                    .await
                    .expect("ids");
                for row in ids {
                    sweeper
                        .invalidate_async(&Comment {
                            id: row.get(0),
                            article_id: 1,
                        })
                        .await
                        .expect("invalidate");
                }
            })
        })
    });

    // The change log: the triggers, and the log's commit.
    let database = format!("logged_{backend}");
    let mut logged = connect(&database);
    let log = runtime.block_on(async {
        postgres::ChangeLog::builder(&server.url(&database))
            .install(sweeper)
            .await
            .expect("install")
    });
    let mut n = 0;
    group.bench_function("vote/change_log", |b| {
        b.iter(|| {
            n = n % COMMENTS + 1;
            runtime.block_on(async {
                let tx = logged.transaction().await.expect("begin");
                tx.execute(LIKE, &[&n]).await.expect("like");
                log.commit(tx).await.expect("commit");
            })
        })
    });
    group.bench_function("bulk_1000/change_log", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tx = logged.transaction().await.expect("begin");
                let changed = tx.execute(LIKE_ALL, &[]).await.expect("like all");
                assert_eq!(changed, COMMENTS as u64);
                log.commit(tx).await.expect("commit");
            })
        })
    });
    group.finish();
    runtime.block_on(async move { drop(log) });
}

fn changes(c: &mut Criterion) {
    let memcached = MemcachedProcess::start().expect("memcached is installed");
    let on_memcached = Sweeper::memcached(&memcached.url()).expect("sweeper");
    bench_backend(c, "embedded", &Sweeper::embedded());
    bench_backend(c, "memcached", &on_memcached);
    let postgres = PostgresProcess::start().expect("PostgreSQL is installed");
    bench_postgres(c, "embedded", &Sweeper::embedded(), &postgres);
    bench_postgres(c, "memcached", &on_memcached, &postgres);
}

criterion_group!(benches, changes);
criterion_main!(benches);
