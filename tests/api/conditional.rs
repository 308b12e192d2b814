//! Conditional GET (issue 24): a page's validator, and `304 Not Modified` without rendering,
//! on every backend, in real Askama templates with nested blocks, holes and per-viewer parts.

use crate::common;

use askama::Template;
use cachesweeper::http_cache::Caching;
use cachesweeper::{Conditional, Hole, Holes, StatsSnapshot, Sweeper};
use common::{Article, Comment, Renders, article, cases, comment, known};

/// An article's comments, the list and each comment cached (Russian dolls), a hole in each
/// comment, and the viewer's name outside every block.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<header>{{ viewer }}</header>
{%- filter cachesweeper::filters::cachesweeper(article, 600, "comments") -%}
{{ renders.tick("list") }}<ol>{% for c in comments %}
{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}
{{ renders.tick("comment") }}<li>{{ c.body }} ({{ c.likes }}){{ "csrf"|cachesweeper::filters::hole }}</li>
{%- endfilter %}{% endfor %}</ol>
{%- endfilter %}"#
)]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
    viewer: &'a str,
    csrf: &'a str,
}

impl Holes for ArticlePage<'_> {
    fn fill(&self, _: &Hole, out: &mut String) -> askama::Result<()> {
        out.push_str(self.csrf);
        Ok(())
    }
}

fn page<'a>(
    renders: &'a Renders,
    article: &'a Article,
    comments: &'a [Comment],
    viewer: &'a str,
    csrf: &'a str,
) -> ArticlePage<'a> {
    ArticlePage {
        article,
        comments,
        renders,
        viewer,
        csrf,
    }
}

/// The page's answer to a request with `if_none_match`, and what that request cost.
fn get(
    sweeper: &Sweeper,
    page: &ArticlePage<'_>,
    if_none_match: Option<&str>,
) -> (Conditional, StatsSnapshot) {
    let scope = sweeper.scope();
    let answer = scope.render_conditional(page, if_none_match).unwrap();
    (answer, scope.stats())
}

fn etag_of(answer: &Conditional) -> String {
    match answer {
        Conditional::Page {
            etag: Some(etag), ..
        } => etag.clone(),
        other => panic!("a page with a validator, not {other:?}"),
    }
}

