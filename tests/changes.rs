//! The database as the source of invalidations (SQLite): triggers log each change in the
//! writing transaction, a connection of the log applies its own commits before they return,
//! and the follower applies everyone else's (another connection, another process, `sqlite3` in
//! a shell) within its poll interval.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use cachesweeper::backend::Embedded;
use cachesweeper::changes::sqlite::{ChangeLog, ChangeLogBuilder, Connection};
use cachesweeper::{Error, Sweepable, Sweeper, Version};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::temp_file::TempFile;
use common::forgetful::Forgetful;

#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Article", table = "articles")]
struct Article {
    id: i64,
}

#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Comment", table = "comments")]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

/// `Article` alone, in a database of its own name: a log of it installs the articles' triggers
/// and not the comments'.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(
    name = "changes::Article",
    table = "articles",
    database = "articles only"
)]
struct ArticleOnly {
    id: i64,
}

/// The same table as `Comment`, but a model that touches nothing: its triggers differ.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Comment", table = "comments", database = "lone")]
struct LoneComment {
    id: i64,
}

/// A model whose table lacks the column its key field names.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Tag", table = "articles", database = "tags")]
struct Tag {
    #[sweeper(key)]
    slug: String,
}

/// Two models of one table with different parents, in one database.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Note", table = "notes", database = "twice")]
struct Note {
    id: i64,
}

#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::NoteOfArticle", table = "notes", database = "twice")]
struct NoteOfArticle {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

const SCHEMA: &str = "
    CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '');
    CREATE TABLE comments (
        id INTEGER PRIMARY KEY,
        article_id INTEGER NOT NULL,
        likes INTEGER NOT NULL DEFAULT 0,
        slug TEXT UNIQUE
    );
";

/// A database file of this test, with the schema, removed when dropped.
struct Database(TempFile);

impl Database {
    fn new() -> Database {
        let file = TempFile::new("sqlite");
        let conn = rusqlite::Connection::open(file.path()).expect("create the database");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("WAL");
        conn.execute_batch(SCHEMA).expect("schema");
        Database(file)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A connection that is not the log's: what another program writes through.
    fn foreign(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.path()).expect("open");
        conn.busy_timeout(Duration::from_secs(10)).expect("timeout");
        conn
    }

    /// The log of every model of the default database: `Article` and `Comment`.
    fn log(&self) -> ChangeLogBuilder {
        ChangeLog::builder(self.path())
    }
}

fn comment(id: i64, article_id: i64) -> Comment {
    Comment { id, article_id }
}

fn version<R: Sweepable>(sweeper: &Sweeper, record: &R) -> Version {
    sweeper.version(record).expect("version")
}

/// Waits until `record`'s version is no longer `before`, for at most 10 s (never: a lost
/// invalidation); returns how long it took.
fn changed<R: Sweepable>(sweeper: &Sweeper, record: &R, before: &Version) -> Duration {
    let start = Instant::now();
    while version(sweeper, record) == *before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the change was never applied"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    start.elapsed()
}

/// Article 1 with comments 1..=3, article 2 with comment 4, through `conn`.
fn seed(conn: &rusqlite::Connection) {
    conn.execute_batch(
        "INSERT INTO articles (id) VALUES (1), (2);
         INSERT INTO comments (id, article_id) VALUES (1, 1), (2, 1), (3, 1), (4, 2);",
    )
    .expect("seed");
}

/// No follower to speak of: anything applied in these tests was applied by the commit's hook or
/// at open.
const NEVER: Duration = Duration::from_secs(3_600);

/// The follower's default poll interval.
const FOLLOWING: Duration = Duration::from_millis(10);

/// A database with the log installed on the embedded cache (its follower polling every
/// `poll`), and a connection of the log through which it was seeded.
struct Setup {
    sweeper: Sweeper,
    log: ChangeLog,
    conn: Connection,
    db: Database,
}

fn seeded(poll: Duration) -> Setup {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(poll)
        .install(&sweeper)
        .expect("install");
    let conn = log.connect().expect("connect");
    seed(&conn);
    Setup {
        sweeper,
        log,
        conn,
        db,
    }
}

