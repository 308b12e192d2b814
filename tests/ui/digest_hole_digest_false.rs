// A block that keeps its key across template edits must not hold a hole: its stored holes
// would outlive a deploy that renames or removes them.
use cachesweeper::{Hole, Holes, Sweepable};

#[derive(Sweepable)]
struct Comment {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\", digest=false) %}\
{{ \"like\"|cachesweeper::filters::hole(comment.id) }}{% endfilter %}"
)]
struct Page<'a> {
    comment: &'a Comment,
}

impl Holes for Page<'_> {
    fn fill(&self, _: &Hole, _: &mut String) -> askama::Result<()> {
        Ok(())
    }
}

fn main() {}
