// What a cached block may read: its record, its key parts (varying the block by the viewer),
// and fields declared the record's data or the same for everyone. Each renders right. The
// list around the comments shows what they show: it is varied by the viewer too.
use cachesweeper::{Lazy, Sweepable, Sweeper};

#[derive(Sweepable)]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    author: String,
}

struct Viewer {
    name: String,
}

struct Site {
    name: String,
}

#[derive(askama::Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(article, 600, \"comments\", viewer.name) %}\
{{ site.name }}{% let comments = comments.get().unwrap() %}{% for comment in comments %}\
{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\", viewer.name) %}\
{{ comment.author }}{% if viewer.name == comment.author %} (you){% endif %}\
{% endfilter %}{% endfor %}{% endfilter %}"
)]
struct Page<'a> {
    article: Article,
    #[sweeper(belongs_to = article)]
    comments: Lazy<'a, Vec<Comment>>,
    #[sweeper(same_for_everyone)]
    site: Site,
    viewer: Viewer,
}

fn main() {
    let sweeper = Sweeper::embedded();
    let render = |viewer: &str| {
        let page = Page {
            article: Article { id: 1 },
            comments: Lazy::loaded(vec![
                Comment { id: 1, author: "ada".into() },
                Comment { id: 2, author: "brian".into() },
            ]),
            site: Site { name: "blog: ".into() },
            viewer: Viewer { name: viewer.into() },
        };
        sweeper.scope().render(&page).unwrap()
    };
    assert_eq!(render("ada"), "blog: ada (you)brian");
    assert_eq!(render("brian"), "blog: adabrian (you)");
}