#[test]
fn a_commit_through_the_log_invalidates_the_record_and_its_parents_before_it_returns() {
    let Setup {
        db: _db,
        sweeper,
        log: _log,
        mut conn,
    } = seeded(NEVER);
    let (c1, c2, c4) = (comment(1, 1), comment(2, 1), comment(4, 2));
    let (a1, a2) = (Article { id: 1 }, Article { id: 2 });
    let before = [&c1, &c2, &c4].map(|c| version(&sweeper, c));
    let articles = [&a1, &a2].map(|a| version(&sweeper, a));

    conn.execute("UPDATE comments SET likes = likes + 1 WHERE id = 1", [])
        .expect("like");
    assert_ne!(version(&sweeper, &c1), before[0], "the liked comment");
    assert_ne!(version(&sweeper, &a1), articles[0], "its article");
    assert_eq!(version(&sweeper, &c2), before[1], "another comment");
    assert_eq!(version(&sweeper, &a2), articles[1], "another article");

    // A comment moved to another article invalidates both articles, in one transaction.
    let articles = [&a1, &a2].map(|a| version(&sweeper, a));
    let tx = conn.transaction().expect("begin");
    tx.execute("UPDATE comments SET article_id = 2 WHERE id = 2", [])
        .expect("move");
    tx.commit().expect("commit");
    assert_ne!(version(&sweeper, &a1), articles[0], "the old article");
    assert_ne!(version(&sweeper, &a2), articles[1], "the new article");

    // A delete invalidates the deleted record and its parent.
    let (c4_before, a2_before) = (version(&sweeper, &c4), version(&sweeper, &a2));
    conn.execute("DELETE FROM comments WHERE id = 4", [])
        .expect("delete");
    assert_ne!(version(&sweeper, &c4), c4_before);
    assert_ne!(version(&sweeper, &a2), a2_before);
}

#[test]
fn a_commit_left_to_a_statements_reset_is_applied_by_the_follower() {
    // `query_row` on an `INSERT … RETURNING` outside a transaction: the statement commits when
    // rusqlite resets it, and SQLite calls no WAL hook for such a commit. The follower applies
    // it (within its poll interval); a transaction, as the README says, applies it before the
    // commit returns.
    let Setup {
        db: _db,
        sweeper,
        log: _log,
        conn,
    } = seeded(FOLLOWING);
    let a1 = Article { id: 1 };
    let before = version(&sweeper, &a1);
    let id: i64 = conn
        .query_row(
            "INSERT INTO comments (article_id) VALUES (1) RETURNING id",
            [],
            |row| row.get(0),
        )
        .expect("insert");
    assert_eq!(id, 5);
    changed(&sweeper, &a1, &before);
}

#[test]
fn a_rolled_back_transaction_raises_nothing() {
    let Setup {
        db: _db,
        sweeper,
        log,
        mut conn,
    } = seeded(NEVER);
    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    let (stats, applied) = (sweeper.stats(), log.applied());

    let tx = conn.transaction().expect("begin");
    tx.execute(
        "UPDATE comments SET likes = likes + 1 WHERE article_id = 1",
        [],
    )
    .expect("like");
    tx.rollback().expect("rollback");
    assert_eq!(log.catch_up().expect("catch up"), 0);

    let raised = sweeper.stats() - stats;
    assert_eq!(raised.invalidations, 0, "no invalidation");
    assert_eq!(raised.round_trips, 0, "no call to the cache");
    assert_eq!(log.applied(), applied, "no log row applied");
    assert_eq!(version(&sweeper, &c1), before);
}

