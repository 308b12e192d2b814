//! Issue 10: several blocks on one record each keep their own fragment. Their names (the
//! required argument after the time to live) give them separate keys, so each block shows its
//! own content, cold and warm, with `Sweeper::render` and with a plain Askama render, on the
//! embedded backend and on memcached.

mod common;

use askama::Template;
use cachesweeper::Sweepable;
use common::{Renders, cases, known};

mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

/// A post: the record every block of the page is keyed on.
#[derive(Debug, Clone, Sweepable)]
struct Post {
    id: i64,
    title: String,
    body: String,
    tags: String,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper(post, 300, "body") %}{{ renders.tick("body") }}<p>{{ post.body }}</p>{% endfilter %}
{% filter cachesweeper(post, 300, "footer") %}{{ renders.tick("footer") }}<footer>{{ post.title }}</footer>{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, 300, "sidebar") %}{{ renders.tick("sidebar") }}<aside>{{ post.tags }}</aside>{% endfilter %}"#
)]
struct PostPage<'a> {
    post: &'a Post,
    renders: &'a Renders,
}

const EXPECTED: &str = "<p>the body</p>\n<footer>The title</footer>\n<aside>rust, cache</aside>";

fn post(id: i64) -> Post {
    Post {
        id,
        title: "The title".into(),
        body: "the body".into(),
        tags: "rust, cache".into(),
    }
}

fn counts(n: u32) -> std::collections::BTreeMap<&'static str, u32> {
    [("body", n), ("footer", n), ("sidebar", n)]
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect()
}

#[test]
fn each_block_on_one_record_shows_its_own_content() {
    for case in cases() {
        let sweeper = &case.sweeper;
        for (how, post_id) in [("Sweeper::render", 1), ("render_with_values", 2)] {
            let renders = Renders::default();
            let post = post(post_id);
            known(sweeper, [&post]);
            let page = PostPage {
                post: &post,
                renders: &renders,
            };
            let render = || match how {
                "Sweeper::render" => sweeper.render(&page).unwrap(),
                _ => page.render_with_values(sweeper).unwrap(),
            };
            let label = format!("{} / {how}", case.name);

            let before = sweeper.stats();
            assert_eq!(render(), EXPECTED, "{label}: cold");
            assert_eq!(
                renders.take(),
                counts(1),
                "{label}: cold renders each block"
            );
            let cold = sweeper.stats() - before;
            assert_eq!(cold.misses, 3, "{label}: {cold:?}");

            let before = sweeper.stats();
            assert_eq!(render(), EXPECTED, "{label}: warm");
            assert_eq!(renders.take(), counts(0), "{label}: warm renders nothing");
            let warm = sweeper.stats() - before;
            assert_eq!((warm.hits, warm.misses), (3, 0), "{label}: {warm:?}");
        }
    }
}
