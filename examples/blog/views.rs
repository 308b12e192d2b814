//! The pages, as Askama templates (in `templates/blog/`), and what each one is given to render.
//!
//! Templates are rendered with a per-request sweeper scope (`scope.render(&page)`, in
//! `routes.rs`), taken before the page's data is read, so the cache figures of each response
//! are its own and what it stores is never older than an invalidation.

use askama::Template;
use cachesweeper::Lazy;

use crate::models::{Article, ArticleSummary, Comment};

/// The short name `cachesweeper(...)` in this module's templates: Askama looks for custom
/// filters in the `filters` module beside the template struct. `index.html` shows the other
/// style, the full path, which needs no such module.
mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

/// `GET /`: every article, one cached row each.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/index.html")]
pub struct IndexPage {
    pub articles: Vec<ArticleSummary>,
    /// `?cache_debug=1`: the layout draws the fragments' debug marks.
    pub cache_debug: bool,
}

/// `GET /articles/{id}`: the article and its comments, as nested fragments. The comments are
/// loaded only if the comment list misses: a warm page runs one query, for the article row,
/// whose version keys the fragments.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/article.html")]
pub struct ArticlePage {
    pub article: Article,
    /// The article's comments: data of the article, so its blocks may read them (the
    /// derive checks that a cached block reads nothing that differs between viewers).
    #[sweeper(belongs_to = article)]
    pub comments: Lazy<'static, Vec<Comment>>,
    pub cache_debug: bool,
}

/// Any page that is an error: 404, 400, 500.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/error.html")]
pub struct ErrorPage {
    /// The status line's text, e.g. "Not Found".
    pub title: String,
    /// What went wrong, for the reader.
    pub message: String,
    pub cache_debug: bool,
}
