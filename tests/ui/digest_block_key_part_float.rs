use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 300, \"body\", 0.5) %}x{% endfilter %}"
)]
struct Page;

fn main() {}
