//! The database as the source of invalidations (PostgreSQL, a real server started for each
//! test): statement-level triggers log each change in the writing transaction, the writing
//! process applies its own commits before its write returns, and every process's follower
//! applies everyone else's (another client, `psql`, a process killed after its commit) when
//! PostgreSQL notifies it, through a restart of the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use cachesweeper::backend::Embedded;
use cachesweeper::changes::postgres::{ChangeLog, ChangeLogBuilder};
use cachesweeper::{Error, Sweepable, Sweeper, Version};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::postgres::PostgresProcess;
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

/// The same table as `Comment`, but a model that touches nothing: its trigger function
/// differs.
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

/// A table whose name needs quoting, keyed by text.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(name = "changes::Odd", table = "Odd \"Table\" ü", database = "odd")]
struct Odd {
    #[sweeper(key)]
    name: String,
    #[sweeper(touches = Article)]
    article_id: i64,
}

/// A table whose name is as long as PostgreSQL allows (63 bytes).
#[derive(Debug, Clone, Sweepable)]
#[sweeper(
    name = "changes::Long",
    table = "subscription_billing_adjustment_line_items_by_customer_account",
    database = "long"
)]
struct Long {
    id: i64,
}

const SCHEMA: &str = "
    CREATE TABLE articles (id bigint PRIMARY KEY, title text NOT NULL DEFAULT '');
    CREATE TABLE comments (
        id bigint PRIMARY KEY,
        article_id bigint NOT NULL,
        likes int NOT NULL DEFAULT 0
    );
";

/// Article 1 with comments 1..=3, article 2 with comment 4.
const SEED: &str = "
    INSERT INTO articles (id) VALUES (1), (2);
    INSERT INTO comments (id, article_id) VALUES (1, 1), (2, 1), (3, 1), (4, 2);
";

/// No follower to speak of: anything applied was applied by a commit helper or at open.
const NEVER: Duration = Duration::from_secs(3_600);

/// A server of this test with the schema in database `blog`.
struct Database {
    server: PostgresProcess,
}

impl Database {
    fn new() -> Option<Database> {
        let server = PostgresProcess::start()?;
        server.create_database("blog");
        server.psql("blog", SCHEMA);
        Some(Database { server })
    }

    fn url(&self) -> String {
        self.server.url("blog")
    }

    /// The log of every model of the default database: `Article` and `Comment`.
    fn log(&self) -> ChangeLogBuilder {
        ChangeLog::builder(&self.url())
    }

    /// A client that is not the log's: what another program writes through.
    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    }

    fn psql(&self, sql: &str) -> String {
        self.server.psql("blog", sql)
    }
}

fn comment(id: i64, article_id: i64) -> Comment {
    Comment { id, article_id }
}

fn version<R: Sweepable>(sweeper: &Sweeper, record: &R) -> Version {
    sweeper.version(record).expect("version")
}

