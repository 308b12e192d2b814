//! Template digests in fragment keys: a changed template misses, an unchanged one hits, and
//! `digest=false` keeps a key across template edits (keyed by the template's type instead).

use crate::common;

use askama::Template;
use cachesweeper::{KeyParts, Sweeper, TemplateDigest};
use common::{Comment, Renders, comment};

// Two "builds" of the same page: the same fragment (record, parts), in templates that differ
// by one character outside it, as after an edit.
#[derive(Template, TemplateDigest)]
#[template(
    ext = "html",
    source = "<h1>v1</h1>{% filter cachesweeper::filters::cachesweeper(c, 600, \"body\") %}{{ renders.tick(\"body\") }}<p>{{ c.body }}</p>{% endfilter %}"
)]
struct PageV1<'a> {
    c: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[derive(Template, TemplateDigest)]
#[template(
    ext = "html",
    source = "<h1>v2</h1>{% filter cachesweeper::filters::cachesweeper(c, 600, \"body\") %}{{ renders.tick(\"body\") }}<p>{{ c.body }}</p>{% endfilter %}"
)]
struct PageV2<'a> {
    c: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

// The same two, with the digest left out of the fragment's key.
#[derive(Template, TemplateDigest)]
#[template(
    ext = "html",
    source = "<h1>v1</h1>{% filter cachesweeper::filters::cachesweeper(c, 600, \"body\", digest=false) %}{{ renders.tick(\"body\") }}<p>{{ c.body }}</p>{% endfilter %}"
)]
struct StableV1<'a> {
    c: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[derive(Template, TemplateDigest)]
#[template(
    ext = "html",
    source = "<h1>v2</h1>{% filter cachesweeper::filters::cachesweeper(c, 600, \"body\", digest=false) %}{{ renders.tick(\"body\") }}<p>{{ c.body }}</p>{% endfilter %}"
)]
struct StableV2<'a> {
    c: &'a Comment,
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

#[test]
fn digests_are_constants_that_differ_with_the_source() {
    assert_eq!(PageV1::TEMPLATE_DIGEST.len(), 16);
    assert!(
        PageV1::TEMPLATE_DIGEST
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    assert_ne!(PageV1::TEMPLATE_DIGEST, PageV2::TEMPLATE_DIGEST);
}

#[test]
fn an_edited_template_misses_and_an_unchanged_one_hits() {
    let sweeper = Sweeper::embedded();
    let renders = Renders::default();
    let c = comment(1, 1);
    sweeper
        .scope()
        .render(&PageV1 {
            c: &c,
            renders: &renders,
        })
        .unwrap();
    sweeper
        .scope()
        .render(&PageV1 {
            c: &c,
            renders: &renders,
        })
        .unwrap();
    assert_eq!(renders.take().get("body"), Some(&1), "same template: hit");
    sweeper
        .scope()
        .render(&PageV2 {
            c: &c,
            renders: &renders,
        })
        .unwrap();
    assert_eq!(
        renders.take().get("body"),
        Some(&1),
        "edited template: miss"
    );
}

#[test]
fn digest_false_keeps_the_key_across_edits() {
    // An edit changes a template's text, so its digest, and not its Rust type, which names the
    // template in a key without a digest. (Two builds cannot live in one test binary: this is
    // the same template type under the two digests, at the level of keys.)
    let sweeper = Sweeper::embedded();
    let c = comment(2, 1);
    let parts = |digest| {
        KeyParts::new()
            .part("body")
            .in_template("app::Page")
            .without_template_digest()
            .template_digest(digest)
    };
    assert_eq!(
        sweeper
            .fragment_key(&c, &parts(PageV1::TEMPLATE_DIGEST))
            .unwrap(),
        sweeper
            .fragment_key(&c, &parts(PageV2::TEMPLATE_DIGEST))
            .unwrap(),
        "the same key across the edit"
    );
    // Two templates' `digest=false` blocks of one name on one record never share an entry.
    let renders = Renders::default();
    for _ in 0..2 {
        let v1 = sweeper.scope().render(&StableV1 {
            c: &c,
            renders: &renders,
        });
        let v2 = sweeper.scope().render(&StableV2 {
            c: &c,
            renders: &renders,
        });
        assert!(v1.unwrap().starts_with("<h1>v1</h1>"));
        assert!(v2.unwrap().starts_with("<h1>v2</h1>"));
    }
    assert_eq!(
        renders.take().get("body"),
        Some(&2),
        "each template's block rendered once, then hit"
    );
}
