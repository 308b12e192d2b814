use cachesweeper::TemplateDigest;

#[derive(TemplateDigest)]
#[template(
    ext = "html",
    source = "<ol>{% for c in comments %}\n  {% include \"missing_comment.html\" %}\n{% endfor %}</ol>"
)]
struct Page {
    comments: Vec<String>,
}

fn main() {}