#[test]
fn a_foreign_write_is_applied_by_the_follower_and_its_lag_is_measured() {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let log = db.log().install(&sweeper).expect("install");
    let foreign = db.foreign();
    seed(&foreign);
    let c1 = comment(1, 1);
    let a1 = Article { id: 1 };
    const WRITES: usize = 1_000;
    let mut lags = Vec::with_capacity(WRITES);
    for n in 0..WRITES {
        // Alternately the comment alone and every comment of the article.
        let (record_before, article_before) = (version(&sweeper, &c1), version(&sweeper, &a1));
        let sql = if n % 2 == 0 {
            "UPDATE comments SET likes = likes + 1 WHERE id = 1"
        } else {
            "UPDATE comments SET likes = likes + 1 WHERE article_id = 1"
        };
        foreign.execute(sql, []).expect("write");
        let committed = Instant::now();
        changed(&sweeper, &c1, &record_before);
        changed(&sweeper, &a1, &article_before);
        lags.push(committed.elapsed());
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "foreign write lag (SQLite, poll 10 ms, {WRITES} writes): median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
    assert!(log.applied() >= 2 * WRITES as u64);
}

#[test]
fn a_table_without_its_triggers_is_an_error_naming_it() {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let untracked = |result: cachesweeper::Result<ChangeLog>| match result {
        Err(Error::Untracked { table, problem }) => (table, problem),
        other => panic!("expected Untracked, got {other:?}"),
    };

    // Nothing installed at all.
    let (table, problem) = untracked(db.log().open(&sweeper));
    assert_eq!(table, "cachesweeper_changes");
    assert!(problem.contains("install"), "{problem}");

    // Only articles installed: comments has no trigger.
    drop(
        db.log()
            .database("articles only")
            .install(&sweeper)
            .expect("install articles"),
    );
    let error = db.log().open(&sweeper).expect_err("comments untracked");
    assert_eq!(
        error.to_string(),
        "table `comments` is not tracked by the change log: it has no trigger \
         `cachesweeper_comments_insert`, so its changes would not reach the cache: install it \
         (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)"
    );

    // Installed, then one trigger dropped by hand.
    drop(db.log().install(&sweeper).expect("install"));
    db.foreign()
        .execute_batch("DROP TRIGGER cachesweeper_comments_delete")
        .expect("drop");
    let (table, problem) = untracked(db.log().open(&sweeper));
    assert_eq!(table, "comments");
    assert!(
        problem.contains("cachesweeper_comments_delete"),
        "{problem}"
    );

    // Installed for a model that touches nothing, opened for one that touches its article.
    drop(
        db.log()
            .database("lone")
            .install(&sweeper)
            .expect("install"),
    );
    let (table, problem) = untracked(db.log().open(&sweeper));
    assert_eq!(table, "comments");
    assert!(
        problem.contains("not the one this model needs"),
        "{problem}"
    );

    // A key column the table does not have: install refuses it too.
    let (table, problem) = untracked(db.log().database("tags").install(&sweeper));
    assert_eq!(table, "articles");
    assert!(problem.contains("no column `slug`"), "{problem}");

    // A table that does not exist.
    let missing = db.log();
    drop(missing.clone().install(&sweeper).expect("install"));
    db.foreign()
        .execute_batch("DROP TABLE comments")
        .expect("drop table");
    let (table, problem) = untracked(missing.open(&sweeper));
    assert_eq!(table, "comments");
    assert_eq!(problem, "no such table");
}

#[test]
fn every_model_that_declares_its_table_is_tracked_and_two_of_one_table_are_an_error() {
    // `db.log()` names no model: every test here relies on `Article` and `Comment` being
    // tracked as their derives registered them. Two models of one table, though, are refused.
    let db = Database::new();
    let error = db
        .log()
        .database("twice")
        .migration()
        .expect_err("two models of one table");
    let message = error.to_string();
    assert!(
        message.contains("table `notes` is declared by two models")
            && message.contains("changes::Note")
            && message.contains("changes::NoteOfArticle"),
        "{message}"
    );
    let _ = (
        Note { id: 1 },
        NoteOfArticle {
            id: 1,
            article_id: 1,
        },
        ArticleOnly { id: 1 },
    );
    let _ = (
        LoneComment { id: 1 },
        Tag {
            slug: String::new(),
        },
    );
}

#[test]
fn an_in_memory_database_is_refused_clearly() {
    let sweeper = Sweeper::embedded();
    let error = ChangeLog::builder(":memory:")
        .install(&sweeper)
        .expect_err("no WAL in memory");
    assert!(error.to_string().contains("WAL mode"), "{error}");
}

#[test]
fn changes_nobody_applied_are_applied_when_the_log_next_opens() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let db = Database::new();
    let c1 = comment(1, 1);
    let a1 = Article { id: 1 };
    {
        let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
        let log = db.log().install(&sweeper).expect("install");
        seed(&log.connect().expect("connect"));
        drop(log);
    }
    // Committed while no process follows the log, as when the only process died right after
    // its commit: the next process to open it applies it.
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let (c1_before, a1_before) = (version(&sweeper, &c1), version(&sweeper, &a1));
    db.foreign()
        .execute("UPDATE comments SET likes = likes + 1 WHERE id = 1", [])
        .expect("write");
    let log = db.log().poll_interval(NEVER).open(&sweeper).expect("open");
    assert_ne!(version(&sweeper, &c1), c1_before);
    assert_ne!(version(&sweeper, &a1), a1_before);
    assert!(log.applied() >= 2);
}

