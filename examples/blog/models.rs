//! The blog's records, as loaded from SQLite: what templates render and what the change log invalidates.
//!
//! Both derive `Sweepable` with the table they live in, so a template can cache a fragment
//! under a record's version, and the database's change log invalidates a record whenever its
//! row changes (see `db.rs`).

use cachesweeper::Sweepable;
use chrono::{DateTime, Utc};

/// An article. Its version is its `updated_at` *and* a counter: the timestamp changes when the
/// article itself is edited, the counter when something inside its page changes (a new comment,
/// a vote on one), which is what lets comments touch it.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(counter, table = "articles")]
pub struct Article {
    pub id: i64,
    pub title: String,
    /// Markdown.
    pub body: String,
    #[sweeper(version)]
    pub updated_at: DateTime<Utc>,
}

/// A comment. Versioned by a counter alone: a vote changes `likes` without any timestamp
/// changing, so the change log bumps the counter, and through `touches` the article's too.
#[derive(Debug, Clone, Sweepable)]
#[sweeper(table = "comments")]
pub struct Comment {
    pub id: i64,
    #[sweeper(touches = Article)]
    pub article_id: i64,
    pub author: String,
    /// Markdown, as the commenter typed it; raw HTML in it is shown as text.
    pub body: String,
    pub likes: i64,
    pub dislikes: i64,
    pub created_at: DateTime<Utc>,
}

/// A row of the article list: an article and how many comments it has.
///
/// The count is not part of any cache key, and need not be: adding a comment invalidates the
/// article, so the row's fragment is re-rendered with the new count.
#[derive(Debug, Clone)]
pub struct ArticleSummary {
    pub article: Article,
    pub comments: i64,
}

impl Article {
    /// The first words of the body, without Markdown markup, for the article list.
    pub fn teaser(&self) -> String {
        const WORDS: usize = 24;
        let mut words = self
            .body
            .split_whitespace()
            .map(|word| word.trim_matches(|c: char| matches!(c, '*' | '_' | '`' | '#' | '>')))
            .filter(|word| !word.is_empty() && *word != "-");
        let mut teaser = words.by_ref().take(WORDS).collect::<Vec<_>>().join(" ");
        if words.next().is_some() {
            teaser.push('…');
        }
        teaser
    }
}
