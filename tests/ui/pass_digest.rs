// `#[derive(TemplateDigest)]` next to Askama's derive, on the page of `templates/article.html`
// (which includes `comment.html`). trybuild compiles this case in a package of its own; its
// `templates` is a link to this package's (see `tests/derive_ui.rs`).

use askama::Template;
use cachesweeper::{Sweepable, TemplateDigest};

mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

#[derive(Sweepable)]
struct Article {
    id: i64,
    title: String,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
    author: String,
    body: String,
    likes: u32,
}

struct Renders;

impl Renders {
    fn tick(&self, _kind: &str) -> &'static str {
        ""
    }
}

#[derive(Template, TemplateDigest)]
#[template(path = "article.html")]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[derive(Template, TemplateDigest)]
#[template(path = "comment.html")]
struct CommentPart<'a> {
    comment: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

// The digest is a constant, computed by the compiler.
const DIGEST: &str = <ArticlePage<'static> as TemplateDigest>::TEMPLATE_DIGEST;
const _: () = assert!(DIGEST.len() == 16);

fn main() {
    assert!(
        DIGEST
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{DIGEST}"
    );
    // The page's digest covers comment.html and more: it is not the comment's.
    assert_ne!(DIGEST, CommentPart::TEMPLATE_DIGEST);
    assert_eq!(CommentPart::TEMPLATE_DIGEST.len(), 16);
}
