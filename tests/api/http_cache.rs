//! Which caches may keep a page (issue 24), on every backend: a shared cache only a page that
//! is everyone's, whose every record is tagged, and that no write raced; and the purges that
//! reach real Varnish caches, or are kept for one that hangs until it answers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::common;

use askama::Template;
use cachesweeper::http_cache::{Audience, Caching, HttpCaches, TagHeader};
use cachesweeper::{Conditional, Error, Hole, Holes, Sweeper, TemplateDigest};
use cachesweeper_suite::free_port;
use cachesweeper_suite::varnish::VarnishProcess;
use common::{Article, Comment, article, cases, comment, known};

/// An article's comments (Russian dolls), a hole in each comment, the viewer outside.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"<header>{{ viewer }}</header>
{%- filter cachesweeper::filters::cachesweeper(article, 600, "comments") -%}
<ol>{% for c in comments %}
{%- filter cachesweeper::filters::cachesweeper(c, 600, "comment") -%}
<li>{{ c.body }} ({{ c.likes }}){{ "vote"|cachesweeper::filters::hole }}</li>
{%- endfilter %}{% endfor %}</ol>
{%- endfilter %}"#
)]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    viewer: &'a str,
    /// Whether this request's fills are everyone's.
    everyones: bool,
    /// A write to make while the holes are filled (after every version was read), once.
    write_during: Option<(&'a Sweeper, &'a Comment, AtomicBool)>,
}

impl Holes for ArticlePage<'_> {
    fn fill(&self, _: &Hole, out: &mut String) -> askama::Result<()> {
        if let Some((sweeper, comment, written)) = &self.write_during
            && !written.swap(true, Ordering::SeqCst)
        {
            sweeper.invalidate(*comment).unwrap();
        }
        out.push_str(if self.everyones {
            "vote"
        } else {
            "vote as ann"
        });
        Ok(())
    }

    fn shared(&self) -> bool {
        self.everyones
    }
}

/// A page with no block: nothing on it is known, so nothing would purge it.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(ext = "html", source = "<p>{{ text }}</p>")]
struct PlainPage<'a> {
    text: &'a str,
}

fn page<'a>(article: &'a Article, comments: &'a [Comment], everyones: bool) -> ArticlePage<'a> {
    ArticlePage {
        article,
        comments,
        viewer: "",
        everyones,
        write_during: None,
    }
}

/// Article `id` with the comments `ids`, whose versions `sweeper` knows (as the application's
/// earlier requests would have given them).
fn known_article(
    sweeper: &Sweeper,
    id: i64,
    ids: std::ops::RangeInclusive<i64>,
) -> (Article, Vec<Comment>) {
    let a = article(id);
    let comments: Vec<Comment> = ids.map(|c| comment(c, id)).collect();
    known(sweeper, [&a]);
    known(sweeper, &comments);
    (a, comments)
}

/// The sweeper of `sweeper`'s backend, with an HTTP cache in front that is not there (the
/// decisions are what is tested here; its purges are kept to retry, and nobody waits on them).
fn with_caches(sweeper: &Sweeper) -> Sweeper {
    let nowhere = format!("127.0.0.1:{}", free_port());
    Sweeper::builder()
        .backend(Arc::clone(sweeper.backend()))
        .http_caches(HttpCaches::purge_to([nowhere]).tag_header(TagHeader::SurrogateKey))
        .build()
        .unwrap()
}

/// What `sweeper` answers a request of `audience` for `page` with.
fn caching<T: Template + TemplateDigest>(
    scope: cachesweeper::Scope,
    audience: Audience,
    page: &T,
) -> Caching {
    match scope.for_audience(audience).render_conditional(page, None) {
        Ok(Conditional::Page { caching, .. }) => caching,
        other => panic!("not a page: {other:?}"),
    }
}

fn tags(caching: &Caching) -> BTreeSet<String> {
    match caching {
        Caching::Shared { tags, .. } => tags.iter().cloned().collect(),
        other => panic!("not shared: {other:?}"),
    }
}

