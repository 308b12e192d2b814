// With `#[derive(TemplateDigest)]`, the missing name is reported at the template's line too.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "<p>\n{% filter cachesweeper::filters::cachesweeper(post, 300) %}x{% endfilter %}</p>"
)]
struct Page {
    post: Post,
}

fn main() {}