/// Waits until `record`'s version is no longer `before`, for at most 15 s (never: a lost
/// invalidation); returns how long it took.
async fn changed<R: Sweepable>(sweeper: &Sweeper, record: &R, before: &Version) -> Duration {
    let start = Instant::now();
    while version(sweeper, record) == *before {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the change was never applied"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    start.elapsed()
}

/// A seeded database with the log installed on the embedded cache, its follower polling every
/// `poll` (and woken by notifications).
async fn seeded(poll: Duration) -> Option<(Database, Sweeper, ChangeLog)> {
    let db = Database::new()?;
    db.psql(SEED);
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(poll)
        .install(&sweeper)
        .await
        .expect("install");
    Some((db, sweeper, log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_through_the_log_invalidates_the_record_and_its_parents_before_it_returns() {
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    let mut client = db.client().await;
    let (c1, c2, c4) = (comment(1, 1), comment(2, 1), comment(4, 2));
    let (a1, a2) = (Article { id: 1 }, Article { id: 2 });
    let before = [&c1, &c2, &c4].map(|c| version(&sweeper, c));
    let articles = [&a1, &a2].map(|a| version(&sweeper, a));

    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE comments SET likes = likes + 1 WHERE id = 1", &[])
        .await
        .expect("like");
    log.commit(tx).await.expect("commit");
    assert_ne!(version(&sweeper, &c1), before[0], "the liked comment");
    assert_ne!(version(&sweeper, &a1), articles[0], "its article");
    assert_eq!(version(&sweeper, &c2), before[1], "another comment");
    assert_eq!(version(&sweeper, &a2), articles[1], "another article");

    // A comment moved to another article invalidates both articles.
    let articles = [&a1, &a2].map(|a| version(&sweeper, a));
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE comments SET article_id = 2 WHERE id = 2", &[])
        .await
        .expect("move");
    log.commit(tx).await.expect("commit");
    assert_ne!(version(&sweeper, &a1), articles[0], "the old article");
    assert_ne!(version(&sweeper, &a2), articles[1], "the new article");

    // Any client's autocommit statement, then `catch_up`: a delete invalidates the deleted
    // record and its parent. (The follower, woken by the commit's notification, may have
    // applied it first: `catch_up` returns once it is applied either way.)
    let (c4_before, a2_before) = (version(&sweeper, &c4), version(&sweeper, &a2));
    let applied = log.applied();
    client
        .execute("DELETE FROM comments WHERE id = 4", &[])
        .await
        .expect("delete");
    log.catch_up().await.expect("catch up");
    assert_eq!(log.applied() - applied, 2);
    assert_ne!(version(&sweeper, &c4), c4_before);
    assert_ne!(version(&sweeper, &a2), a2_before);

    // TRUNCATE removes rows without a row to read afterwards: the trigger logs them before.
    let before = [&c1, &c2, &c4].map(|c| version(&sweeper, c));
    let applied = log.applied();
    client
        .batch_execute("TRUNCATE comments")
        .await
        .expect("truncate");
    log.catch_up().await.expect("catch up");
    assert_eq!(log.applied() - applied, 5, "3 comments, 2 articles");
    assert_ne!(version(&sweeper, &c1), before[0]);
    assert_ne!(version(&sweeper, &c2), before[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_or_savepoint_raises_nothing() {
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    let mut client = db.client().await;
    let (c1, c2) = (comment(1, 1), comment(2, 1));
    let before = version(&sweeper, &c1);
    let (stats, applied) = (sweeper.stats(), log.applied());

    let tx = client.transaction().await.expect("begin");
    tx.execute(
        "UPDATE comments SET likes = likes + 1 WHERE article_id = 1",
        &[],
    )
    .await
    .expect("like");
    tx.rollback().await.expect("rollback");
    assert_eq!(log.catch_up().await.expect("catch up"), 0);
    let raised = sweeper.stats() - stats;
    assert_eq!(raised.invalidations, 0, "no invalidation");
    assert_eq!(raised.round_trips, 0, "no call to the cache");
    assert_eq!(log.applied(), applied, "no log row applied");
    assert_eq!(version(&sweeper, &c1), before);

    // A savepoint rolled back inside a committed transaction: only what stayed is applied.
    let c2_before = version(&sweeper, &c2);
    let mut tx = client.transaction().await.expect("begin");
    {
        let savepoint = tx.savepoint("vote").await.expect("savepoint");
        savepoint
            .execute("UPDATE comments SET likes = 9 WHERE id = 1", &[])
            .await
            .expect("like");
        savepoint.rollback().await.expect("rollback to savepoint");
    }
    tx.execute("UPDATE comments SET likes = 1 WHERE id = 2", &[])
        .await
        .expect("like");
    log.commit(tx).await.expect("commit");
    assert_eq!(log.applied(), applied + 2, "comment 2 and its article");
    assert_eq!(
        version(&sweeper, &c1),
        before,
        "rolled back to the savepoint"
    );
    assert_ne!(version(&sweeper, &c2), c2_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_after_a_later_one_is_not_skipped() {
    // Log ids are taken at insert: the first transaction takes the lower ids and commits last.
    // A cursor by id would have passed them when the second one's rows were read.
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    let (mut first, mut second) = (db.client().await, db.client().await);
    let (c1, c3) = (comment(1, 1), comment(3, 1));
    let (c1_before, c3_before) = (version(&sweeper, &c1), version(&sweeper, &c3));
    let early = first.transaction().await.expect("begin");
    early
        .execute("UPDATE comments SET likes = 1 WHERE id = 1", &[])
        .await
        .expect("like");
    let late = second.transaction().await.expect("begin");
    late.execute("UPDATE comments SET likes = 1 WHERE id = 3", &[])
        .await
        .expect("like");
    log.commit(late).await.expect("commit");
    assert_ne!(version(&sweeper, &c3), c3_before);
    assert_eq!(version(&sweeper, &c1), c1_before, "not committed yet");
    log.commit(early).await.expect("commit");
    assert_ne!(version(&sweeper, &c1), c1_before, "committed last, applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_write_is_applied_by_the_follower_and_its_lag_is_measured() {
    let Some((db, sweeper, log)) = seeded(Duration::from_millis(500)).await else {
        return;
    };
    let foreign = db.client().await;
    let (c1, a1) = (comment(1, 1), Article { id: 1 });
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
        foreign.execute(sql, &[]).await.expect("write");
        let committed = Instant::now();
        changed(&sweeper, &c1, &record_before).await;
        changed(&sweeper, &a1, &article_before).await;
        lags.push(committed.elapsed());
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "foreign write lag (PostgreSQL, LISTEN/NOTIFY, {WRITES} writes): median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
    assert!(log.applied() >= 2 * WRITES as u64);

    // And from psql: an UPDATE of every comment of an article, and a DELETE.
    let (c2, c2_before, a1_before) = (
        comment(2, 1),
        version(&sweeper, &comment(2, 1)),
        version(&sweeper, &a1),
    );
    db.psql("UPDATE comments SET likes = likes + 1 WHERE article_id = 1");
    changed(&sweeper, &c2, &c2_before).await;
    changed(&sweeper, &a1, &a1_before).await;
    let c2_before = version(&sweeper, &c2);
    db.psql("DELETE FROM comments WHERE id = 2");
    changed(&sweeper, &c2, &c2_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_its_triggers_is_an_error_naming_it() {
    let Some(db) = Database::new() else {
        return;
    };
    let sweeper = Sweeper::embedded();
    let untracked = |result: cachesweeper::Result<ChangeLog>| match result {
        Err(Error::Untracked { table, problem }) => (table, problem),
        other => panic!("expected Untracked, got {other:?}"),
    };

    // Nothing installed at all.
    let (table, problem) = untracked(db.log().open(&sweeper).await);
    assert_eq!(table, "cachesweeper_changes");
    assert!(problem.contains("install"), "{problem}");

    // Installed by a migration (the SQL `migration` gives, run by psql), then one trigger
    // dropped by hand.
    db.psql(&db.log().migration().expect("migration"));
    drop(
        db.log()
            .open(&sweeper)
            .await
            .expect("open after the migration"),
    );
    db.psql("DROP TRIGGER cachesweeper_comments_delete ON comments");
    let error = db.log().open(&sweeper).await.expect_err("untracked");
    assert_eq!(
        error.to_string(),
        "table `comments` is not tracked by the change log: it has no trigger \
         `cachesweeper_comments_delete`, so its changes would not reach the cache: install it \
         (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)"
    );

    // A disabled trigger is no trigger.
    drop(db.log().install(&sweeper).await.expect("install"));
    db.psql("ALTER TABLE comments DISABLE TRIGGER cachesweeper_comments_update");
    let (table, problem) = untracked(db.log().open(&sweeper).await);
    assert_eq!(table, "comments");
    assert!(problem.contains("is disabled"), "{problem}");

    // Installed for a model that touches nothing, opened for one that touches its article.
    drop(
        db.log()
            .database("lone")
            .install(&sweeper)
            .await
            .expect("install"),
    );
    let (table, problem) = untracked(db.log().open(&sweeper).await);
    assert_eq!(table, "comments");
    assert!(
        problem.contains("not the one this model needs"),
        "{problem}"
    );

    // A key column the table does not have: install refuses it too.
    let (table, problem) = untracked(db.log().database("tags").install(&sweeper).await);
    assert_eq!(table, "articles");
    assert!(problem.contains("no column `slug`"), "{problem}");

    // A table that does not exist.
    drop(db.log().install(&sweeper).await.expect("install"));
    db.psql("DROP TABLE comments");
    let (table, problem) = untracked(db.log().open(&sweeper).await);
    assert_eq!(table, "comments");
    assert_eq!(problem, "no such table");
    let _ = (
        LoneComment { id: 1 },
        Tag {
            slug: String::new(),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_nobody_applied_are_applied_when_the_log_next_opens() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let (c1, a1) = (comment(1, 1), Article { id: 1 });
    drop(
        db.log()
            .install(&Sweeper::memcached(&memcached.url()).expect("sweeper"))
            .await
            .expect("install"),
    );
    // Committed while no process follows the log, as when the only process died right after
    // its commit: the next process to open it applies it.
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let (c1_before, a1_before) = (version(&sweeper, &c1), version(&sweeper, &a1));
    db.psql("UPDATE comments SET likes = likes + 1 WHERE id = 1");
    let log = db
        .log()
        .poll_interval(NEVER)
        .open(&sweeper)
        .await
        .expect("open");
    assert_ne!(version(&sweeper, &c1), c1_before);
    assert_ne!(version(&sweeper, &a1), a1_before);
    assert_eq!(log.applied(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_right_after_its_commit_loses_no_invalidation() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let _log = db.log().install(&sweeper).await.expect("install");
    let (c1, c2, a1) = (comment(1, 1), comment(2, 1), Article { id: 1 });
    let before = [&c1, &c2].map(|c| version(&sweeper, c));
    let article_before = version(&sweeper, &a1);

    // psql commits a statement, then is killed with SIGKILL before it could do anything else:
    // another process (this one's follower) applies the change.
    let status = db
        .server
        .psql_command("blog")
        .args([
            "-c",
            "UPDATE comments SET likes = likes + 1 WHERE article_id = 1",
            "-c",
            "\\! kill -KILL $PPID",
        ])
        .status()
        .expect("run psql");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9), "psql was killed: {status:?}");
    changed(&sweeper, &c1, &before[0]).await;
    changed(&sweeper, &c2, &before[1]).await;
    changed(&sweeper, &a1, &article_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_loses_no_invalidation() {
    let Some(mut db) = Database::new() else {
        return;
    };
    db.psql(
        "INSERT INTO articles (id) VALUES (1);
         INSERT INTO comments (id, article_id) SELECT i, 1 FROM generate_series(1, 300) AS i;",
    );
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(Duration::from_millis(100))
        .install(&sweeper)
        .await
        .expect("install");
    // Writes from another client, each acknowledged before the next: comment n is liked by the
    // n-th. The database restarts (a clean shutdown, then a crash) part way through; writes
    // that fail while it is down are made again.
    let url = db.url();
    let writes = 300;
    let mut acknowledged: Vec<(Comment, Version)> = Vec::new();
    let mut client: Option<tokio_postgres::Client> = None;
    let mut n = 1;
    while n <= writes {
        if n == 100 {
            db.server.restart();
        }
        if n == 200 {
            db.server.crash_restart();
        }
        let c = comment(n, 1);
        let before = version(&sweeper, &c);
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((new, connection)) => {
                    tokio::spawn(connection);
                    client = Some(new);
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let written = client
            .as_ref()
            .expect("connected")
            .execute("UPDATE comments SET likes = likes + 1 WHERE id = $1", &[&n])
            .await;
        if written.is_ok() {
            acknowledged.push((c, before));
            n += 1;
        }
    }
    for (comment, before) in &acknowledged {
        changed(&sweeper, comment, before).await;
    }
    // The log's own commits go on after the restarts too.
    let mut client = client.expect("connected");
    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE comments SET likes = 0 WHERE id = 1", &[])
        .await
        .expect("like");
    log.commit(tx).await.expect("commit");
    assert_ne!(version(&sweeper, &c1), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_update_of_10000_comments_invalidates_them_all_in_a_few_round_trips() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let Some(db) = Database::new() else {
        return;
    };
    const ARTICLES: i64 = 10;
    const COMMENTS: i64 = 10_000;
    db.psql(&format!(
        "INSERT INTO articles (id) SELECT i FROM generate_series(1, {ARTICLES}) AS i;
         INSERT INTO comments (id, article_id)
             SELECT i, 1 + i % {ARTICLES} FROM generate_series(1, {COMMENTS}) AS i;"
    ));
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    let log = db
        .log()
        .poll_interval(NEVER)
        .install(&sweeper)
        .await
        .expect("install");
    let comments: Vec<Comment> = (1..=COMMENTS)
        .map(|id| comment(id, 1 + id % ARTICLES))
        .collect();
    let articles: Vec<Article> = (1..=ARTICLES).map(|id| Article { id }).collect();
    let before: Vec<Version> = comments.iter().map(|c| version(&sweeper, c)).collect();
    let articles_before: Vec<Version> = articles.iter().map(|a| version(&sweeper, a)).collect();

    let mut client = db.client().await;
    let stats = sweeper.stats();
    let tx = client.transaction().await.expect("begin");
    let changed_rows = tx
        .execute("UPDATE comments SET likes = likes + 1", &[])
        .await
        .expect("bulk update");
    log.commit(tx).await.expect("commit");
    let raised = sweeper.stats() - stats;
    assert_eq!(changed_rows, COMMENTS as u64);
    println!(
        "bulk update of {COMMENTS} comments on {ARTICLES} articles (PostgreSQL): {} cache round trips",
        raised.round_trips
    );
    // 10,010 counters in batches of 1,000: eleven raises of at most two round trips each.
    assert!(raised.round_trips <= 22, "{raised:?}");
    let logged: i64 = db
        .psql("SELECT count(*) FROM cachesweeper_changes")
        .parse()
        .expect("count");
    assert_eq!(
        logged,
        COMMENTS + ARTICLES,
        "one statement, each record once"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_rows_are_pruned_after_the_retention_and_progress_is_kept() {
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(NEVER)
        .retention(Duration::ZERO)
        .install(&sweeper)
        .await
        .expect("install");
    let client = db.client().await;
    // Two bulk changes (each recorded as it is applied): the second record prunes what the
    // first one covered, and only that.
    client
        .batch_execute(
            "INSERT INTO comments (id, article_id) SELECT i, 1 FROM generate_series(10, 200) AS i",
        )
        .await
        .expect("comments");
    log.catch_up().await.expect("catch up");
    client
        .batch_execute("UPDATE comments SET likes = likes + 1")
        .await
        .expect("likes");
    log.catch_up().await.expect("catch up");
    let remaining: i64 = db
        .psql("SELECT count(*) FROM cachesweeper_changes")
        .parse()
        .expect("count");
    assert!(
        remaining > 0 && remaining < log.applied() as i64,
        "{remaining} of {}",
        log.applied()
    );
    // The next process starts where this one recorded: nothing to apply again.
    let next = db
        .log()
        .poll_interval(NEVER)
        .open(&sweeper)
        .await
        .expect("open");
    assert_eq!(next.applied(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_cache_outage_are_not_read_old_once_the_cache_is_back() {
    let Some((db, _, _)) = seeded(NEVER).await else {
        return;
    };
    let cache = Forgetful::new(Arc::new(Embedded::new(64 << 20)));
    let sweeper = Sweeper::builder()
        .backend(Arc::clone(&cache))
        .l1(0)
        .build()
        .expect("sweeper");
    let log = db
        .log()
        .poll_interval(NEVER)
        .open(&sweeper)
        .await
        .expect("open");
    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    cache.set_down(true);
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE comments SET likes = 5 WHERE id = 1", &[])
        .await
        .expect("like");
    // The commit stands though the cache is down; its raise is retried.
    log.commit(tx).await.expect("commit");
    cache.set_down(false);
    let start = Instant::now();
    while sweeper.version(&c1).ok().as_ref() == Some(&before) {
        assert!(start.elapsed() < Duration::from_secs(15), "never raised");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Adversarial probes.
// ---------------------------------------------------------------------------------------------

/// A transaction id, as a number.
async fn xid(client: &tokio_postgres::Client, sql: &str) -> u64 {
    let text: String = client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .await
        .expect("xid")
        .get(0);
    text.parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_reused_after_a_crash_is_not_taken_for_one_already_read() {
    // PostgreSQL hands out an id again after a crash if nothing durable was written by it (a
    // rolled-back transaction, say, whose abort record was still in the WAL buffers). The log
    // read a snapshot in which that id was finished: a committed change under the reused id
    // must not count as visible in it.
    let Some(mut db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    // Keep the WAL writer from flushing the abort record before the crash.
    db.psql("ALTER SYSTEM SET wal_writer_delay = '10s'");
    db.server.restart();
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(NEVER)
        .install(&sweeper)
        .await
        .expect("install");
    let client = db.client().await;
    // Records the progress (a synchronous commit: everything before it is flushed), so that the
    // next read within 250 ms does not.
    client
        .execute("UPDATE comments SET likes = 1 WHERE id = 4", &[])
        .await
        .expect("write");
    log.catch_up().await.expect("catch up");
    let burned = {
        let mut client = db.client().await;
        let tx = client.transaction().await.expect("begin");
        let id = xid(tx.client(), "pg_current_xact_id()").await;
        tx.rollback().await.expect("rollback");
        id
    };
    log.catch_up()
        .await
        .expect("catch up past the rolled-back id");
    db.server.crash_restart();

    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    let client = db.client().await;
    let next = xid(&client, "pg_snapshot_xmax(pg_current_snapshot())").await;
    println!("rolled-back id {burned}, next id after the crash {next}");
    client
        .execute("UPDATE comments SET likes = 2 WHERE id = 1", &[])
        .await
        .expect("write after the crash");
    let _ = log.catch_up().await;
    changed(&sweeper, &c1, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_applied_when_it_is_committed() {
    // Two-phase commit: a write to a tracked table can be prepared (PostgreSQL refuses to
    // prepare a transaction that sent a NOTIFY: it says so first), and is applied once
    // COMMIT PREPARED, even across a crash in between.
    let Some(mut db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    db.psql("ALTER SYSTEM SET max_prepared_transactions = 10");
    db.server.restart();
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .poll_interval(Duration::from_millis(100))
        .install(&sweeper)
        .await
        .expect("install");
    let (c1, c2) = (comment(1, 1), comment(2, 1));
    let (c1_before, c2_before) = (version(&sweeper, &c1), version(&sweeper, &c2));
    let client = db.client().await;
    client
        .batch_execute(
            "BEGIN; SET LOCAL cachesweeper.notify = off;
             UPDATE comments SET likes = 7 WHERE id = 1; PREPARE TRANSACTION 'one'",
        )
        .await
        .expect("prepare a write to a tracked table");
    client
        .batch_execute(
            "BEGIN; SET LOCAL cachesweeper.notify = off;
             UPDATE comments SET likes = 7 WHERE id = 2; PREPARE TRANSACTION 'two'",
        )
        .await
        .expect("prepare");
    log.catch_up().await.expect("catch up");
    assert_eq!(version(&sweeper, &c1), c1_before, "prepared, not committed");
    client
        .batch_execute("COMMIT PREPARED 'one'")
        .await
        .expect("commit prepared");
    log.catch_up().await.expect("catch up");
    assert_ne!(version(&sweeper, &c1), c1_before);
    // The other survives a crash, and is committed after it, from psql.
    db.server.crash_restart();
    db.psql("COMMIT PREPARED 'two'");
    changed(&sweeper, &c2, &c2_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_with_another_search_path_is_logged() {
    // The triggers run in the writer's session: one whose search_path does not name the log's
    // schema (a migration tool's, a SECURITY DEFINER function's `SET search_path = ''`) writes
    // all the same, and is applied.
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    db.psql("CREATE SCHEMA app");
    let client = db.client().await;
    client
        .batch_execute("SET search_path = app")
        .await
        .expect("search_path");
    let (c1, c2) = (comment(1, 1), comment(2, 1));
    let before = version(&sweeper, &c1);
    client
        .execute("UPDATE public.comments SET likes = 1 WHERE id = 1", &[])
        .await
        .expect("a write under another search_path");
    log.catch_up().await.expect("catch up");
    assert_ne!(version(&sweeper, &c1), before);
    let before = version(&sweeper, &c2);
    client
        .batch_execute("SET search_path = ''; TRUNCATE public.comments")
        .await
        .expect("a truncate under an empty search_path");
    log.catch_up().await.expect("catch up");
    assert_ne!(version(&sweeper, &c2), before);
    // A function installed without its search_path (by an earlier version) is outdated.
    db.psql("ALTER FUNCTION cachesweeper_log_comments() RESET search_path");
    match db.log().open(&sweeper).await {
        Err(Error::Untracked { table, problem }) => {
            assert_eq!(table, "comments");
            assert!(problem.contains("search_path"), "{problem}");
        }
        other => panic!("expected Untracked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_of_the_database_does_not_stall_a_large_read() {
    // `ALTER DATABASE … SET statement_timeout` applies to the log's connection too; its read
    // streams rows while it raises them in the cache, so a large backlog outlasts a short
    // timeout. It must still be applied.
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::memcached(&memcached.url()).expect("sweeper");
    drop(db.log().install(&sweeper).await.expect("install"));
    const COMMENTS: i64 = 100_000;
    db.psql(&format!(
        "INSERT INTO comments (id, article_id) SELECT i, 1 FROM generate_series(10, {COMMENTS}) AS i"
    ));
    db.psql("ALTER DATABASE blog SET statement_timeout = '20ms'");
    // A sample: asking memcached for 100,000 versions takes a minute.
    let comments: Vec<Comment> = (10..=COMMENTS)
        .filter(|id| id % 97 == 0 || *id == COMMENTS)
        .map(|id| comment(id, 1))
        .collect();
    let before: Vec<Version> = comments.iter().map(|c| version(&sweeper, c)).collect();
    db.psql("SET statement_timeout = 0; UPDATE comments SET likes = likes + 1");
    let log = db
        .log()
        .poll_interval(Duration::from_millis(100))
        .open(&sweeper)
        .await
        .expect("open");
    for (comment, before) in comments.iter().zip(&before).rev() {
        changed(&sweeper, comment, before).await;
    }
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_with_long_transactions_and_pruning_lose_nothing() {
    // Writers on clients of their own, each inserting comments no one else touches (so a
    // lost invalidation cannot hide behind another's), committing through the log, or
    // committing and catching up, or leaving it to the follower, or rolling back; long
    // transactions stay open across many of their commits; the log prunes as it goes, and a
    // second log (another process on the same cache) reads and records too.
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::embedded();
    let log = Arc::new(
        db.log()
            .poll_interval(Duration::from_millis(50))
            .retention(Duration::ZERO)
            .install(&sweeper)
            .await
            .expect("install"),
    );
    let other = db
        .log()
        .poll_interval(Duration::from_millis(70))
        .retention(Duration::from_millis(100))
        .open(&sweeper)
        .await
        .expect("open");
    const WRITERS: i64 = 6;
    const EACH: i64 = 80;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (mut client, sweeper, log) = (db.client().await, sweeper.clone(), Arc::clone(&log));
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_u64.wrapping_mul(writer as u64 + 1);
            let mut random = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
            for i in 0..EACH {
                let id = 1_000 + writer * 1_000 + i;
                let c = comment(id, 1 + id % 2);
                let before = version(&sweeper, &c);
                let tx = client.transaction().await.expect("begin");
                tx.execute(
                    "INSERT INTO comments (id, article_id) VALUES ($1, $2)",
                    &[&id, &(1 + id % 2)],
                )
                .await
                .expect("insert");
                tokio::time::sleep(Duration::from_millis(random(15))).await;
                match random(4) {
                    0 => {
                        log.commit(tx).await.expect("commit");
                        assert_ne!(version(&sweeper, &c), before, "comment {id} (commit)");
                    }
                    1 => {
                        tx.commit().await.expect("commit");
                        log.catch_up().await.expect("catch up");
                        assert_ne!(version(&sweeper, &c), before, "comment {id} (catch_up)");
                    }
                    2 => tx.commit().await.expect("commit"),
                    _ => {
                        tx.rollback().await.expect("rollback");
                        rolled_back.push((c, before));
                        continue;
                    }
                }
                committed.push((c, before));
            }
            (committed, rolled_back)
        }));
    }
    // Long transactions: each open across many of the writers' commits.
    let mut long = db.client().await;
    let long_task = {
        let sweeper = sweeper.clone();
        tokio::spawn(async move {
            let mut committed = Vec::new();
            for round in 0..6_i64 {
                let tx = long.transaction().await.expect("begin");
                for k in 0..5 {
                    let id = 900_000 + round * 10 + k;
                    let c = comment(id, 2);
                    committed.push((c.clone(), version(&sweeper, &c)));
                    tx.execute(
                        "INSERT INTO comments (id, article_id) VALUES ($1, 2)",
                        &[&id],
                    )
                    .await
                    .expect("insert");
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                tx.commit().await.expect("commit");
            }
            committed
        })
    };
    let mut committed = long_task.await.expect("long transactions");
    let mut rolled_back = Vec::new();
    for task in tasks {
        let (c, r) = task.await.expect("writer");
        committed.extend(c);
        rolled_back.extend(r);
    }
    for (c, before) in &committed {
        changed(&sweeper, c, before).await;
    }
    for (c, before) in &rolled_back {
        assert_eq!(
            &version(&sweeper, c),
            before,
            "rolled back: comment {}",
            c.id
        );
    }
    println!(
        "{} committed, {} rolled back; applied {} + {}",
        committed.len(),
        rolled_back.len(),
        log.applied(),
        other.applied()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_sql_changes_rows_is_logged() {
    // ON CONFLICT DO UPDATE, MERGE, COPY, cascades from a parent, an update of the key itself,
    // a NULL parent, a plpgsql exception block, and a table whose name needs quoting keyed by
    // text with quotes and non-ASCII characters.
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    let client = db.client().await;
    let v = |c: &Comment| version(&sweeper, c);
    let (a1, a2) = (Article { id: 1 }, Article { id: 2 });

    let (c1, a1_before) = (v(&comment(1, 1)), version(&sweeper, &a1));
    client
        .batch_execute(
            "INSERT INTO comments (id, article_id) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET likes = comments.likes + 1",
        )
        .await
        .expect("upsert");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(1, 1)), c1, "upsert");
    assert_ne!(version(&sweeper, &a1), a1_before, "upsert's parent");

    let (c2, c50) = (v(&comment(2, 1)), v(&comment(50, 2)));
    client
        .batch_execute(
            "MERGE INTO comments c USING (VALUES (2::bigint, 1::bigint), (50, 2)) AS s (id, article_id)
                 ON c.id = s.id
               WHEN MATCHED THEN UPDATE SET likes = c.likes + 1
               WHEN NOT MATCHED THEN INSERT (id, article_id) VALUES (s.id, s.article_id)",
        )
        .await
        .expect("merge");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(2, 1)), c2, "merge update");
    assert_ne!(v(&comment(50, 2)), c50, "merge insert");

    let c60 = v(&comment(60, 2));
    db.psql("COPY comments (id, article_id) FROM STDIN;\n60\t2\n\\.\n");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(60, 2)), c60, "copy");

    // The key column itself: the old key and the new.
    let (c3, c70) = (v(&comment(3, 1)), v(&comment(70, 1)));
    client
        .batch_execute("UPDATE comments SET id = 70 WHERE id = 3")
        .await
        .expect("rekey");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(3, 1)), c3, "old key");
    assert_ne!(v(&comment(70, 1)), c70, "new key");

    // A plpgsql exception block: the failed part rolls back, the rest commits.
    let (c4, c2) = (v(&comment(4, 2)), v(&comment(2, 1)));
    client
        .batch_execute(
            "DO $$ BEGIN
                 UPDATE comments SET likes = 100 WHERE id = 2;
                 BEGIN
                     UPDATE comments SET likes = 100 WHERE id = 4;
                     RAISE EXCEPTION 'undo';
                 EXCEPTION WHEN OTHERS THEN NULL;
                 END;
             END $$",
        )
        .await
        .expect("exception block");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(2, 1)), c2, "kept");
    assert_eq!(v(&comment(4, 2)), c4, "rolled back inside the block");

    // Cascades from a parent table, on delete and on update.
    db.psql(
        "ALTER TABLE comments ADD FOREIGN KEY (article_id) REFERENCES articles (id)
             ON DELETE CASCADE ON UPDATE CASCADE",
    );
    let (c4, a2_before) = (v(&comment(4, 2)), version(&sweeper, &a2));
    client
        .batch_execute("UPDATE articles SET id = 3 WHERE id = 2")
        .await
        .expect("cascade update");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(4, 2)), c4, "cascaded update");
    assert_ne!(version(&sweeper, &a2), a2_before, "the old parent");
    let c4 = v(&comment(4, 3));
    client
        .batch_execute("DELETE FROM articles WHERE id = 3")
        .await
        .expect("cascade delete");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(4, 3)), c4, "cascaded delete");

    // A NULL parent is skipped, the record is not.
    db.psql("ALTER TABLE comments ALTER article_id DROP NOT NULL");
    let c80 = v(&comment(80, 0));
    let applied = log.applied();
    client
        .batch_execute("INSERT INTO comments (id, article_id) VALUES (80, NULL)")
        .await
        .expect("null parent");
    log.catch_up().await.expect("catch up");
    assert_ne!(v(&comment(80, 0)), c80);
    assert_eq!(log.applied() - applied, 1);

    // Quoted names, text keys.
    db.psql("CREATE TABLE \"Odd \"\"Table\"\" ü\" (name text PRIMARY KEY, article_id bigint)");
    let odd_sweeper = Sweeper::embedded();
    let odd_log = db
        .log()
        .database("odd")
        .poll_interval(NEVER)
        .install(&odd_sweeper)
        .await
        .expect("install odd");
    let name = "it's \"ü\" \\ 🦀 %s";
    let odd = Odd {
        name: name.to_owned(),
        article_id: 1,
    };
    let (before, a1_before) = (
        version(&odd_sweeper, &odd),
        version(&odd_sweeper, &Article { id: 1 }),
    );
    client
        .execute(
            "INSERT INTO \"Odd \"\"Table\"\" ü\" (name, article_id) VALUES ($1, 1)",
            &[&name],
        )
        .await
        .expect("odd insert");
    odd_log.catch_up().await.expect("catch up");
    assert_ne!(version(&odd_sweeper, &odd), before, "text key");
    assert_ne!(version(&odd_sweeper, &Article { id: 1 }), a1_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_long_name_is_tracked() {
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(
        "CREATE TABLE subscription_billing_adjustment_line_items_by_customer_account (id bigint PRIMARY KEY)",
    );
    let sweeper = Sweeper::embedded();
    let log = db
        .log()
        .database("long")
        .poll_interval(NEVER)
        .install(&sweeper)
        .await
        .expect("install");
    let record = Long { id: 1 };
    let before = version(&sweeper, &record);
    db.psql(
        "INSERT INTO subscription_billing_adjustment_line_items_by_customer_account VALUES (1)",
    );
    log.catch_up().await.expect("catch up");
    assert_ne!(version(&sweeper, &record), before);
}

#[test]
fn a_current_thread_runtime_commits_and_follows() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Some((db, sweeper, log)) = seeded(Duration::from_millis(50)).await else {
            return;
        };
        let mut client = db.client().await;
        let c1 = comment(1, 1);
        let before = version(&sweeper, &c1);
        let tx = client.transaction().await.expect("begin");
        tx.execute("UPDATE comments SET likes = 3 WHERE id = 1", &[])
            .await
            .expect("like");
        log.commit(tx).await.expect("commit");
        assert_ne!(version(&sweeper, &c1), before);
        let before = version(&sweeper, &c1);
        db.psql("UPDATE comments SET likes = 4 WHERE id = 1");
        changed(&sweeper, &c1, &before).await;
    });
    drop(runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_right_after_the_logs_connection_is_killed_is_applied_before_it_returns() {
    let Some((db, sweeper, log)) = seeded(NEVER).await else {
        return;
    };
    let mut client = db.client().await;
    for round in 0..20 {
        // Kill the log's backend (the one listening), then commit at once.
        client
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE query LIKE '%cachesweeper_changes%' AND pid <> pg_backend_pid()
                    AND backend_type = 'client backend'",
            )
            .await
            .expect("terminate");
        let c1 = comment(1, 1);
        let before = version(&sweeper, &c1);
        let tx = client.transaction().await.expect("begin");
        tx.execute("UPDATE comments SET likes = $1 WHERE id = 1", &[&round])
            .await
            .expect("like");
        log.commit(tx).await.expect("commit");
        assert_ne!(version(&sweeper, &c1), before, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_installing_at_once_take_turns_and_a_dropped_log_leaves_no_connection() {
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::embedded();
    let installs: Vec<_> = (0..6)
        .map(|_| {
            let (builder, sweeper) = (
                db.log().poll_interval(Duration::from_millis(20)),
                sweeper.clone(),
            );
            tokio::spawn(async move { builder.install(&sweeper).await })
        })
        .collect();
    let mut logs = Vec::new();
    for install in installs {
        logs.push(install.await.expect("task").expect("install"));
    }
    let connections = || -> i64 {
        db.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'blog' AND pid <> pg_backend_pid()")
            .parse()
            .expect("count")
    };
    assert_eq!(connections(), 6);
    drop(logs);
    let start = Instant::now();
    while connections() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} connections left",
            connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_before_the_log_opens_and_committed_after_is_applied() {
    let Some(db) = Database::new() else {
        return;
    };
    db.psql(SEED);
    let sweeper = Sweeper::embedded();
    drop(db.log().install(&sweeper).await.expect("install"));
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE comments SET likes = 1 WHERE id = 1", &[])
        .await
        .expect("like");
    let c1 = comment(1, 1);
    let before = version(&sweeper, &c1);
    let log = db
        .log()
        .poll_interval(NEVER)
        .open(&sweeper)
        .await
        .expect("open");
    tokio::time::sleep(Duration::from_millis(600)).await; // a progress record in between
    log.commit(tx).await.expect("commit");
    assert_ne!(version(&sweeper, &c1), before);
}
