// A name from a variable could repeat another block's: the name must be a string literal.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 300, section) %}x{% endfilter %}"
)]
struct Page<'a> {
    post: Post,
    section: &'a str,
}

fn main() {}