#[test]
fn a_bulk_change_is_not_applied_again_by_the_next_process_to_open_the_log() {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(NEVER)
        .install(&sweeper)
        .expect("install");
    let mut conn = log.connect().expect("connect");
    let tx = conn.transaction().expect("begin");
    tx.execute("INSERT INTO articles (id) VALUES (1)", [])
        .expect("article");
    for id in 1..=150 {
        tx.execute("INSERT INTO comments (id, article_id) VALUES (?1, 1)", [id])
            .expect("comment");
    }
    tx.commit().expect("commit");
    assert_eq!(
        log.applied(),
        301,
        "the comments, their article, and the article"
    );
    // The process that committed it could be killed now: the next to open the log starts after
    // it (its fragments would otherwise all miss once more), while a small change since...
    conn.execute("UPDATE comments SET likes = 1 WHERE id = 1", [])
        .expect("like");
    let next = db.log().poll_interval(NEVER).open(&sweeper).expect("open");
    // ...is applied again (2 rows: the comment and its article), as a change that might not
    // have reached the cache.
    assert!(next.applied() <= 2, "applied again: {}", next.applied());
}

#[test]
fn applied_rows_are_pruned_after_the_retention() {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(NEVER)
        .retention(Duration::ZERO)
        .install(&sweeper)
        .expect("install");
    let conn = log.connect().expect("connect");
    seed(&conn);
    let logged = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM cachesweeper_changes", [], |row| {
            row.get(0)
        })
        .expect("count")
    };
    // Two bulk changes (each recorded as it is applied): the second record prunes what the
    // first one covered, and only that.
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO comments (id, article_id) SELECT i, 1 FROM n",
        [],
    )
    .expect("comments");
    conn.execute("UPDATE comments SET likes = likes + 1", [])
        .expect("likes");
    let remaining = logged(&conn);
    assert!(
        remaining > 0 && remaining < log.applied() as i64,
        "{remaining} of {}",
        log.applied()
    );
}

#[test]
fn a_writer_killed_right_after_its_commit_loses_no_invalidation() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let sqlite3 = std::env::var("SQLITE3").unwrap_or_else(|_| "sqlite3".to_owned());
    if std::process::Command::new(&sqlite3)
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "sqlite3 is not installed");
        return;
    }
    let db = Database::new();
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let log = db.log().install(&sweeper).expect("install");
    seed(&log.connect().expect("connect"));
    let (c1, c2, a1) = (comment(1, 1), comment(2, 1), Article { id: 1 });
    let before = [&c1, &c2].map(|c| version(&sweeper, c));
    let article_before = version(&sweeper, &a1);

    // sqlite3 commits a statement run from a shell, then is killed with SIGKILL before it
    // could do anything else: another process (this one's follower) applies the change.
    let status = std::process::Command::new(&sqlite3)
        .arg(db.path())
        .arg("UPDATE comments SET likes = likes + 1 WHERE article_id = 1")
        .arg(".system kill -KILL $PPID")
        .status()
        .expect("run sqlite3");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9), "sqlite3 was killed: {status:?}");
    changed(&sweeper, &c1, &before[0]);
    changed(&sweeper, &c2, &before[1]);
    changed(&sweeper, &a1, &article_before);

    // And a DELETE from a shell.
    let before = version(&sweeper, &c1);
    let output = std::process::Command::new(&sqlite3)
        .arg(db.path())
        .arg("DELETE FROM comments WHERE id = 1")
        .output()
        .expect("run sqlite3");
    assert!(output.status.success(), "{output:?}");
    changed(&sweeper, &c1, &before);
}

