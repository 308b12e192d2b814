// A block that shows each viewer something of their own through a hole: the block is cached
// once for everyone, and the page fills the hole for each render.
use cachesweeper::{Hole, Holes, Sweepable, Sweeper};

#[derive(Sweepable)]
struct Comment {
    id: i64,
    author: String,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\") %}\
{{ comment.author }}{{ \"mine\"|cachesweeper::filters::hole(comment.author) }}\
{% endfilter %}"
)]
struct Page<'a> {
    comment: &'a Comment,
    viewer: &'a str,
}

impl Holes for Page<'_> {
    fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
        if hole.args()[0] == self.viewer {
            out.push_str(" (you)");
        }
        Ok(())
    }
}

fn main() {
    let sweeper = Sweeper::embedded();
    let comment = Comment { id: 1, author: "ada".into() };
    let render = |viewer| sweeper.scope().render(&Page { comment: &comment, viewer }).unwrap();
    assert_eq!(render("ada"), "ada (you)");
    assert_eq!(render("brian"), "ada");
    assert_eq!(sweeper.stats().hits, 1);
}
