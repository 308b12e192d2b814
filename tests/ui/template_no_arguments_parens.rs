#[derive(askama::Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper() %}x{% endfilter %}"
)]
struct Page;

fn main() {}
