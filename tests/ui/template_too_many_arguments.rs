#[derive(cachesweeper::Sweepable)]
struct Article {
    id: i64,
}

#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 500, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13) %}x{% endfilter %}"
)]
struct Page {
    article: Article,
}

fn main() {}
