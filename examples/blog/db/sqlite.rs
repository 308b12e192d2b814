//! The blog on SQLite: its connection pool, schema and queries. Each pooled connection applies
//! its own commits to the cache before they return (the change log's WAL hook), and the log's
//! follower applies everyone else's (another blog process, `sqlite3` in a shell) within its
//! poll interval.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cachesweeper::Sweeper;
use cachesweeper::changes::sqlite::{self, ChangeLog};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{Error, OwnChange, Vote};
use crate::models::{Article, ArticleSummary, Comment};
use crate::seed::SeedArticle;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS articles (
        id         INTEGER PRIMARY KEY,
        title      TEXT NOT NULL,
        body       TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS comments (
        id         INTEGER PRIMARY KEY,
        article_id INTEGER NOT NULL REFERENCES articles(id),
        author     TEXT NOT NULL,
        body       TEXT NOT NULL,
        likes      INTEGER NOT NULL DEFAULT 0,
        dislikes   INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS comments_by_article ON comments(article_id, id);
";

/// How many connections (each on a thread of its own) the pool holds. SQLite in WAL mode
/// reads concurrently and writes one at a time; on two cores four cover a reader blocked on
/// the disk. A fixed number of threads also bounds memory: on tokio's blocking pool SQLite
/// calls grew the process to dozens of threads, each keeping allocator memory of its own.
pub const POOL_SIZE: usize = 4;

/// How long a statement waits for another connection's lock (another blog process on the same
/// file) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection: a `rusqlite::Connection` (it dereferences to one) whose commits the
/// change log applies before they return.
pub type PooledConnection = sqlite::Connection;

/// Work for a pooled connection.
type Job = Box<dyn FnOnce(&mut PooledConnection) + Send>;

/// A bounded pool of connections to the blog's database file, each owned by a thread of its
/// own that runs the jobs sent to the pool, one at a time.
///
/// Written here rather than taken from r2d2 or deadpool: those hand a connection to the
/// caller's thread, and the point is that SQLite runs on these threads and no others.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    /// Kept for the life of the pool: its follower applies other processes' changes.
    _log: Arc<ChangeLog>,
}

impl Pool {
    /// Opens the database file at `path` (created with the schema if new), installs the change
    /// log's triggers on `articles` and `comments`, and starts [`POOL_SIZE`] connections.
    ///
    /// A file may be shared by several blog processes (as a deployment behind a load balancer
    /// runs them): it is in WAL mode, so readers never block the writer nor the writer the
    /// readers, and every connection waits up to [`BUSY_TIMEOUT`] for a lock another process
    /// holds rather than failing at once.
    pub fn open(path: &Path, sweeper: &Sweeper) -> Result<Pool, Error> {
        {
            let conn = Connection::open(path)?;
            // First, so that switching to WAL also waits for a process that holds the file.
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch(SCHEMA)?;
        }
        // Every model that declares its table: `Article` and `Comment` (models.rs).
        let log = ChangeLog::builder(path).install(sweeper)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..POOL_SIZE {
            let mut conn = log.connect()?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch("PRAGMA foreign_keys = ON;")?;
            count_statements(&conn);
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("blog-db-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(mpsc::RecvError) => break,
                        }
                    }
                })?;
        }
        Ok(Pool {
            jobs,
            _log: Arc::new(log),
        })
    }

    /// Runs `work` on a pooled connection and awaits its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PooledConnection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(work, answer);
        Ok(answered
            .await
            .expect("a pooled connection's thread ended")?)
    }

    fn send<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PooledConnection) -> T + Send + 'static,
        answer: tokio::sync::oneshot::Sender<T>,
    ) {
        let job: Job = Box::new(move |conn| {
            // A caller that went away no longer wants the answer.
            let _ = answer.send(work(conn));
        });
        self.jobs
            .send(job)
            .expect("the pool's threads end only with the pool");
    }
}

/// Where the blog keeps its database when no `--db` is given: a file of this process in the
/// temporary directory (the change log needs a file: an in-memory database has no WAL),
/// removed at exit by its `Drop`.
pub struct TempDb(PathBuf);

impl TempDb {
    /// A new file name for this process, after removing the files of blog processes that
    /// died without removing theirs.
    pub fn new() -> TempDb {
        let dir = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|name| name.strip_prefix(TEMP_PREFIX))
                    .and_then(|rest| rest.split('.').next())
                else {
                    continue;
                };
                if cfg!(target_os = "linux") && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        TempDb(dir.join(format!("{TEMP_PREFIX}{}.sqlite", std::process::id())))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

const TEMP_PREFIX: &str = "cachesweeper-blog-";

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Counts every statement `conn` runs from now on (SQLite's trace hook, once per statement
/// when it finishes), for `/stats`.
fn count_statements(conn: &Connection) {
    fn counted(_event: rusqlite::trace::TraceEvent<'_>) {
        super::count_statements(1);
    }
    conn.trace_v2(
        rusqlite::trace::TraceEventCodes::SQLITE_TRACE_PROFILE,
        Some(counted),
    );
}

/// Seeds the database with `content` if it has no article yet, in one `BEGIN IMMEDIATE`
/// transaction: of two processes starting on a new file, the second finds it seeded.
pub fn seed_if_empty(
    conn: &mut PooledConnection,
    content: &[SeedArticle],
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM articles)", [], |row| {
        row.get(0)
    })?;
    if empty {
        for article in content {
            let id = insert_article(&tx, &article.title, &article.body, article.updated_at)?;
            for comment in &article.comments {
                insert_comment(&tx, id, comment)?;
            }
        }
    }
    tx.commit()?;
    Ok(empty)
}

