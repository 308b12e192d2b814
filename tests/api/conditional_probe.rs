//! Probes of conditional GET (`Scope::render_conditional`): scenarios where a 304 could be
//! answered for a page that changed, or two different pages could share one validator.

use crate::common;

use askama::Template;
use cachesweeper::{Conditional, Sweeper};
use common::{Article, Comment, article, cases, comment, known};

/// An article's comments, each cached on its own, in the order the handler gives them (the
/// article's pinned comment first); the article's title outside every block.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<h1>{{ article.title }}</h1><ol>{% for c in comments %}<li>
{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}
{{ c.author }}: {{ c.body }}
{%- endfilter -%}
</li>{% endfor %}</ol>"#
)]
struct Thread<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
}

fn get(sweeper: &Sweeper, page: &Thread<'_>, inm: Option<&str>) -> Conditional {
    sweeper.scope().render_conditional(page, inm).unwrap()
}

fn page_of(answer: &Conditional) -> (String, String) {
    match answer {
        Conditional::Page {
            html,
            etag: Some(etag),
        } => (html.clone(), etag.clone()),
        other => panic!("a page with a validator, not {other:?}"),
    }
}

/// Runs `body` on every backend case, and fails with what failed on each (not only the first).
fn on_every_backend(body: impl Fn(&'static str, &Sweeper)) {
    let mut failed = Vec::new();
    for case in cases() {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            body(case.name, &case.sweeper)
        }));
        if let Err(e) = run {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("[{}] {msg}", case.name));
        }
    }
    assert!(failed.is_empty(), "failed on:\n{}", failed.join("\n---\n"));
}

fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(3));
}

/// The order of the page's blocks is part of the page: the validator hashes the fragments'
/// keys sorted, and the first pass (blocks empty) writes the same `<li></li><li></li>` for
/// either order. An editor pins comment 2 (a write to the article, committed and invalidated);
/// the thread now lists comment 2 first. The reader's browser revalidates the page it has.
#[test]
fn conditional_reordered_blocks_are_a_different_page() {
    on_every_backend(|name, sweeper| {
        let mut a = article(1);
        let (c1, c2) = (comment(1, 1), comment(2, 1));
        known(sweeper, [&a]);
        known(sweeper, [&c1, &c2]);

        let before = [c1.clone(), c2.clone()];
        let (html1, etag1) = page_of(&get(sweeper, &Thread { article: &a, comments: &before }, None));
        assert_eq!(
            get(sweeper, &Thread { article: &a, comments: &before }, Some(&etag1)),
            Conditional::NotModified { etag: etag1.clone() },
            "{name}: unchanged"
        );

        // The write: the article's pinned comment (not shown outside the blocks) becomes 2.
        a.updated_at += chrono::Duration::seconds(1);
        sweeper.invalidate(&a).unwrap();
        tick();
        let after = [c2.clone(), c1.clone()];
        let now = get(sweeper, &Thread { article: &a, comments: &after }, None);
        let (html2, etag2) = page_of(&now);
        assert_ne!(html1, html2, "{name}: the order changed");
        assert_ne!(
            etag1, etag2,
            "{name}: two different pages got one validator:\n{html1}\n{html2}"
        );
        let answer = get(sweeper, &Thread { article: &a, comments: &after }, Some(&etag1));
        assert!(
            matches!(answer, Conditional::Page { .. }),
            "{name}: 304 for the old order: {answer:?}"
        );
    });
}

/// The same, with no write at all: the same comment shown once or twice (a pinned comment
/// also in the list) gives one validator for two different pages.
#[test]
fn conditional_a_block_shown_twice_is_a_different_page() {
    on_every_backend(|name, sweeper| {
        let a = article(1);
        let (c1, c2) = (comment(1, 1), comment(2, 1));
        known(sweeper, [&a]);
        known(sweeper, [&c1, &c2]);
        let once = [c1.clone(), c2.clone(), c2.clone()];
        let twice = [c1.clone(), c1.clone(), c2.clone()];
        let (h1, e1) = page_of(&get(sweeper, &Thread { article: &a, comments: &once }, None));
        let (h2, e2) = page_of(&get(sweeper, &Thread { article: &a, comments: &twice }, None));
        assert_ne!(h1, h2, "{name}");
        assert_ne!(e1, e2, "{name}: two different pages got one validator:\n{h1}\n{h2}");
    });
}

/// One comment, cached, with nothing about it outside the block.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<main>{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}
<p>{{ c.body }}</p>
{%- endfilter -%}</main>"#
)]
struct One<'a> {
    c: &'a Comment,
}

fn get_one(sweeper: &Sweeper, scope: cachesweeper::Scope, c: &Comment, inm: Option<&str>) -> Conditional {
    let _ = sweeper;
    scope.render_conditional(&One { c }, inm).unwrap()
}

/// An invalidation racing a render (the store rule's own scenario): request A takes its scope
/// and reads the comment ("old"); the edit commits and `invalidate` returns Ok; A then reads the
/// raised counter, misses, renders "old" and does not store it, as it must not. But A's page
/// gets a validator computed from the new version: the same validator the new page gets.
/// After the acknowledged write, A's browser revalidates with it and is told 304: it keeps
/// showing "old" indefinitely.
#[test]
fn conditional_a_render_that_raced_an_invalidation_gets_the_new_pages_validator() {
    on_every_backend(|name, sweeper| {
        let mut c = comment(1, 1);
        c.body = "old".into();
        known(sweeper, [&c]);
        // Warm: stored at the old version.
        let (_, warm) = page_of(&get_one(sweeper, sweeper.scope(), &c, None));

        // Request A begins and reads its data.
        let scope_a = sweeper.scope();
        let read_by_a = c.clone();
        // The write commits and is invalidated.
        c.body = "new".into();
        sweeper.invalidate(&c).unwrap();
        tick();
        // A renders now, after the raise: the version it reads is the new one.
        let (html_a, etag_a) = page_of(&get_one(sweeper, scope_a, &read_by_a, None));
        assert!(html_a.contains("old"), "{name}: {html_a}");
        assert_ne!(etag_a, warm, "{name}");

        // A later request renders (and stores) the new page.
        let (html_b, etag_b) = page_of(&get_one(sweeper, sweeper.scope(), &c, None));
        assert!(html_b.contains("new"), "{name}: {html_b}");
        let same = etag_a == etag_b;

        // A's browser revalidates the "old" page it holds.
        let answer = get_one(sweeper, sweeper.scope(), &c, Some(&etag_a));
        assert!(
            matches!(&answer, Conditional::Page { html, .. } if html.contains("new")),
            "{name}: after the write was acknowledged, the page with \"old\" was revalidated: \
             {answer:?} (same validator for old and new page: {same})"
        );
        assert!(!same, "{name}: old and new page share the validator {etag_a}");
    });
}