#[test]
fn only_a_page_that_is_everyones_may_be_shared() {
    for case in cases() {
        let name = case.name;
        let shared = with_caches(&case.sweeper);
        let (a, comments) = known_article(&shared, 1, 1..=3);
        let everyones = page(&a, &comments, true);

        // Shared: tagged with the article and each comment, the same on a warm render.
        let cold = caching(shared.scope(), Audience::Anyone, &everyones);
        let warm = caching(shared.scope(), Audience::Anyone, &everyones);
        assert!(matches!(cold, Caching::Shared { .. }), "{name}: {cold:?}");
        assert_eq!(tags(&cold).len(), 1 + comments.len(), "{name}: {cold:?}");
        assert_eq!(tags(&cold), tags(&warm), "{name}");
        let headers = warm.headers();
        let header = |n: &str| {
            headers
                .iter()
                .find(|(h, _)| *h == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("cache-control"),
            Some("public, max-age=0, s-maxage=86400"),
            "{name}"
        );
        assert_eq!(
            header("surrogate-key").map(|v| v.split(' ').count()),
            Some(4)
        );
        assert!(header("cachesweeper-store-by").is_some(), "{name}");
        // Another article of two comments: its own three tags.
        let (b, others) = known_article(&shared, 2, 4..=5);
        let other = caching(shared.scope(), Audience::Anyone, &page(&b, &others, true));
        assert_eq!(tags(&other).len(), 3, "{name}: {other:?}");
        assert!(tags(&cold).is_disjoint(&tags(&other)), "{name}");

        // One viewer's request, a viewer's holes, no HTTP cache: the viewer's browser only.
        for (why, answer) in [
            (
                "a viewer",
                caching(shared.scope(), Audience::Viewer, &everyones),
            ),
            (
                "a viewer's holes",
                caching(
                    shared.scope(),
                    Audience::Anyone,
                    &page(&a, &comments, false),
                ),
            ),
            (
                "no HTTP cache",
                caching(case.sweeper.scope(), Audience::Anyone, &everyones),
            ),
            (
                "no record on it",
                caching(shared.scope(), Audience::Anyone, &PlainPage { text: "hi" }),
            ),
        ] {
            assert_eq!(answer, Caching::Private, "{name}: {why}");
        }
        // No validator: no cache.
        for (why, scope) in [
            ("debug", shared.scope().debug()),
            ("uncached", shared.scope().uncached()),
        ] {
            assert_eq!(
                caching(scope, Audience::Anyone, &everyones),
                Caching::NoStore,
                "{name}: {why}"
            );
        }
    }
}

#[test]
fn a_page_a_write_raced_is_kept_by_no_cache() {
    for case in cases() {
        let name = case.name;
        let shared = with_caches(&case.sweeper);
        let (a, comments) = known_article(&shared, 1, 1..=3);
        let everyones = page(&a, &comments, true);
        assert!(matches!(
            caching(shared.scope(), Audience::Anyone, &everyones),
            Caching::Shared { .. }
        ));

        // Invalidated after the request began, before its render: the store rule's case.
        let scope = shared.scope();
        shared.invalidate(&comments[1]).unwrap();
        assert_eq!(
            caching(scope, Audience::Anyone, &everyones),
            Caching::NoStore,
            "{name}: invalidated before the render"
        );
        std::thread::sleep(Duration::from_millis(2));

        // Invalidated during the render, after every version it shows was read: only the
        // read after the render sees it.
        let racing = ArticlePage {
            write_during: Some((&shared, &comments[2], AtomicBool::new(false))),
            ..page(&a, &comments, true)
        };
        assert_eq!(
            caching(shared.scope(), Audience::Anyone, &racing),
            Caching::NoStore,
            "{name}: invalidated during the render"
        );
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            matches!(
                caching(shared.scope(), Audience::Anyone, &everyones),
                Caching::Shared { .. }
            ),
            "{name}: the next render"
        );
    }
}

#[test]
fn purges_reach_every_cache_and_wait_for_one_that_hangs() {
    let vcl = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/varnish.vcl");
    // Nothing is fetched through them here: only purged.
    let backend = free_port();
    let Some(first) = VarnishProcess::start(&vcl, backend) else {
        return;
    };
    let Some(second) = VarnishProcess::start(&vcl, backend) else {
        return;
    };
    let sweeper = Sweeper::builder()
        .http_caches(
            HttpCaches::purge_to([
                format!("127.0.0.1:{}", first.port()),
                format!("127.0.0.1:{}", second.port()),
            ])
            .timeout(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let a = article(1);
    sweeper.invalidate(&a).unwrap();
    sweeper.flush(Duration::from_secs(5)).unwrap();

    // One hangs: the write succeeds, the purge is kept for it.
    second.pause();
    sweeper.invalidate(&a).unwrap();
    sweeper.invalidate(&comment(1, 1)).unwrap();
    assert!(matches!(
        sweeper.flush(Duration::from_millis(300)),
        Err(Error::PurgePending)
    ));
    second.resume();
    sweeper.flush(Duration::from_secs(10)).unwrap();
    // No cache at all: refused, since nothing would purge a shared page.
    let none = Sweeper::builder()
        .http_caches(HttpCaches::purge_to(Vec::<String>::new()))
        .build();
    assert!(matches!(none, Err(Error::Config(_))));
    // A cache that is not there at all: the same as one that hangs.
    let gone = format!("127.0.0.1:{}", free_port());
    let sweeper = Sweeper::builder()
        .http_caches(HttpCaches::purge_to([gone]))
        .build()
        .unwrap();
    sweeper.invalidate(&a).unwrap();
    assert!(matches!(
        sweeper.flush(Duration::from_millis(200)),
        Err(Error::PurgePending)
    ));
}

/// The article's title, cached.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(article, 60, "title") %}<h1>{{ article.title }}</h1>{% endfilter %}"#
)]
struct TitlePage {
    article: Article,
}

