//! The blog behind real Varnish (issue 24): Debian's varnishd with vmod xkey and the blog's
//! VCL (`examples/blog/varnish.vcl`), started on free loopback ports in front of the blog, which
//! is told where they are (`--varnish`).
//!
//! - A page everyone reads (a visitor without a cookie) is kept by Varnish: the second request
//!   never reaches the blog (its `/stats` count of pages answered stays put).
//! - A like purges exactly the pages that show that comment: the article, and the index, whose
//!   row is the article's (a like touches its article); another article stays kept. The next
//!   read through Varnish shows the like.
//! - A signed-in visitor's page is never kept: it carries their name and tokens.
//! - A page whose render read its comments before a like, and is answered after that like's
//!   purges went by, is not kept: the next read shows the like.
//! - Two Varnish instances are both purged; one that hangs (paused) neither fails the like nor
//!   misses its purge, which reaches it once it answers again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cachesweeper_suite::free_port;
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::varnish::VarnishProcess;
use common::blog::{Client, Page, Server, comment_counts, comment_ids};

/// A blog on memcached with `caches` Varnish instances in front of it.
struct Site {
    _memcached: MemcachedProcess,
    varnishes: Vec<VarnishProcess>,
    server: Server,
}

/// The site, or `None` outside CI when memcached or Varnish is missing; `extra` are more of
/// the blog's arguments.
fn site(caches: usize, extra: &[&str]) -> Option<Site> {
    let memcached = MemcachedProcess::start()?;
    let vcl = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/varnish.vcl");
    // Varnish first, pointed at the port the blog will take: the blog needs Varnish's
    // addresses to purge, and Varnish the blog's to fetch.
    let blog_port = free_port();
    let varnishes: Vec<VarnishProcess> = (0..caches)
        .map(|_| VarnishProcess::start(&vcl, blog_port))
        .collect::<Option<_>>()?;
    let addr = format!("127.0.0.1:{blog_port}");
    let mut args = vec![
        "--addr".to_owned(),
        addr,
        "--articles".to_owned(),
        "3".to_owned(),
        "--comments".to_owned(),
        "10".to_owned(),
        "--memcache".to_owned(),
        memcached.url(),
    ];
    for varnish in &varnishes {
        args.push("--varnish".to_owned());
        args.push(format!("127.0.0.1:{}", varnish.port()));
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    Some(Site {
        _memcached: memcached,
        varnishes,
        server,
    })
}

/// Pages the blog answered (200 or 304) so far.
fn pages(blog: &Client) -> u64 {
    let page = blog.get("/stats");
    let json: serde_json::Value = serde_json::from_str(&page.body).expect("/stats is JSON");
    json["pages"].as_u64().expect("/stats counts pages")
}

/// Whether Varnish answered `page` from what it kept.
fn kept(page: &Page) -> bool {
    page.header("x-varnish-cache") == Some("hit")
}

#[test]
fn varnish_keeps_what_everyone_reads_and_a_like_purges_exactly_its_pages() {
    let Some(site) = site(1, &[]) else {
        return;
    };
    let blog = Client::new(&site.server);
    let anyone = blog.without_cookie_at(&site.varnishes[0].url());

    // A page everyone reads: shared, tagged, no cookie set.
    let first = anyone.get("/articles/1");
    assert_eq!(first.status, 200);
    assert!(!kept(&first));
    let control = first.header("cache-control").unwrap_or_default();
    assert!(control.starts_with("public"), "Cache-Control {control:?}");
    let tags = first.header("xkey").expect("the records' tags");
    assert!(
        tags.split(' ').count() > 10,
        "the article and its comments: {tags}"
    );
    assert!(first.header("set-cookie").is_none());
    // Its forms carry no token: a visitor without a cookie has none.
    assert_eq!(
        first.body.matches("name=\"csrf\" value=\"").count(),
        first.body.matches("name=\"csrf\" value=\"\"").count(),
    );
    let etag = first.etag.clone().expect("an ETag");

    // Warm: answered by Varnish, the blog never asked.
    for path in ["/articles/1", "/articles/2", "/"] {
        anyone.get(path);
    }
    let before = pages(&blog);
    for _ in 0..5 {
        for path in ["/articles/1", "/articles/2", "/"] {
            let page = anyone.get(path);
            assert_eq!(page.status, 200);
            assert!(kept(&page), "{path} was not kept: {:?}", page.headers);
        }
    }
    // A revalidation is answered by Varnish too.
    let revalidated = anyone.get_if_none_match("/articles/1", &etag);
    assert_eq!(revalidated.status, 304);
    assert_eq!(pages(&blog) - before, 0, "a kept page reached the blog");

    // A signed-in visitor's page passes through and is never kept.
    let ann = blog.signed_in("ann").at(&site.varnishes[0].url());
    for _ in 0..2 {
        let page = ann.get("/articles/1");
        assert!(!kept(&page));
        assert!(
            page.body
                .contains("Signed in as <strong class=\"signed-in\">ann</strong>")
        );
        let control = page.header("cache-control").unwrap_or_default();
        assert!(control.contains("private"), "Cache-Control {control:?}");
        assert!(page.header("xkey").is_none());
    }
    assert!(!anyone.get("/articles/1").body.contains("Signed in as"));

    // ann likes a comment through Varnish (a POST passes to the blog).
    let ids = comment_ids(&first.body);
    let liked = ids[3];
    let likes = comment_counts(&first.body, liked).0;
    let page = ann.post(&format!("/articles/1/comments/{liked}/like"), None);
    assert_eq!(page.status, 303);

    // Purged: the article and the index; kept: the other article. The next read shows it.
    let article = anyone.get("/articles/1");
    assert!(!kept(&article), "the article was not purged");
    assert_eq!(comment_counts(&article.body, liked).0, likes + 1);
    assert_ne!(article.etag.as_deref(), Some(etag.as_str()));
    assert!(!kept(&anyone.get("/")), "the index was not purged");
    assert!(
        kept(&anyone.get("/articles/2")),
        "another article was purged"
    );
    // And kept again, with the like.
    let again = anyone.get("/articles/1");
    assert!(kept(&again));
    assert_eq!(comment_counts(&again.body, liked).0, likes + 1);

    // A visitor without a cookie who likes is sent to sign in: their page has no token.
    let page = anyone.post(&format!("/articles/1/comments/{liked}/like"), None);
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/signin?next=/articles/1"),
        "{page:?}"
    );
    // The article's number goes back into a header: the path's text, which could carry a line
    // break, is refused first.
    let direct = blog.without_cookie_at(&site.server.url);
    let page = direct.post("/articles/1%0D%0Ax/comments/1/like", None);
    assert_eq!(page.status, 404);
    assert!(page.location.is_none());
    // A query that does not parse is a sign-in page all the same, back to the index.
    let signin = direct.get("/signin?next=%zz");
    assert_eq!(signin.status, 200);
    assert!(
        signin.body.contains("name=\"next\" value=\"/\""),
        "{}",
        signin.body
    );
    // The sign-in page is theirs: it sets their cookie and is never kept.
    for _ in 0..2 {
        let signin = anyone.get("/signin?next=/articles/1");
        assert_eq!(signin.status, 200);
        assert!(signin.header("set-cookie").is_some());
        assert!(!kept(&signin));
    }
    assert_eq!(
        comment_counts(&anyone.get("/articles/1").body, liked).0,
        likes + 1
    );
}

