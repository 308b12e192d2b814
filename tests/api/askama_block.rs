//! The `cachesweeper` filter block and the `cached` wrapper in real Askama templates.

use crate::common;

use std::time::Duration;

use askama::Template;
use cachesweeper::backend::Null;
use cachesweeper::{Sweepable, Sweeper};
use common::{Comment, Renders, cases, comment, known};

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(comment, 500, "comment.html") %}<p>{{ renders.tick("body") }}{{ comment.author }}: {{ comment.body }}</p>{% endfilter %}"#
)]
struct PathQualified<'a> {
    comment: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[test]
fn on_a_hit_the_body_is_not_rendered() {
    for case in cases() {
        let renders = Renders::default();
        let c = comment(1, 1);
        known(&case.sweeper, [&c]);
        let page = PathQualified {
            comment: &c,
            renders: &renders,
        };
        let first = case.sweeper.scope().render(&page).unwrap();
        let second = case.sweeper.scope().render(&page).unwrap();
        assert_eq!(first, second, "{}", case.name);
        assert_eq!(
            renders.take().get("body"),
            Some(&1),
            "{}: body ran once across two renders",
            case.name
        );
        let stats = case.sweeper.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1), "{}", case.name);
    }
}

#[test]
fn output_is_the_uncached_output_byte_for_byte_and_escaped_once() {
    for case in cases() {
        let renders = Renders::default();
        let mut c = comment(2, 1);
        c.body = r#"<script>alert("x")</script> & 'quotes'"#.into();
        let page = PathQualified {
            comment: &c,
            renders: &renders,
        };
        let uncached = Sweeper::builder().backend(Null).build().unwrap();
        let uncached = uncached.scope().render(&page).unwrap();
        let miss = case.sweeper.scope().render(&page).unwrap();
        let hit = case.sweeper.scope().render(&page).unwrap();
        assert_eq!(miss, uncached, "{}", case.name);
        assert_eq!(hit, uncached, "{}", case.name);
        assert!(
            hit.contains("&#60;script&#62;"),
            "{}: escaped once: {hit}",
            case.name
        );
        assert!(
            !hit.contains("&amp;#60;"),
            "{}: not escaped twice: {hit}",
            case.name
        );
    }
}

mod short_name {
    use super::*;

    mod filters {
        pub use cachesweeper::filters::cachesweeper;
    }

    #[derive(Template, cachesweeper::TemplateDigest)]
    #[template(
        ext = "html",
        source = "{% filter cachesweeper(comment, ttl, \"byline\", lang, comment.likes) %}{{ renders.tick(\"body\") }}{{ comment.author }}{% endfilter %}"
    )]
    pub struct ShortName<'a> {
        pub comment: &'a Comment,
        pub ttl: Duration,
        pub lang: &'a str,
        #[sweeper(same_for_everyone)]
        pub renders: &'a Renders,
    }
}

#[test]
fn short_name_duration_ttl_and_key_parts() {
    let sweeper = Sweeper::embedded();
    let renders = Renders::default();
    let c = comment(3, 1);
    let ttl = Duration::from_secs(60);
    for lang in ["en", "fr", "en"] {
        let page = short_name::ShortName {
            comment: &c,
            ttl,
            lang,
            renders: &renders,
        };
        assert_eq!(sweeper.scope().render(&page).unwrap(), "author3");
    }
    // "en" and "fr" are separate fragments; the second "en" hits.
    assert_eq!(renders.take().get("body"), Some(&2));
    assert_eq!(sweeper.stats().hits, 1);
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "<div>{{ renders.tick(\"view\") }}{{ comment.body }}</div>"
)]
struct CommentView<'a> {
    comment: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% for c in comments %}{{ cachesweeper::cached(c, 300, self.view(c)) }}{% endfor %}"
)]
struct WithWrapper<'a> {
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

impl<'a> WithWrapper<'a> {
    fn view(&self, comment: &'a Comment) -> CommentView<'a> {
        CommentView {
            comment,
            renders: self.renders,
        }
    }
}

#[test]
fn a_sub_template_is_rendered_only_on_a_miss() {
    for case in cases() {
        let renders = Renders::default();
        let comments: Vec<Comment> = (1..=3).map(|id| comment(id, 1)).collect();
        known(&case.sweeper, &comments);
        let page = WithWrapper {
            comments: &comments,
            renders: &renders,
        };
        let first = case.sweeper.scope().render(&page).unwrap();
        let second = case.sweeper.scope().render(&page).unwrap();
        assert_eq!(first, second, "{}", case.name);
        assert_eq!(first.matches("<div>").count(), 3, "{}", case.name);
        assert!(
            first.contains("&#60;b&#62;1&#60;/b&#62;"),
            "{}: escaped once: {first}",
            case.name
        );
        assert_eq!(renders.take().get("view"), Some(&3), "{}", case.name);
        case.sweeper.invalidate(&comments[1]).unwrap();
        case.sweeper.scope().render(&page).unwrap();
        assert_eq!(renders.take().get("view"), Some(&1), "{}", case.name);
    }
}

#[test]
fn scopes_count_per_request() {
    let sweeper = Sweeper::embedded();
    let renders = Renders::default();
    let c = comment(4, 1);
    let page = PathQualified {
        comment: &c,
        renders: &renders,
    };
    let request = sweeper.scope();
    request.render(&page).unwrap();
    assert_eq!((request.stats().hits, request.stats().misses), (0, 1));
    let request = sweeper.scope();
    request.render(&page).unwrap();
    assert_eq!((request.stats().hits, request.stats().misses), (1, 0));
    assert_eq!((sweeper.stats().hits, sweeper.stats().misses), (1, 1));
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 500, \"comment\") %}{{ renders.tick(\"body\") }}{{ self.broken()? }}{% endfilter %}"
)]
#[sweeper(same_for_everyone(broken))]
struct Broken<'a> {
    comment: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