#[test]
fn a_bulk_update_of_10000_comments_invalidates_them_all_in_a_few_round_trips() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let db = Database::new();
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let log = db
        .log()
        .poll_interval(NEVER)
        .install(&sweeper)
        .expect("install");
    let mut conn = log.connect().expect("connect");
    const ARTICLES: i64 = 10;
    const COMMENTS: i64 = 10_000;
    let tx = conn.transaction().expect("begin");
    for article in 1..=ARTICLES {
        tx.execute("INSERT INTO articles (id) VALUES (?1)", [article])
            .expect("article");
    }
    for id in 1..=COMMENTS {
        tx.execute(
            "INSERT INTO comments (id, article_id) VALUES (?1, ?2)",
            [id, 1 + id % ARTICLES],
        )
        .expect("comment");
    }
    tx.commit().expect("commit");

    let comments: Vec<Comment> = (1..=COMMENTS)
        .map(|id| comment(id, 1 + id % ARTICLES))
        .collect();
    let articles: Vec<Article> = (1..=ARTICLES).map(|id| Article { id }).collect();
    let before: Vec<Version> = comments.iter().map(|c| version(&sweeper, c)).collect();
    let articles_before: Vec<Version> = articles.iter().map(|a| version(&sweeper, a)).collect();

    let stats = sweeper.stats();
    let changed_rows = conn
        .execute("UPDATE comments SET likes = likes + 1", [])
        .expect("bulk update");
    let raised = sweeper.stats() - stats;
    assert_eq!(changed_rows, COMMENTS as usize);
    println!(
        "bulk update of {COMMENTS} comments on {ARTICLES} articles: {} cache round trips",
        raised.round_trips
    );
    // 10,010 counters in batches of 1,000: eleven raises of two round trips each (the raise,
    // and the confirmation of counters it had to create, which these had not: all were read).
    assert!(raised.round_trips <= 22, "{raised:?}");
    for (comment, before) in comments.iter().zip(&before) {
        assert_ne!(
            &version(&sweeper, comment),
            before,
            "comment {}",
            comment.id
        );
    }
    for (article, before) in articles.iter().zip(&articles_before) {
        assert_ne!(
            &version(&sweeper, article),
            before,
            "article {}",
            article.id
        );
    }
}

/// A sweeper on a cache that [`Forgetful::set_down`] makes unreachable.
fn flaky_sweeper() -> (Sweeper, Arc<Forgetful>) {
    let cache = Forgetful::new(Arc::new(Embedded::new(64 << 20)));
    let sweeper = Sweeper::builder()
        .backend(Arc::clone(&cache))
        .l1(0)
        .build()
        .expect("sweeper");
    (sweeper, cache)
}

#[test]
fn a_replaced_row_is_logged_with_its_parent() {
    let Setup {
        db,
        sweeper,
        log,
        conn,
    } = seeded(NEVER);
    conn.execute("UPDATE comments SET slug = 'c' WHERE id = 3", [])
        .expect("slug");
    let a1 = Article { id: 1 };
    let c3 = comment(3, 1);

    // By a foreign writer (no recursive triggers): comment 1 moves from article 1 to article 2
    // through a REPLACE by key, which deletes the old row without a delete trigger.
    let a1_before = version(&sweeper, &a1);
    db.foreign()
        .execute(
            "INSERT OR REPLACE INTO comments (id, article_id) VALUES (1, 2)",
            [],
        )
        .expect("replace");
    log.catch_up().expect("catch up");
    assert_ne!(
        version(&sweeper, &a1),
        a1_before,
        "the article comment 1 left"
    );

    // Through the log's connection (recursive triggers on): a new comment takes comment 3's
    // unique slug, and REPLACE deletes comment 3.
    let (c3_before, a1_before) = (version(&sweeper, &c3), version(&sweeper, &a1));
    conn.execute(
        "INSERT OR REPLACE INTO comments (id, article_id, slug) VALUES (9, 2, 'c')",
        [],
    )
    .expect("replace by a unique column");
    assert_ne!(version(&sweeper, &c3), c3_before, "the replaced comment");
    assert_ne!(version(&sweeper, &a1), a1_before, "its article");
}

