// Without `#[derive(TemplateDigest)]`, the filter itself requires the block's name.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
}

#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 300) %}x{% endfilter %}"
)]
struct Page {
    post: Post,
}

fn main() {}
