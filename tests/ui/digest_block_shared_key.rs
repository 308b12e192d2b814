// Two blocks on one record with one name would share a cache entry.
#[derive(cachesweeper::Sweepable)]
struct Post {
    id: i64,
    body: String,
    title: String,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "<article>
{% filter cachesweeper::filters::cachesweeper(post, 300, \"body\") %}<p>{{ post.body }}</p>{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, 300, \"body\") %}<footer>{{ post.title }}</footer>{% endfilter %}
</article>"
)]
struct Page {
    post: Post,
}

fn main() {}