#[test]
fn a_like_purges_every_varnish_and_one_that_hangs_once_it_answers() {
    let Some(site) = site(2, &[]) else {
        return;
    };
    let blog = Client::new(&site.server);
    let ann = blog.signed_in("ann");
    let readers: Vec<Client> = site
        .varnishes
        .iter()
        .map(|varnish| blog.without_cookie_at(&varnish.url()))
        .collect();
    let first = readers[0].get("/articles/1");
    let ids = comment_ids(&first.body);
    let liked = ids[0];
    let mut likes = comment_counts(&first.body, liked).0;
    for reader in &readers {
        reader.get("/articles/1");
        assert!(kept(&reader.get("/articles/1")));
    }

    // Both purged by one like.
    assert_eq!(
        ann.post(&format!("/articles/1/comments/{liked}/like"), None)
            .status,
        303
    );
    likes += 1;
    for reader in &readers {
        let page = reader.get("/articles/1");
        assert!(!kept(&page));
        assert_eq!(comment_counts(&page.body, liked).0, likes);
        assert!(kept(&reader.get("/articles/1")));
    }

    // The second Varnish hangs: likes still succeed (the first purge waits for it once, then
    // the purges it misses are kept for it), and the first Varnish is purged as before.
    site.varnishes[1].pause();
    for _ in 0..3 {
        let page = ann.post(&format!("/articles/1/comments/{liked}/like"), None);
        assert_eq!(page.status, 303);
        likes += 1;
        let page = readers[0].get("/articles/1");
        assert!(!kept(&page));
        assert_eq!(comment_counts(&page.body, liked).0, likes);
    }
    // Answering again, it is purged: within the retries' backoff (at most a second apart), its
    // kept page gives way to the current one.
    site.varnishes[1].resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = readers[1].get("/articles/1");
        if comment_counts(&page.body, liked).0 == likes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused Varnish was never purged: {}",
            site.server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        site.server.log().contains("HTTP cache purge failed"),
        "the failure was not logged: {}",
        site.server.log()
    );
}

/// What the blog logs when a render with `--slow-render-ms` begins its wait.
const SLOW_RENDER_WAITS: &str = "slow render: waiting";

#[test]
fn a_page_rendered_across_a_like_is_not_kept() {
    // Every render of an article page waits a second once it has read every version it shows:
    // a like in that wait is not seen by the render's reads, and its purges (50 ms apart) are
    // both gone by when the page reaches Varnish.
    let Some(site) = site(1, &["--slow-render-ms", "1000"]) else {
        return;
    };
    let blog = Client::new(&site.server);
    let ann = blog.signed_in("ann");
    let anyone = blog.without_cookie_at(&site.varnishes[0].url());
    let first = anyone.get("/articles/1");
    let liked = comment_ids(&first.body)[1];
    let likes = comment_counts(&first.body, liked).0;
    let like = || {
        let page = ann.post(&format!("/articles/1/comments/{liked}/like"), None);
        assert_eq!(page.status, 303);
    };
    // Purged: the next read through Varnish renders.
    like();
    // The first page's render has logged its wait (the log is read on a thread of its own).
    site.server.wait_for_log(SLOW_RENDER_WAITS);
    let waited = site.server.log().matches(SLOW_RENDER_WAITS).count();
    let slow = std::thread::scope(|threads| {
        let slow = threads.spawn(|| anyone.get("/articles/1"));
        // Into the render's wait, which comes after its reads.
        site.server.wait_for_logged(SLOW_RENDER_WAITS, waited + 1);
        like();
        slow.join().expect("the slow read")
    });
    // The slow page shows the comments as they were before the second like...
    assert_eq!(comment_counts(&slow.body, liked).0, likes + 1);
    // ...so Varnish must not keep it: the like was answered before the page arrived there.
    let after = anyone.get("/articles/1");
    assert_eq!(
        comment_counts(&after.body, liked).0,
        likes + 2,
        "{:?}",
        after.headers
    );
    assert_eq!(
        slow.header("cache-control"),
        Some("no-store"),
        "{:?}",
        slow.headers
    );
}
