use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
#[template(
    ext = "html",
    source = "<p>\n{% filter cachesweeper::filters::cachesweeper() %}x{% endfilter %}</p>"
)]
struct Page;

fn main() {}
