// A template field's `#[sweeper(...)]` knows two declarations.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"post\") %}{{ post.id }}{% endfilter %}"
)]
struct Page {
    post: Post,
    #[sweeper(shared)]
    site: String,
}

fn main() {}
