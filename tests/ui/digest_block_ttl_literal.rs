use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 1.5, \"body\") %}{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, \"300\", \"footer\") %}{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, -1, \"sidebar\") %}{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, ttl, \"fine\") %}{% endfilter %}"
)]
struct Page;

fn main() {}
