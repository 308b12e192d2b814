#[derive(cachesweeper::Sweepable)]
struct Article {
    id: i64,
}

#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 500, \"body\", score) %}x{% endfilter %}"
)]
struct Page {
    article: Article,
    score: f64,
}

fn main() {}
