// A filter applied to a hole's output would change its marker before the page fills it.
use cachesweeper::{Hole, Holes, Sweepable};

#[derive(Sweepable)]
struct Comment {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\") %}\
<a href=\"/like?t={{ \"csrf\"|cachesweeper::filters::hole|urlencode }}\">like</a>{% endfilter %}"
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
