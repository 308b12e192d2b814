// A block of an included template (templates/ui/post_footer.html, line 2) has the same key as
// one of the page. Including the same partial twice is not a duplicate: it is one block.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
    body: String,
    title: String,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(post, 300, \"body\") %}<p>{{ post.body }}</p>{% endfilter %}
{% include \"ui/post_footer.html\" %}
{% include \"ui/post_footer.html\" %}"
)]
struct Page {
    post: Post,
}

fn main() {}