impl Broken<'_> {
    fn broken(&self) -> Result<&'static str, std::io::Error> {
        Err(std::io::Error::other("the database is gone"))
    }
}

#[test]
fn a_body_error_is_the_render_error_and_nothing_is_stored() {
    let sweeper = Sweeper::embedded();
    let renders = Renders::default();
    let c = comment(5, 1);
    let page = Broken {
        comment: &c,
        renders: &renders,
    };
    for _ in 0..2 {
        let error = sweeper.scope().render(&page).unwrap_err();
        assert!(
            error.to_string().contains("the database is gone"),
            "{error}"
        );
    }
    assert_eq!(
        renders.take().get("body"),
        Some(&2),
        "nothing was stored, so the body ran again"
    );
    assert_eq!(sweeper.stats().bytes_written, 0);
}

#[derive(Sweepable)]
struct Note {
    id: u32,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "txt",
    source = "{% filter cachesweeper::filters::cachesweeper(note, 0, \"note\") %}{{ renders.tick(\"body\") }}n{% endfilter %}"
)]
struct ZeroTtl<'a> {
    note: &'a Note,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[test]
fn a_zero_ttl_renders_every_time_and_stores_nothing() {
    let sweeper = Sweeper::embedded();
    let renders = Renders::default();
    let page = ZeroTtl {
        note: &Note { id: 1 },
        renders: &renders,
    };
    for _ in 0..3 {
        assert_eq!(sweeper.scope().render(&page).unwrap(), "n");
    }
    // Twice a page: the record pass renders it too, to find any block nested in it.
    assert_eq!(renders.take().get("body"), Some(&6));
    let stats = sweeper.stats();
    assert_eq!((stats.misses, stats.round_trips), (3, 0), "{stats:?}");
}

/// Askama's own `render()` has no sweeper: a page with a block, or with a cached sub-template,
/// fails with the error that says how to render it, renders no body, and caches nothing
/// anywhere (before, it silently used a private embedded cache, which an application on
/// memcached would never invalidate).
#[test]
fn a_page_rendered_without_a_sweeper_is_a_clear_error() {
    let renders = Renders::default();
    let c = comment(6, 1);
    let block = PathQualified {
        comment: &c,
        renders: &renders,
    };
    let comments = [comment(7, 1)];
    let sub_template = WithWrapper {
        comments: &comments,
        renders: &renders,
    };
    for error in [
        block.render().unwrap_err(),
        sub_template.render().unwrap_err(),
    ] {
        let askama::Error::Custom(custom) = &error else {
            panic!("not the sweeper's error: {error:?}");
        };
        assert!(
            matches!(
                custom.downcast_ref::<cachesweeper::Error>(),
                Some(cachesweeper::Error::NoSweeper)
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("render the page with `sweeper.scope().render(&page)`"),
            "{error}"
        );
    }
    assert_eq!(renders.take(), Default::default(), "no body was rendered");

    // Through a scope, the same pages render and cache.
    let sweeper = Sweeper::embedded();
    sweeper.scope().render(&block).unwrap();
    sweeper.scope().render(&sub_template).unwrap();
    assert_eq!(sweeper.stats().misses, 2);
}

/// A block rendered without the cache for some requests: `cache=false` in the template, or
/// the whole render through `Scope::uncached`.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(comment, 500, "comment", cache=!preview) %}<p>{{ renders.tick("body") }}{{ comment.body }}</p>{% endfilter %}"#
)]
struct Previewable<'a> {
    comment: &'a Comment,
    preview: bool,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[test]
fn a_block_or_a_render_without_the_cache_neither_looks_up_nor_stores() {
    for case in cases() {
        let renders = Renders::default();
        let c = comment(3, 1);
        known(&case.sweeper, [&c]);
        let page = |preview| Previewable {
            comment: &c,
            preview,
            renders: &renders,
        };
        let writes = case.sweeper.stats().bytes_written;
        // Previews render every time and leave nothing behind.
        for _ in 0..2 {
            let scope = case.sweeper.scope();
            assert_eq!(
                scope.render(&page(true)).unwrap(),
                "<p>comment &#60;b&#62;3&#60;/b&#62; &#38; more</p>",
                "{}",
                case.name
            );
            assert_eq!(
                (scope.stats().hits, scope.stats().misses),
                (0, 1),
                "{}",
                case.name
            );
        }
        // (A block without the cache is rendered in each pass of its page: twice.)
        assert_eq!(renders.take().get("body"), Some(&4), "{}", case.name);
        assert_eq!(
            case.sweeper.stats().bytes_written,
            writes,
            "{}: stored",
            case.name
        );
        // So does a render through an uncached scope, of a block that caches otherwise.
        let scope = case.sweeper.scope().uncached();
        scope.render(&page(false)).unwrap();
        assert_eq!(
            (scope.stats().hits, scope.stats().misses),
            (0, 1),
            "{}",
            case.name
        );
        assert_eq!(
            case.sweeper.stats().bytes_written,
            writes,
            "{}: stored",
            case.name
        );
        // The ordinary render stores it, the next one is served.
        case.sweeper.scope().render(&page(false)).unwrap();
        let scope = case.sweeper.scope();
        scope.render(&page(false)).unwrap();
        assert_eq!(scope.stats().hits, 1, "{}", case.name);
        assert_eq!(renders.take().get("body"), Some(&2), "{}", case.name);
    }
}
