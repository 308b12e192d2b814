// A block that reads who is looking without its key saying so: the first viewer's "edit"
// link and name would be served to everyone.
#[derive(cachesweeper::Sweepable)]
struct Comment {
    id: i64,
    author: String,
    body: String,
}

struct Viewer {
    name: String,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "<ol>{% for comment in comments %}
{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\") %}<li>{{ comment.body }}
{% if viewer.name == comment.author %}<a href=\"/edit\">edit</a>{% endif %}</li>{% endfilter %}
{% endfor %}</ol>"
)]
struct Page {
    comments: Vec<Comment>,
    viewer: Viewer,
}

fn main() {}