#[test]
fn an_unchanged_page_is_not_rendered_and_a_changed_one_gets_a_new_validator() {
    for case in cases() {
        let name = case.name;
        let sweeper = &case.sweeper;
        let renders = Renders::default();
        let (a1, a2) = (article(1), article(2));
        let mut comments1: Vec<Comment> = (1..=3).map(|id| comment(id, 1)).collect();
        let comments2: Vec<Comment> = (4..=5).map(|id| comment(id, 2)).collect();
        known(sweeper, [&a1, &a2]);
        known(sweeper, comments1.iter().chain(&comments2));

        // Cold, then warm: one validator, which a revalidation names.
        let (cold, _) = get(sweeper, &page(&renders, &a1, &comments1, "ann", "t1"), None);
        let etag = etag_of(&cold);
        let (warm, warm_cost) = get(sweeper, &page(&renders, &a1, &comments1, "ann", "t1"), None);
        assert_eq!(
            warm, cold,
            "{name}: the warm page and its validator are the cold one's"
        );
        let other = etag_of(&get(sweeper, &page(&renders, &a2, &comments2, "ann", "t1"), None).0);
        renders.take();

        // Revalidations: 304, nothing rendered, no more round trips than a warm page.
        for header in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let (answer, cost) = get(
                sweeper,
                &page(&renders, &a1, &comments1, "ann", "t1"),
                Some(&header),
            );
            assert_eq!(
                answer,
                Conditional::NotModified {
                    etag: etag.clone(),
                    caching: Caching::Private
                },
                "{name}: If-None-Match: {header}"
            );
            assert_eq!((cost.hits, cost.misses), (0, 0), "{name}");
            assert!(
                cost.round_trips <= warm_cost.round_trips,
                "{name}: {cost:?}"
            );
            if name == "memcached" {
                assert_eq!(cost.round_trips, 1, "{name}: the first batch only");
            }
        }
        assert!(renders.take().is_empty(), "{name}: a body was rendered");

        // Another viewer, or another token in the holes: another validator (the page differs).
        for (viewer, csrf) in [("bob", "t1"), ("ann", "t2")] {
            let (answer, _) = get(
                sweeper,
                &page(&renders, &a1, &comments1, viewer, csrf),
                Some(&etag),
            );
            assert_ne!(etag_of(&answer), etag, "{name}: {viewer} {csrf}");
        }

        // A like on a comment inside: the article's validator changes, the other's does not.
        comments1[1].likes += 1;
        sweeper.invalidate(&comments1[1]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let (answer, _) = get(
            sweeper,
            &page(&renders, &a1, &comments1, "ann", "t1"),
            Some(&etag),
        );
        let Conditional::Page {
            html,
            etag: Some(liked),
            ..
        } = &answer
        else {
            panic!("{name}: {answer:?}");
        };
        assert_ne!(*liked, etag, "{name}");
        assert!(html.contains("(1)"), "{name}: {html}");
        let (answer, _) = get(
            sweeper,
            &page(&renders, &a2, &comments2, "ann", "t1"),
            Some(&other),
        );
        assert_eq!(
            answer,
            Conditional::NotModified {
                etag: other,
                caching: Caching::Private
            },
            "{name}"
        );
        // The new one is stable, whether the page was stored or rendered again.
        for _ in 0..2 {
            let (answer, _) = get(
                sweeper,
                &page(&renders, &a1, &comments1, "ann", "t1"),
                Some(liked),
            );
            assert_eq!(
                answer,
                Conditional::NotModified {
                    etag: liked.clone(),
                    caching: Caching::Private,
                },
                "{name}"
            );
        }

        // A debug render has no validator; nor does a page whose counters cannot be read.
        let debug = sweeper
            .scope()
            .debug()
            .render_conditional(&page(&renders, &a1, &comments1, "ann", "t1"), Some(liked))
            .unwrap();
        assert!(
            matches!(debug, Conditional::Page { etag: None, .. }),
            "{name}"
        );
    }
}

/// A record deep inside: a comment's version is in its own fragment's key, and in the list's
/// stored dependencies. A validator that left the dependencies out would still change here
/// (the list's key names the article, which the comment touches); a record that touches
/// nothing above it is checked by its dependencies alone.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{%- filter cachesweeper::filters::cachesweeper(slug, 600, "outer") -%}
{%- filter cachesweeper::filters::cachesweeper(c, 600, "inner") -%}{{ c.body }}{%- endfilter -%}
{%- endfilter %}"#
)]
struct Outer<'a> {
    slug: &'a common::Page,
    #[sweeper(belongs_to = slug)]
    c: &'a Comment,
}

#[test]
fn a_change_at_any_depth_changes_the_validator() {
    for case in cases() {
        let name = case.name;
        let sweeper = &case.sweeper;
        let slug = common::Page {
            slug: "about".into(),
            revision: 1,
        };
        let mut c = comment(7, 1);
        known(sweeper, [&c]);
        let etag = etag_of(&get_outer(sweeper, &slug, &c, None));
        assert_eq!(
            get_outer(sweeper, &slug, &c, Some(&etag)),
            Conditional::NotModified {
                etag: etag.clone(),
                caching: Caching::Private
            },
            "{name}"
        );
        c.body = "edited".into();
        sweeper.invalidate(&c).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let answer = get_outer(sweeper, &slug, &c, Some(&etag));
        assert_ne!(etag_of(&answer), etag, "{name}: the inner comment changed");
    }
}

fn get_outer(
    sweeper: &Sweeper,
    slug: &common::Page,
    c: &Comment,
    inm: Option<&str>,
) -> Conditional {
    sweeper
        .scope()
        .render_conditional(&Outer { slug, c }, inm)
        .unwrap()
}