#[test]
fn a_shared_page_that_sets_a_cookie_is_one_viewers() {
    use axum::http::{HeaderValue, header};
    use axum::response::Response;

    let sweeper = with_caches(&Sweeper::embedded());
    known(&sweeper, [&article(1)]);
    // A handler that answers with the page, then signs the visitor in.
    async fn signs_in(scope: cachesweeper::Scope) -> Response {
        let mut response = scope
            .respond(&TitlePage {
                article: article(1),
            })
            .await;
        response
            .headers_mut()
            .insert(header::SET_COOKIE, HeaderValue::from_static("who=ann"));
        response
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let serve = |guarded: bool| {
        let router = axum::Router::new().route("/", axum::routing::get(signs_in));
        let router = if guarded {
            router.layer(cachesweeper::axum::CookieGuard)
        } else {
            router
        };
        let app = router.with_state(sweeper.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        url
    };
    let get = |url: &str| {
        let response = ureq::get(url).call().unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (header("cache-control"), header("surrogate-key"))
    };
    // Without the guard the cookie goes out on a page any cache may keep...
    let (control, tags) = get(&serve(false));
    assert!(control.unwrap().starts_with("public"));
    assert!(tags.is_some());
    // ...with it, on one only its viewer's browser keeps.
    let (control, tags) = get(&serve(true));
    assert_eq!(control.as_deref(), Some("private, no-cache"));
    assert_eq!(tags, None);
}

/// A server that answers every `GET` with the value of `body` when the request arrived, after
/// `delay`, tagged with `tag` and to be kept by a shared cache for a minute, as long as it is
/// stored within a minute. It says on the channel when it has read `body`.
fn slow_origin(
    tag: String,
    delay: Duration,
    body: Arc<AtomicU32>,
) -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (read, has_read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (tag, body, read) = (tag.clone(), Arc::clone(&body), read.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let text = format!("v{}", body.load(Ordering::SeqCst));
                let _ = read.send(());
                std::thread::sleep(delay);
                let store_by = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 60;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: public, s-maxage=60\r\n\
                     xkey: {tag}\r\ncachesweeper-store-by: {store_by}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (port, has_read)
}

#[test]
fn a_page_on_its_way_during_the_first_purge_is_taken_by_the_second() {
    // The page leaves the origin 400 ms after it read the record; the write lands once it has,
    // so its first purge reaches Varnish before the page does. The second, a second later,
    // comes after it.
    let vcl = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/varnish.vcl");
    let sweeper_of = |varnish: &VarnishProcess| {
        Sweeper::builder()
            .http_caches(
                HttpCaches::purge_to([format!("127.0.0.1:{}", varnish.port())])
                    .settle(Duration::from_secs(1)),
            )
            .build()
            .unwrap()
    };
    let a = article(1);
    let body = Arc::new(AtomicU32::new(1));
    let tag = Sweeper::embedded().http_tag(&a);
    let (origin, origin_read) = slow_origin(tag, Duration::from_millis(400), Arc::clone(&body));
    let Some(varnish) = VarnishProcess::start(&vcl, origin) else {
        return;
    };
    let sweeper = sweeper_of(&varnish);
    assert_eq!(sweeper.http_tag(&a), Sweeper::embedded().http_tag(&a));
    let url = format!("{}/a", varnish.url());
    let get = || {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    let old = std::thread::scope(|threads| {
        let old = threads.spawn(get);
        origin_read
            .recv_timeout(Duration::from_secs(10))
            .expect("the request reached the origin");
        body.store(2, Ordering::SeqCst);
        sweeper.invalidate(&a).unwrap();
        old.join().unwrap()
    });
    assert_eq!(
        old, "v1",
        "the page on its way shows the record before the write"
    );
    assert_eq!(get(), "v2", "kept after the write's purges");
}
