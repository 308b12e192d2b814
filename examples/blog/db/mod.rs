//! The blog's database, SQLite (the default: a file, nothing to install) or PostgreSQL
//! (`--postgres URL`), behind the few queries the handlers run.
//!
//! Nothing here invalidates the cache: the database does. Triggers installed by cachesweeper's
//! change log record every change to `articles` and `comments` in the writing transaction;
//! the blog's own writes are applied before they return (so a response to a vote already
//! shows it), and the log's follower applies everyone else's (another blog process, `sqlite3`
//! or `psql` in a shell) within its lag.

mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cachesweeper::Sweeper;
use chrono::{DateTime, Utc};

use crate::models::{Article, ArticleSummary, Comment};
pub use sqlite::TempDb;

/// What a query can fail with: either database's error.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A bounded pool of connections to the blog's database.
#[derive(Clone)]
pub enum Db {
    Sqlite(sqlite::Pool),
    Postgres(postgres::Pool),
}

/// What the author of a comment does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnChange {
    /// Replaces its body (already validated).
    Edit(String),
    Delete,
}

impl OwnChange {
    /// The statement, with the comment's id, article and author as `?1`/`$1` to `?3`/`$3` and
    /// the new body, if any, as the fourth. Fixed texts: nothing from the request becomes SQL.
    fn sql(&self, columns: &str, placeholder: char) -> String {
        let p = placeholder;
        let change = match self {
            OwnChange::Edit(_) => format!("UPDATE comments SET body = {p}4"),
            OwnChange::Delete => "DELETE FROM comments".to_owned(),
        };
        format!(
            "{change} WHERE id = {p}1 AND article_id = {p}2 AND author = {p}3 RETURNING {columns}"
        )
    }
}

/// Which way a vote goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Like,
    Dislike,
}

impl Db {
    /// The SQLite file at `path` (created with the schema if new), its change log installed.
    pub fn sqlite(path: &Path, sweeper: &Sweeper) -> Result<Db, Error> {
        Ok(Db::Sqlite(sqlite::Pool::open(path, sweeper)?))
    }

    /// The PostgreSQL database `url` names (the schema created if missing), its change log
    /// installed.
    pub async fn postgres(url: &str, sweeper: &Sweeper) -> Result<Db, Error> {
        Ok(Db::Postgres(postgres::Pool::open(url, sweeper).await?))
    }

    /// Seeds the database with the demo content (see `seed.rs`) if it has no article yet, in
    /// one transaction that also decides whether it is empty: of several blog processes
    /// starting on one database, one seeds it. Returns whether this one did.
    pub async fn seed_if_empty(&self, articles: u32, comments: u32) -> Result<bool, Error> {
        let content = crate::seed::content(articles, comments);
        match self {
            Db::Sqlite(pool) => {
                pool.run(move |conn| sqlite::seed_if_empty(conn, &content))
                    .await
            }
            Db::Postgres(pool) => pool.seed_if_empty(&content).await,
        }
    }

    /// Every article with its number of comments, most recently updated first.
    pub async fn article_summaries(&self) -> Result<Vec<ArticleSummary>, Error> {
        match self {
            Db::Sqlite(pool) => pool.run(|conn| sqlite::article_summaries(conn)).await,
            Db::Postgres(pool) => pool.article_summaries().await,
        }
    }

    /// The article with this id, if there is one.
    pub async fn article(&self, id: i64) -> Result<Option<Article>, Error> {
        match self {
            Db::Sqlite(pool) => pool.run(move |conn| sqlite::article(conn, id)).await,
            Db::Postgres(pool) => pool.article(id).await,
        }
    }

    /// The comments of an article, oldest first.
    pub async fn comments_of(&self, article_id: i64) -> Result<Vec<Comment>, Error> {
        match self {
            Db::Sqlite(pool) => {
                pool.run(move |conn| sqlite::comments_of(conn, article_id))
                    .await
            }
            Db::Postgres(pool) => pool.comments_of(article_id).await,
        }
    }

    /// Counts a vote on a comment of an article, atomically in SQL, and returns the comment as
    /// it now is; `None` if there is no such comment on that article. When this returns, the
    /// vote is committed and the comment and its article are invalidated.
    pub async fn vote(
        &self,
        article_id: i64,
        comment_id: i64,
        vote: Vote,
    ) -> Result<Option<Comment>, Error> {
        match self {
            Db::Sqlite(pool) => {
                pool.run(move |conn| sqlite::vote(conn, article_id, comment_id, vote))
                    .await
            }
            Db::Postgres(pool) => pool.vote(article_id, comment_id, vote).await,
        }
    }

    /// Edits or deletes a comment of an article if `author` wrote it, and returns it as it
    /// now is (as it was, if deleted); `None` if there is no such comment of theirs. Ownership
    /// is part of the statement, so no check can be raced. Committed and invalidated when this
    /// returns, as a vote is.
    pub async fn change_own_comment(
        &self,
        article_id: i64,
        comment_id: i64,
        author: String,
        change: OwnChange,
    ) -> Result<Option<Comment>, Error> {
        match self {
            Db::Sqlite(pool) => {
                pool.run(move |conn| {
                    sqlite::change_own_comment(conn, article_id, comment_id, &author, &change)
                })
                .await
            }
            Db::Postgres(pool) => {
                pool.change_own_comment(article_id, comment_id, &author, &change)
                    .await
            }
        }
    }

    /// Stores a new comment (already validated) and returns it, committed and its article
    /// invalidated.
    pub async fn add_comment(
        &self,
        article_id: i64,
        author: String,
        body: String,
        created_at: DateTime<Utc>,
    ) -> Result<Comment, Error> {
        match self {
            Db::Sqlite(pool) => {
                pool.run(move |conn| {
                    sqlite::add_comment(conn, article_id, &author, &body, created_at)
                })
                .await
            }
            Db::Postgres(pool) => {
                pool.add_comment(article_id, &author, &body, created_at)
                    .await
            }
        }
    }
}

/// SQL statements the blog has run since start (seeding aside), for `/stats`: a warm article
/// page runs one.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

fn count_statements(n: u64) {
    STATEMENTS.fetch_add(n, Ordering::Relaxed);
}

/// How many statements have run since start.
pub fn statements() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}
