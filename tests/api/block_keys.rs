//! Issue 10: several blocks on one record each keep their own fragment. Their names (the
//! required argument after the time to live) give them separate keys, so each block shows its
//! own content, cold and warm, with `Sweeper::render` and with a plain Askama render, on the
//! embedded backend and on memcached.

use crate::common;

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
    #[sweeper(same_for_everyone)]
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
        // A page and a fragment of its own, as a request renders it: the blocks come through
        // both apart.
        for (how, post_id) in [("Scope::render", 1), ("Scope::render again", 2)] {
            let renders = Renders::default();
            let post = post(post_id);
            known(sweeper, [&post]);
            let page = PostPage {
                post: &post,
                renders: &renders,
            };
            let render = || sweeper.scope().render(&page).unwrap();
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

/// A generic model: one struct, many record types. `Row<Post>` 1 and `Row<Tag>` 1 are two
/// records, never one.
#[derive(Debug, Sweepable)]
#[sweeper(name = "row")]
struct Row<T> {
    id: i64,
    item: T,
}

#[derive(Debug)]
struct PostItem;
#[derive(Debug)]
struct TagItem;

#[test]
fn two_instantiations_of_a_generic_model_never_share_fragments() {
    assert_eq!(<Row<PostItem> as Sweepable>::MODEL, "row");
    assert_ne!(
        <Row<PostItem> as Sweepable>::sweeper_model(),
        <Row<TagItem> as Sweepable>::sweeper_model()
    );
    assert!(<Row<PostItem> as Sweepable>::sweeper_model().starts_with("row<"));
    for case in cases() {
        let s = &case.sweeper;
        let post = Row {
            id: 1,
            item: PostItem,
        };
        let tag = Row {
            id: 1,
            item: TagItem,
        };
        known(s, [&post]);
        known(s, [&tag]);
        let parts = cachesweeper::KeyParts::new().part("title");
        let show = |html: &'static str| move || Ok::<_, std::convert::Infallible>(html.to_owned());
        assert_eq!(
            s.scope()
                .fragment(&post, 60, &parts, show("a post"))
                .unwrap(),
            "a post"
        );
        assert_eq!(
            s.scope().fragment(&tag, 60, &parts, show("a tag")).unwrap(),
            "a tag"
        );
        // Warm: each finds its own.
        assert_eq!(
            s.scope().fragment(&post, 60, &parts, show("?")).unwrap(),
            "a post",
            "{}",
            case.name
        );
        assert_eq!(
            s.scope().fragment(&tag, 60, &parts, show("?")).unwrap(),
            "a tag",
            "{}",
            case.name
        );
        // Invalidating one leaves the other.
        s.invalidate(&post).unwrap();
        assert_eq!(
            s.scope().fragment(&tag, 60, &parts, show("?")).unwrap(),
            "a tag",
            "{}",
            case.name
        );
        assert_eq!(
            s.scope().fragment(&post, 60, &parts, show("new")).unwrap(),
            "new",
            "{}",
            case.name
        );
        let _ = (&post.item, &tag.item);
    }
}
