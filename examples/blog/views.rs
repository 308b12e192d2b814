//! The pages, as Askama templates (in `templates/blog/`), and what each one is given to render.
//!
//! Templates are rendered with a per-request sweeper scope (`scope.render(&page)`, in
//! `routes.rs`), taken before the page's data is read, so the cache figures of each response
//! are its own and what it stores is never older than an invalidation.
//!
//! Every page has a [`Visit`]: who is looking and their CSRF token. Only the layout, outside
//! every cached block, and the holes of the article page's comments read it; the derive
//! refuses a block that would.

use askama::Template;
use cachesweeper::{Hole, Holes, Lazy};

use crate::models::{Article, ArticleSummary, Comment};

/// The short names `cachesweeper(...)` and `hole` in this module's templates: Askama looks for
/// custom filters in the `filters` module beside the template struct. `index.html` shows the
/// other style, the full path, which needs no such module.
mod filters {
    pub use ::cachesweeper::filters::{cachesweeper, hole};
}

/// Who is looking at a page, for the parts of it that differ between viewers.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The name they signed in with, if they did: "Signed in as …", and their comments'
    /// edit and delete controls.
    pub name: Option<String>,
    /// The token every form of the page sends back (hex digits).
    pub csrf: String,
    /// The page's path, where signing in or out comes back to.
    pub here: String,
}

/// `GET /`: every article, one cached row each.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/index.html")]
pub struct IndexPage {
    pub visit: Visit,
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
    pub visit: Visit,
    pub article: Article,
    /// The article's comments: data of the article, so its blocks may read them (the
    /// derive checks that a cached block reads nothing that differs between viewers).
    #[sweeper(belongs_to = article)]
    pub comments: Lazy<'static, Vec<Comment>>,
    pub cache_debug: bool,
    /// `--slow-render-ms`.
    pub slow: SlowRender,
}

/// A wait in the render of an article page (`--slow-render-ms`): once, when its holes are
/// first filled, which is after every version it shows was read, before its response goes.
/// For the freshness test behind Varnish: a like during it must not leave the page, rendered
/// from the comments before it, in Varnish.
#[derive(Debug, Default)]
pub struct SlowRender {
    wait: std::time::Duration,
    waited: std::sync::atomic::AtomicBool,
}

impl SlowRender {
    pub fn new(wait: std::time::Duration) -> SlowRender {
        SlowRender {
            wait,
            waited: Default::default(),
        }
    }

    fn wait_once(&self) {
        if !self.wait.is_zero() && !self.waited.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // Tests wait for this line to write during the render.
            tracing::info!(wait = ?self.wait, "slow render: waiting, its versions read");
            // Off the runtime's worker: other requests go on meanwhile.
            tokio::task::block_in_place(|| std::thread::sleep(self.wait));
        }
    }
}

impl Holes for ArticlePage {
    fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
        self.slow.wait_once();
        match hole.name() {
            // Hex digits: nothing to escape.
            "csrf" => out.push_str(&self.visit.csrf),
            "own" => {
                let author: String = hole.arg(2)?;
                if self.visit.name.as_deref() == Some(author.as_str()) {
                    OwnControls {
                        article_id: hole.arg(0)?,
                        comment_id: hole.arg(1)?,
                        csrf: &self.visit.csrf,
                    }
                    .render_into(out)?;
                }
            }
            _ => return Err(hole.error("the article page has no such hole")),
        }
        Ok(())
    }

    /// A visitor without a cookie has no token and no comments of their own: every such
    /// visitor's fills are the same.
    fn shared(&self) -> bool {
        self.visit.name.is_none() && self.visit.csrf.is_empty()
    }
}

/// A comment's edit link and delete button, shown to its author.
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<div class="own"><a href="/articles/{{ article_id }}/comments/{{ comment_id }}/edit">edit</a><form method="post" action="/articles/{{ article_id }}/comments/{{ comment_id }}/delete"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit">delete</button></form></div>"#
)]
struct OwnControls<'a> {
    article_id: i64,
    comment_id: i64,
    csrf: &'a str,
}

/// `GET /articles/{id}/comments/{cid}/edit`: the author's form to change their comment.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/edit.html")]
pub struct EditPage {
    pub visit: Visit,
    pub comment: Comment,
    pub cache_debug: bool,
}

/// Any page that is an error: 404, 400, 500.
/// The sign-in form (`GET /signin`), with its visitor's token: never shared.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/signin.html")]
pub struct SignInPage {
    pub visit: Visit,
    /// Where to come back to.
    pub next: String,
    pub cache_debug: bool,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "blog/error.html")]
pub struct ErrorPage {
    pub visit: Visit,
    /// The status line's text, e.g. "Not Found".
    pub title: String,
    /// What went wrong, for the reader.
    pub message: String,
    pub cache_debug: bool,
}
