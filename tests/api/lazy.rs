//! Lazy page data: a query behind `Lazy` runs only when a fragment that reads it misses, at most
//! once per page, through every way of rendering a page; its error is the render's error.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};

use askama::Template;
use cachesweeper::Lazy;
use common::{Article, Comment, article, cases, comment, known};

mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

/// The article page with its comments loaded lazily, inside the list fragment.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper(article, 600, "header") %}<h1>{{ article.title }}</h1>{% endfilter %}
{% filter cachesweeper(article, 600, "list") -%}
{%- let comments = comments.get()? -%}
<ol data-count="{{ comments.len() }}">
{%- for comment in comments -%}
{% filter cachesweeper(comment, 600, "comment") %}<li id="c{{ comment.id }}" data-likes="{{ comment.likes }}">{{ comment.body }}</li>{% endfilter %}
{%- endfor -%}
</ol>
{%- endfilter %}"#
)]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: Lazy<'a, Vec<Comment>>,
}

/// The ways a page is rendered.
#[derive(Debug, Clone, Copy)]
enum Path {
    Render,
    RenderAsync,
}

const PATHS: [Path; 2] = [Path::Render, Path::RenderAsync];

fn render(s: &cachesweeper::Sweeper, page: &ArticlePage<'_>, path: Path) -> askama::Result<String> {
    match path {
        Path::Render => s.scope().render(page),
        Path::RenderAsync => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(s.scope().render_async(page)),
    }
}

#[test]
fn a_warm_page_never_loads_its_lazy_data() {
    for case in cases() {
        for path in PATHS {
            let s = &case.sweeper;
            let article = Article {
                title: format!("{path:?}"),
                ..article(1 + path as i64)
            };
            let mut rows: Vec<Comment> = (1..=10).map(|id| comment(id, article.id)).collect();
            known(s, [&article]);
            known(s, &rows);
            let loads = AtomicU32::new(0);
            let page = |rows: &[Comment]| {
                let page = ArticlePage {
                    article: &article,
                    comments: Lazy::new(|| {
                        loads.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(rows.to_vec())
                    }),
                };
                let html = render(s, &page, path).unwrap();
                (html, loads.swap(0, Ordering::Relaxed))
            };
            let what = format!("{} {path:?}", case.name);

            // Cold: the list's body renders (in a record pass, to find its comments, then for
            // real), and the query runs once.
            let (cold, cold_loads) = page(&rows);
            assert_eq!(cold_loads, 1, "{what}: cold");
            assert!(cold.contains(r#"data-count="10""#), "{what}: {cold}");
            // Warm: the list hits, and nothing reads the comments.
            let (warm, warm_loads) = page(&rows);
            assert_eq!(warm, cold, "{what}");
            assert_eq!(warm_loads, 0, "{what}: a warm page runs no query");

            // A vote: the list misses (the comment is inside it), and loads once.
            rows[3].likes += 1;
            s.invalidate(&rows[3]).unwrap();
            let (voted, voted_loads) = page(&rows);
            assert_eq!(voted_loads, 1, "{what}: after a vote");
            assert!(voted.contains(r#"id="c4" data-likes="1""#), "{what}");
        }
    }
}

#[test]
fn a_failing_loader_fails_the_render_and_stores_nothing() {
    for case in cases() {
        for path in PATHS {
            let s = &case.sweeper;
            let article = article(10 + path as i64);
            known(s, [&article]);
            known(s, [&comment(99, article.id)]);
            let what = format!("{} {path:?}", case.name);
            let failing = ArticlePage {
                article: &article,
                comments: Lazy::new(|| Err::<Vec<Comment>, _>("database is locked")),
            };
            let error = render(s, &failing, path).unwrap_err();
            assert!(
                format!("{error}").contains("database is locked"),
                "{what}: {error}"
            );

            // The next render loads and stores: nothing of the failed one was kept.
            let loads = AtomicU32::new(0);
            let working = || ArticlePage {
                article: &article,
                comments: Lazy::new(|| {
                    loads.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(vec![comment(99, article.id)])
                }),
            };
            let html = render(s, &working(), path).unwrap();
            assert!(html.contains(r#"id="c99""#), "{what}: {html}");
            assert_eq!(render(s, &working(), path).unwrap(), html, "{what}");
            assert_eq!(
                loads.load(Ordering::Relaxed),
                1,
                "{what}: stored once loaded"
            );
        }
    }
}
