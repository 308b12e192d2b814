//! The blog's SQLite database: schema and every query the handlers run.
//!
//! All functions here block (SQLite does file I/O under a lock), so they are only ever called
//! from `spawn_blocking` (see `routes.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::models::{Article, ArticleSummary, Comment};

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

/// How long a statement waits for another connection's lock (another blog process on the same
/// file) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the database file at `path`, or a private in-memory database, with the schema in place.
///
/// A file may be shared by several blog processes (as a deployment behind a load balancer runs
/// them): it is put in WAL mode, so readers never block the writer nor the writer the readers,
/// and every connection waits up to [`BUSY_TIMEOUT`] for a lock another process holds rather
/// than failing at once.
pub fn open(path: Option<&Path>) -> rusqlite::Result<Connection> {
    let conn = match path {
        Some(path) => {
            let conn = Connection::open(path)?;
            // First, so that switching to WAL also waits for a process that holds the file.
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(%mode, "SQLite refused WAL mode; concurrent processes may wait");
            }
            conn
        }
        None => Connection::open_in_memory()?,
    };
    conn.execute_batch("PRAGMA foreign_keys = ON;")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// SQL statements run on connections that [`count_statements`] was called on.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Counts every statement `conn` runs from now on (SQLite's trace hook, once per statement
/// when it finishes), for `/stats`.
pub fn count_statements(conn: &Connection) {
    fn counted(_event: rusqlite::trace::TraceEvent<'_>) {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
    }
    conn.trace_v2(
        rusqlite::trace::TraceEventCodes::SQLITE_TRACE_PROFILE,
        Some(counted),
    );
}

/// How many statements have run since [`count_statements`].
pub fn statements() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Whether the database has no articles yet (a new file or memory): then it gets seeded.
pub fn is_empty(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM articles)", [], |row| {
        row.get(0)
    })
}

/// Which way a vote goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Like,
    Dislike,
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
/// The vote is committed when this returns `Ok`: the caller invalidates the comment next, and
/// the never-stale guarantee holds only for writes committed before their invalidation. The
/// statement runs in an explicit `BEGIN IMMEDIATE` transaction whose commit is checked (with an
/// implicit one, a failed commit at statement reset would be lost).
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

/// Stores a new comment (already validated) and returns it.
pub fn add_comment(
    conn: &Connection,
    article_id: i64,
    author: &str,
    body: &str,
    created_at: DateTime<Utc>,
) -> rusqlite::Result<Comment> {
    conn.prepare_cached(&format!(
        "INSERT INTO comments (article_id, author, body, created_at) VALUES (?1, ?2, ?3, ?4)
         RETURNING {COMMENT_COLUMNS}"
    ))?
    .query_row(
        params![article_id, author, body, time_to_sql(created_at)],
        comment_from,
    )
}

/// Stores a seeded article; see `seed.rs`.
pub fn insert_article(
    conn: &Connection,
    title: &str,
    body: &str,
    updated_at: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO articles (title, body, updated_at) VALUES (?1, ?2, ?3)")?
        .execute(params![title, body, time_to_sql(updated_at)])?;
    Ok(conn.last_insert_rowid())
}

/// Stores a seeded comment, votes included; see `seed.rs`.
pub fn insert_comment(conn: &Connection, comment: &Comment) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO comments (article_id, author, body, likes, dislikes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        comment.article_id,
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
