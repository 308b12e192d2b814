struct Article {
    id: i64,
}

#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 500, \"body\") %}x{% endfilter %}"
)]
struct Page {
    article: Article,
}

fn main() {}
