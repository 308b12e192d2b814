//! Conditional GET against the scenarios an adversarial probe tried (`Scope::render_conditional`):
//! where a 304 could be answered for a page that changed, or two different pages could share
//! one validator. The first three failed before the validator hashed the page's fragments in
//! page order and refused a page with a fragment the store rule refused.

use crate::common;

use askama::Template;
use cachesweeper::http_cache::Caching;
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
            ..
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
        let (html1, etag1) = page_of(&get(
            sweeper,
            &Thread {
                article: &a,
                comments: &before,
            },
            None,
        ));
        assert_eq!(
            get(
                sweeper,
                &Thread {
                    article: &a,
                    comments: &before
                },
                Some(&etag1)
            ),
            Conditional::NotModified {
                etag: etag1.clone(),
                caching: Caching::Private,
            },
            "{name}: unchanged"
        );

        // The write: the article's pinned comment (not shown outside the blocks) becomes 2.
        a.updated_at += chrono::Duration::seconds(1);
        sweeper.invalidate(&a).unwrap();
        tick();
        let after = [c2.clone(), c1.clone()];
        let now = get(
            sweeper,
            &Thread {
                article: &a,
                comments: &after,
            },
            None,
        );
        let (html2, etag2) = page_of(&now);
        assert_ne!(html1, html2, "{name}: the order changed");
        assert_ne!(
            etag1, etag2,
            "{name}: two different pages got one validator:\n{html1}\n{html2}"
        );
        let answer = get(
            sweeper,
            &Thread {
                article: &a,
                comments: &after,
            },
            Some(&etag1),
        );
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
        let (h1, e1) = page_of(&get(
            sweeper,
            &Thread {
                article: &a,
                comments: &once,
            },
            None,
        ));
        let (h2, e2) = page_of(&get(
            sweeper,
            &Thread {
                article: &a,
                comments: &twice,
            },
            None,
        ));
        assert_ne!(h1, h2, "{name}");
        assert_ne!(
            e1, e2,
            "{name}: two different pages got one validator:\n{h1}\n{h2}"
        );
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

fn get_one(
    sweeper: &Sweeper,
    scope: cachesweeper::Scope,
    c: &Comment,
    inm: Option<&str>,
) -> Conditional {
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
        // A renders now, after the raise: the version it reads is the new one. What it
        // renders is older than that version (the store rule refuses it): no validator, so
        // A's browser has nothing to revalidate with.
        let answer_a = get_one(sweeper, scope_a, &read_by_a, None);
        let Conditional::Page {
            html: html_a,
            etag: etag_a,
            ..
        } = &answer_a
        else {
            panic!("{name}: {answer_a:?}");
        };
        assert!(html_a.contains("old"), "{name}: {html_a}");
        assert_eq!(
            *etag_a, None,
            "{name}: a validator for a page older than its versions"
        );

        // A later request renders (and stores) the new page, with a validator of its own,
        // which the old page's never was.
        let (html_b, etag_b) = page_of(&get_one(sweeper, sweeper.scope(), &c, None));
        assert!(html_b.contains("new"), "{name}: {html_b}");
        assert_ne!(etag_b, warm, "{name}");
        assert_eq!(
            get_one(sweeper, sweeper.scope(), &c, Some(&warm)),
            get_one(sweeper, sweeper.scope(), &c, None),
            "{name}: the old page's validator is answered with the new page"
        );
    });
}

/// A record that touches nothing above it, counter-versioned.
#[derive(Debug, Clone, cachesweeper::Sweepable)]
pub struct Tag {
    id: i64,
    name: String,
}

/// Three deep: a field-versioned page, an article, a tag; the tag touches nothing, so only
/// the dependencies stored two levels down can tell the outer fragment changed.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{%- filter cachesweeper::filters::cachesweeper(slug, 600, "outer") -%}
[{%- filter cachesweeper::filters::cachesweeper(a, 600, "mid") -%}
({%- filter cachesweeper::filters::cachesweeper(t, 600, "inner") -%}{{ t.name }}{%- endfilter -%})
{%- endfilter -%}]
{%- endfilter %}"#
)]
struct Deep<'a> {
    slug: &'a common::Page,
    #[sweeper(belongs_to = slug)]
    a: &'a Article,
    #[sweeper(belongs_to = a)]
    t: &'a Tag,
}

