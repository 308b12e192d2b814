//! Holes: per-request parts of cached blocks, filled by the page on every render and never
//! stored, on every backend, in real Askama templates.

use crate::common;

use askama::Template;
use cachesweeper::backend::Null;
use cachesweeper::{Hole, Holes, Sweeper};
use common::{Article, Comment, Renders, article, cases, comment, known};

/// An article's comments, each cached, with a Like form (its CSRF token is the viewer's) and an
/// edit link for the comment's author in holes; the list around them is cached too, so the
/// holes are nested two blocks deep.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<h1>{{ viewer }}</h1>
{%- filter cachesweeper::filters::cachesweeper(article, 600, "comments") -%}
<ol>{% for c in comments %}
{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}
{{ renders.tick("comment") }}<li>{{ c.author }}: {{ c.body }}
{{- "like"|cachesweeper::filters::hole(c.id) -}}
{{- "edit"|cachesweeper::filters::hole(c.id, c.author) }}</li>
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

/// A hole's fill: a small template, escaped as the page is.
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<form method="post" action="/comments/{{ id }}/like"><input type="hidden" name="csrf" value="{{ csrf }}"><button>Like</button></form>"#
)]
struct LikeForm<'a> {
    id: i64,
    csrf: &'a str,
}

impl Holes for ArticlePage<'_> {
    fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
        match hole.name() {
            "like" => LikeForm {
                id: hole.arg(0)?,
                csrf: self.csrf,
            }
            .render_into(out),
            "edit" if hole.arg::<String>(1)? == self.viewer => {
                out.push_str(&format!(
                    r#" <a href="/comments/{}/edit">edit</a>"#,
                    hole.arg::<i64>(0)?
                ));
                Ok(())
            }
            "edit" => Ok(()),
            _ => Err(hole.error("unknown hole")),
        }
    }
}

fn comments() -> Vec<Comment> {
    (1..=3)
        .map(|id| {
            let mut c = comment(id, 1);
            c.author = ["ann", "bob", "ann"][id as usize - 1].into();
            c
        })
        .collect()
}

/// What the page is without any cache (its renders counted apart).
fn uncached(page: &ArticlePage<'_>) -> String {
    let null = Sweeper::builder().backend(Null).build().unwrap();
    let renders = Renders::default();
    null.scope()
        .render(&ArticlePage {
            renders: &renders,
            ..*page
        })
        .unwrap()
}

#[test]
fn each_viewer_gets_their_own_holes_and_the_blocks_stay_hits() {
    let viewers = [("ann", r#"tok-ann-<"&'"#), ("bob", "tok-bob")];
    for case in cases() {
        let renders = Renders::default();
        let a = article(1);
        let cs = comments();
        known(&case.sweeper, [&a]);
        known(&case.sweeper, &cs);
        for round in 0..3 {
            for (viewer, csrf) in viewers {
                let page = ArticlePage {
                    article: &a,
                    comments: &cs,
                    renders: &renders,
                    viewer,
                    csrf,
                };
                let html = case.sweeper.scope().render(&page).unwrap();
                assert_eq!(
                    html,
                    uncached(&page),
                    "{} {viewer} round {round}",
                    case.name
                );
                let other = viewers.iter().find(|(v, _)| *v != viewer).unwrap();
                assert!(
                    !html.contains(&format!("value=\"{}", &other.1[..7])),
                    "{}: {viewer} sees {}'s token",
                    case.name,
                    other.0
                );
                let edits = html.matches("/edit\"").count();
                assert_eq!(edits, if viewer == "ann" { 2 } else { 1 }, "{}", case.name);
                assert_eq!(html.matches("name=\"csrf\"").count(), 3, "{}", case.name);
                if viewer == "ann" {
                    // Escaped once, by the fill's template.
                    assert!(html.contains("tok-ann-&#60;&#34;&#38;&#39;"), "{html}");
                }
            }
        }
        assert_eq!(
            renders.take().get("comment"),
            Some(&3),
            "{}: each comment rendered once, in the first render",
            case.name
        );
        let stats = case.sweeper.stats();
        assert_eq!(
            (stats.hits, stats.misses),
            (5, 4),
            "{}: after the first render, the list is one hit per page",
            case.name
        );
    }
}

#[test]
fn every_way_to_render_fills_the_holes_and_nothing_forges_them() {
    for case in cases() {
        let renders = Renders::default();
        let a = article(2);
        let mut cs = comments();
        // A comment that writes what a marker looks like: it stays text.
        cs[1].body = "\u{2}0000:0\u{3}".into();
        let page = ArticlePage {
            article: &a,
            comments: &cs,
            renders: &renders,
            viewer: "bob",
            csrf: "tok-bob",
        };
        let expected = uncached(&page);
        assert!(expected.contains("\u{2}0000:0\u{3}"), "{expected}");
        let sweeper = &case.sweeper;
        assert_eq!(
            sweeper.scope().render(&page).unwrap(),
            expected,
            "{}",
            case.name
        );
        assert_eq!(
            sweeper.scope().render(&page).unwrap(),
            expected,
            "{}: hit",
            case.name
        );
        assert_eq!(
            sweeper.scope().uncached().render(&page).unwrap(),
            expected,
            "{}: uncached",
            case.name
        );
        let debug = sweeper.scope().debug().render(&page).unwrap();
        assert_eq!(
            debug.matches("value=\"tok-bob\"").count(),
            3,
            "{}: debug",
            case.name
        );
        assert_eq!(
            debug.matches('\u{2}').count(),
            1,
            "{}: only the comment's",
            case.name
        );
        // Askama's own render has no page render to fill the holes: an error, as for blocks.
        assert!(page.render().is_err(), "{}", case.name);
    }
}

#[tokio::test]
async fn an_async_render_fills_them_too() {
    for case in cases() {
        let renders = Renders::default();
        let a = article(3);
        let cs = comments();
        let page = ArticlePage {
            article: &a,
            comments: &cs,
            renders: &renders,
            viewer: "ann",
            csrf: "tok-ann",
        };
        let expected = uncached(&page);
        for _ in 0..2 {
            let html = case.sweeper.scope().render_async(&page).await.unwrap();
            assert_eq!(html, expected, "{}", case.name);
        }
    }
}

/// A sub-template with a hole, cached with `cached()`.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<p>{{ comment.body }}{{ "like"|cachesweeper::filters::hole(comment.id) }}</p>"#
)]
struct CommentWithHole<'a> {
    comment: &'a Comment,
}

impl Holes for CommentWithHole<'_> {
    fn fill(&self, _: &Hole, _: &mut String) -> askama::Result<()> {
        unreachable!("a cached sub-template's holes are never filled")
    }
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{{ cachesweeper::cached(comment, 60, CommentWithHole { comment: self.comment }) }}"
)]
struct PageOfSubTemplate<'a> {
    comment: &'a Comment,
}

#[test]
fn a_cached_sub_template_cannot_have_holes() {
    let c = comment(9, 1);
    let error = Sweeper::embedded()
        .scope()
        .render(&PageOfSubTemplate { comment: &c })
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot have holes"), "{error}");
}
