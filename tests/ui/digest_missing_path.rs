use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
#[template(path = "blog/missing.html")]
struct Page;

fn main() {}