const ARTICLE_COLUMNS: &str = "id, title, body, updated_at";
const COMMENT_COLUMNS: &str = "id, article_id, author, body, likes, dislikes, created_at";

/// Every article with its number of comments, most recently updated first.
pub fn article_summaries(conn: &Connection) -> rusqlite::Result<Vec<ArticleSummary>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ARTICLE_COLUMNS},
                (SELECT COUNT(*) FROM comments WHERE comments.article_id = articles.id)
         FROM articles ORDER BY updated_at DESC, id DESC"
    ))?;
    statement
        .query_map([], |row| {
            Ok(ArticleSummary {
                article: article_from(row)?,
                comments: row.get(4)?,
            })
        })?
        .collect()
}

/// The article with this id, if there is one.
pub fn article(conn: &Connection, id: i64) -> rusqlite::Result<Option<Article>> {
    conn.prepare_cached(&format!(
        "SELECT {ARTICLE_COLUMNS} FROM articles WHERE id = ?1"
    ))?
    .query_row([id], article_from)
    .optional()
}

/// The comments of an article, oldest first.
pub fn comments_of(conn: &Connection, article_id: i64) -> rusqlite::Result<Vec<Comment>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments WHERE article_id = ?1 ORDER BY id"
    ))?;
    statement.query_map([article_id], comment_from)?.collect()
}

/// Counts a vote on a comment of an article, atomically in SQL, and returns the comment as it
/// now is; `None` if there is no such comment on that article.
///
/// The vote is committed, and the comment and its article invalidated (by the change log's
/// hook on this connection), when this returns `Ok`. The statement runs in an explicit `BEGIN
/// IMMEDIATE` transaction whose commit is checked (with an implicit one, a failed commit at
/// statement reset would be lost).
pub fn vote(
    conn: &Connection,
    article_id: i64,
    comment_id: i64,
    vote: Vote,
) -> rusqlite::Result<Option<Comment>> {
    // Two fixed statements rather than a column name formatted in: nothing from the request
    // ever becomes SQL text.
    let sql = match vote {
        Vote::Like => "UPDATE comments SET likes = likes + 1",
        Vote::Dislike => "UPDATE comments SET dislikes = dislikes + 1",
    };
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let comment = tx
        .prepare_cached(&format!(
            "{sql} WHERE id = ?1 AND article_id = ?2 RETURNING {COMMENT_COLUMNS}"
        ))?
        .query_row([comment_id, article_id], comment_from)
        .optional()?;
    tx.commit()?;
    Ok(comment)
}

/// See `Db::change_own_comment`; in a transaction of its own, like [`vote`].
pub fn change_own_comment(
    conn: &Connection,
    article_id: i64,
    comment_id: i64,
    author: &str,
    change: &OwnChange,
) -> rusqlite::Result<Option<Comment>> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let comment = {
        let mut statement = tx.prepare_cached(&change.sql(COMMENT_COLUMNS, '?'))?;
        match change {
            OwnChange::Edit(body) => {
                statement.query_row(params![comment_id, article_id, author, body], comment_from)
            }
            OwnChange::Delete => {
                statement.query_row(params![comment_id, article_id, author], comment_from)
            }
        }
        .optional()?
    };
    tx.commit()?;
    Ok(comment)
}

/// Stores a new comment (already validated) and returns it, committed and its article
/// invalidated.
///
/// In a transaction of its own, like [`vote`]: in autocommit mode, an `INSERT … RETURNING`
/// read with `query_row` commits only when its statement is reset, where a failed commit goes
/// unreported and SQLite calls no WAL hook (so the change log would apply it only with the
/// follower's lag, not before this returns).
pub fn add_comment(
    conn: &Connection,
    article_id: i64,
    author: &str,
    body: &str,
    created_at: DateTime<Utc>,
) -> rusqlite::Result<Comment> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let comment = tx
        .prepare_cached(&format!(
            "INSERT INTO comments (article_id, author, body, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING {COMMENT_COLUMNS}"
        ))?
        .query_row(
            params![article_id, author, body, time_to_sql(created_at)],
            comment_from,
        )?;
    tx.commit()?;
    Ok(comment)
}

/// Stores a seeded article.
fn insert_article(
    conn: &Connection,
    title: &str,
    body: &str,
    updated_at: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO articles (title, body, updated_at) VALUES (?1, ?2, ?3)")?
        .execute(params![title, body, time_to_sql(updated_at)])?;
    Ok(conn.last_insert_rowid())
}

/// Stores a seeded comment of article `article_id`, votes included.
fn insert_comment(conn: &Connection, article_id: i64, comment: &Comment) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO comments (article_id, author, body, likes, dislikes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        article_id,
        comment.author,
        comment.body,
        comment.likes,
        comment.dislikes,
        time_to_sql(comment.created_at),
    ])?;
    Ok(())
}

fn article_from(row: &Row<'_>) -> rusqlite::Result<Article> {
    Ok(Article {
        id: row.get(0)?,
        title: row.get(1)?,
        body: row.get(2)?,
        updated_at: time_from_sql(row, 3)?,
    })
}

fn comment_from(row: &Row<'_>) -> rusqlite::Result<Comment> {
    Ok(Comment {
        id: row.get(0)?,
        article_id: row.get(1)?,
        author: row.get(2)?,
        body: row.get(3)?,
        likes: row.get(4)?,
        dislikes: row.get(5)?,
        created_at: time_from_sql(row, 6)?,
    })
}

/// Times are stored as RFC 3339 text in UTC with a fixed nine-digit fraction: readable in the
/// `sqlite3` shell, and text order is time order.
fn time_to_sql(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn time_from_sql(row: &Row<'_>, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                column,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })
}