#[test]
fn conditional_three_deep_change_changes_the_validator() {
    on_every_backend(|name, sweeper| {
        let slug = common::Page {
            slug: "home".into(),
            revision: 1,
        };
        let a = article(1);
        let mut t = Tag {
            id: 1,
            name: "rust".into(),
        };
        known(sweeper, [&a]);
        known(sweeper, [&t]);
        let get = |t: &Tag, inm: Option<&str>| {
            sweeper
                .scope()
                .render_conditional(
                    &Deep {
                        slug: &slug,
                        a: &a,
                        t,
                    },
                    inm,
                )
                .unwrap()
        };
        let (_, e1) = page_of(&get(&t, None));
        assert_eq!(
            get(&t, Some(&e1)),
            Conditional::NotModified {
                etag: e1.clone(),
                caching: Caching::Private
            },
            "{name}"
        );
        t.name = "zig".into();
        sweeper.invalidate(&t).unwrap();
        tick();
        let answer = get(&t, Some(&e1));
        assert!(
            matches!(&answer, Conditional::Page { html, etag: Some(e), .. } if html.contains("zig") && *e != e1),
            "{name}: {answer:?}"
        );
    });
}

/// A `cache=false` block around a cached one: what the uncached block writes is outside
/// every cached block, so a change there (no invalidation: it is never cached) changes the
/// validator; the cached block inside is the page's own.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{%- filter cachesweeper::filters::cachesweeper(a, 600, "wrap", cache=false) -%}
<h2>{{ a.title }}</h2>
{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}{{ c.body }}{%- endfilter -%}
{%- endfilter %}"#
)]
struct Wrapped<'a> {
    a: &'a Article,
    #[sweeper(belongs_to = a)]
    c: &'a Comment,
}

#[test]
fn conditional_cached_block_inside_an_uncached_one() {
    on_every_backend(|name, sweeper| {
        let mut a = article(1);
        let mut c = comment(1, 1);
        known(sweeper, [&a]);
        known(sweeper, [&c]);
        let get = |a: &Article, c: &Comment, inm: Option<&str>| {
            sweeper
                .scope()
                .render_conditional(&Wrapped { a, c }, inm)
                .unwrap()
        };
        let (_, e1) = page_of(&get(&a, &c, None));
        assert_eq!(
            get(&a, &c, Some(&e1)),
            Conditional::NotModified {
                etag: e1.clone(),
                caching: Caching::Private
            },
            "{name}"
        );
        a.title = "Retitled".into();
        let (html, e2) = page_of(&get(&a, &c, Some(&e1)));
        assert!(html.contains("Retitled") && e2 != e1, "{name}: {html}");
        c.body = "edited".into();
        sweeper.invalidate(&c).unwrap();
        tick();
        let (html, e3) = page_of(&get(&a, &c, Some(&e2)));
        assert!(html.contains("edited") && e3 != e2, "{name}: {html}");
    });
}

/// memcached restarted (every fragment and counter lost) between a write and the reader's
/// revalidation, and between two revalidations of an unchanged page.
#[test]
fn conditional_memcached_restart_between_requests() {
    use cachesweeper::backend::Memcached;
    use cachesweeper_suite::memcached::MemcachedProcess;
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    let port = server.port();
    let sweeper = Sweeper::builder()
        .backend(Memcached::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    let mut c = comment(1, 1);
    c.body = "old".into();
    known(&sweeper, [&c]);
    let get = |c: &Comment, inm: Option<&str>| {
        sweeper.scope().render_conditional(&One { c }, inm).unwrap()
    };
    let (_, e1) = page_of(&get(&c, None));
    let _ = get(&c, None);
    assert_eq!(
        get(&c, Some(&e1)),
        Conditional::NotModified {
            etag: e1.clone(),
            caching: Caching::Private
        }
    );

    // Unchanged page across a restart: a new validator is allowed (secondary), a wrong page not.
    server.kill();
    let server = MemcachedProcess::start_on(port).expect("restart");
    tick();
    let answer = get(&c, Some(&e1));
    eprintln!("unchanged page after restart: {answer:?}");
    if let Conditional::Page { html, .. } = &answer {
        assert!(html.contains("old"));
    }
    // Settle: stored again under the recreated counter.
    tick();
    let (_, e2) = page_of(&get(&c, None));
    let (_, e2b) = page_of(&get(&c, None));
    eprintln!("after restart: {e2} {e2b} (before: {e1})");

    // A write, acknowledged; then memcached restarts; then the reader revalidates.
    c.body = "new".into();
    sweeper.invalidate(&c).unwrap();
    drop(server);
    let _server = MemcachedProcess::start_on(port).expect("restart");
    tick();
    for inm in [&e1, &e2, &e2b] {
        let answer = get(&c, Some(inm));
        assert!(
            matches!(&answer, Conditional::Page { html, .. } if html.contains("new")),
            "{answer:?}"
        );
    }
}