#[test]
fn a_value_that_is_not_text_neither_stops_the_log_nor_is_lost() {
    let Setup {
        db,
        sweeper,
        log,
        conn,
    } = seeded(NEVER);
    // A script writes a blob into a parent column.
    db.foreign()
        .execute("UPDATE comments SET article_id = x'01' WHERE id = 4", [])
        .expect("blob write");
    assert_eq!(
        log.catch_up().expect("catch up"),
        3,
        "comment 4, article 2, article 01"
    );
    // Writes after it are applied, and the log opens.
    let (c1, a1) = (comment(1, 1), Article { id: 1 });
    let (c1_before, a1_before) = (version(&sweeper, &c1), version(&sweeper, &a1));
    conn.execute("UPDATE comments SET likes = likes + 1 WHERE id = 1", [])
        .expect("like");
    assert_ne!(version(&sweeper, &c1), c1_before);
    assert_ne!(version(&sweeper, &a1), a1_before);
    db.log().poll_interval(NEVER).open(&sweeper).expect("open");
}

#[test]
fn a_replaced_wal_hook_is_restored_before_the_next_statement() {
    let Setup {
        db: _db,
        sweeper,
        log: _log,
        conn,
    } = seeded(NEVER);
    // A common tuning pragma, which replaces the connection's WAL hook with SQLite's own.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;")
        .expect("pragma");
    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    conn.execute("UPDATE comments SET likes = likes + 1 WHERE id = 1", [])
        .expect("like");
    assert_ne!(version(&sweeper, &c1), before);
}

#[test]
fn writes_acknowledged_during_an_outage_are_not_read_old_once_the_cache_is_back() {
    let db = Database::new();
    let (sweeper, cache) = flaky_sweeper();
    let log = db
        .log()
        .poll_interval(NEVER)
        .install(&sweeper)
        .expect("install");
    let mut conn = log.connect().expect("connect");
    let tx = conn.transaction().expect("begin");
    tx.execute("INSERT INTO articles (id) VALUES (1), (2)", [])
        .expect("articles");
    // More comments than one read of the log takes.
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10001)
         INSERT INTO comments (id, article_id) SELECT i, 1 FROM n",
        [],
    )
    .expect("comments");
    tx.execute(
        "INSERT INTO comments (id, article_id) VALUES (20000, 2)",
        [],
    )
    .expect("comment");
    tx.commit().expect("commit");
    let last = comment(20000, 2);
    let before = version(&sweeper, &last);

    cache.set_down(true);
    conn.execute(
        "UPDATE comments SET likes = likes + 1 WHERE id <= 10001",
        [],
    )
    .expect("bulk");
    conn.execute("UPDATE comments SET likes = likes + 1 WHERE id = 20000", [])
        .expect("the acknowledged write");
    cache.set_down(false);
    // Read as a render would, at once: either still pending here, or raised.
    match sweeper.version(&last) {
        Ok(version) => assert_ne!(version, before, "read as before the write"),
        Err(error) => assert!(
            matches!(error, Error::InvalidationPending { .. }),
            "{error:?}"
        ),
    }
}

#[test]
fn the_log_opens_with_the_cache_down_and_a_backlog_and_applies_it_later() {
    let db = Database::new();
    let (sweeper, cache) = flaky_sweeper();
    drop(db.log().install(&sweeper).expect("install"));
    seed(&db.foreign());
    cache.set_down(true);
    let log = db.log().poll_interval(NEVER).open(&sweeper).expect("open");
    assert_eq!(
        log.applied(),
        10,
        "two articles, four comments and their articles: to retry"
    );
    assert!(matches!(
        sweeper.version(&comment(1, 1)),
        Err(Error::InvalidationPending { .. })
    ));
    cache.set_down(false);
    sweeper
        .flush(Duration::from_secs(10))
        .expect("the retry lands once the cache is back");
}

#[test]
fn the_follower_runs_while_a_connection_does_though_the_log_is_dropped() {
    let db = Database::new();
    let sweeper = Sweeper::embedded();
    let conn = db
        .log()
        .install(&sweeper)
        .expect("install")
        .connect()
        .expect("connect");
    seed(&conn);
    let c4 = comment(4, 2);
    let before = version(&sweeper, &c4);
    db.foreign()
        .execute("UPDATE comments SET likes = likes + 1 WHERE id = 4", [])
        .expect("write");
    changed(&sweeper, &c4, &before);
}
