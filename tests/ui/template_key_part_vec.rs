#[derive(cachesweeper::Sweepable)]
struct Article {
    id: i64,
}

#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 500, \"body\", tags) %}x{% endfilter %}"
)]
struct Page {
    article: Article,
    tags: Vec<String>,
}

fn main() {}
