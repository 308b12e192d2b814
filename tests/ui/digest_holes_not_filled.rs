// A page whose block has a hole must fill it.
use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Comment {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\") %}\
{{ \"like\"|cachesweeper::filters::hole(comment.id) }}{% endfilter %}"
)]
struct Page<'a> {
    comment: &'a Comment,
}

fn main() {}
