//! End-to-end test of the blog example (`examples/blog`): the real binary, over real HTTP, on a
//! SQLite file, once with the embedded cache and once with a real memcached.
//!
//! The expected hit and miss figures follow from the article page's fragment structure
//! (`templates/blog/article.html` and `comment.html`):
//!
//! ```text
//! article body     fragment of the article
//! comment list     fragment of the article
//!   comment × N    fragment of each comment
//! ```
//!
//! A vote invalidates its comment, which touches the article: the next render misses the body,
//! the list and that comment, and takes the other N − 1 comments from the cache.

mod common;

use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::RedisCluster;
use common::blog::{Client, Server, TempFile, comment_counts, comment_ids};

/// Seed: articles, and comments per article.
const ARTICLES: u32 = 3;
const COMMENTS: u64 = 50;

/// Fragments of an article page keyed on the article itself: the body and the comment list.
const ARTICLE_FRAGMENTS: u64 = 2;

#[test]
fn blog_with_embedded_cache() {
    scenario("embedded", &[]);
}

#[test]
fn blog_with_memcached() {
    let Some(memcached) = MemcachedProcess::start() else {
        eprintln!("memcached is not installed: skipping the memcached half of the blog test");
        return;
    };
    scenario("memcached", &["--memcache", &memcached.url()]);
}

#[test]
fn blog_with_a_memcached_cluster() {
    let Some(servers) = (0..3)
        .map(|_| MemcachedProcess::start())
        .collect::<Option<Vec<_>>>()
    else {
        eprintln!("memcached is not installed: skipping the cluster half of the blog test");
        return;
    };
    let urls: Vec<String> = servers.iter().map(MemcachedProcess::url).collect();
    scenario("memcached cluster", &["--memcache", &urls.join(",")]);
    // Every server holds part of the blog's keys.
    for server in &servers {
        let items = curr_items(server.port());
        assert!(items > 10, "server {} holds {items} items", server.url());
    }
}

/// memcached's own count of the items it holds (`stats`, `curr_items`).
fn curr_items(port: u16) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"stats\r\n").unwrap();
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("STAT curr_items ") {
            return n.trim().parse().unwrap();
        }
        assert_ne!(line, "END", "no curr_items in stats");
    }
    unreachable!("memcached closed the connection")
}

fn scenario(backend: &str, cache_args: &[&str]) {
    let db = TempFile::new("sqlite3");
    let db_path = db.0.to_str().expect("temp dir path is UTF-8");
    let seed = ARTICLES.to_string();
    let comments = COMMENTS.to_string();
    let common = [
        "--addr",
        "127.0.0.1:0",
        "--db",
        db_path,
        "--articles",
        &seed,
    ];
    let cached = Server::start(&[&common[..], &["--comments", &comments], cache_args].concat());
    // Started second, on the same file: it finds the data there and does not seed.
    let uncached = Server::start(&[&common[..], &["--no-cache"]].concat());
    let blog = Client::new(&cached);
    let reference = Client::new(&uncached);
    let mut figures = Vec::new();

    // 1. A cold article page misses every fragment; the same page again misses none.
    let before = blog.stats();
    let cold = blog.get("/articles/1");
    assert_eq!(cold.status, 200);
    assert_eq!(cold.cache(), (0, ARTICLE_FRAGMENTS + COMMENTS), "cold page");
    figures.push((
        "cold",
        cold.cache(),
        blog.stats().round_trips - before.round_trips,
    ));
    let ids = comment_ids(&cold.body);
    assert_eq!(ids.len() as u64, COMMENTS);

    let before = blog.stats();
    let warm = blog.get("/articles/1");
    // The list fragment hits, so its comments are not even looked up.
    assert_eq!(warm.cache(), (ARTICLE_FRAGMENTS, 0), "warm page");
    let warm_stats = blog.stats().since(&before);
    figures.push(("warm", warm.cache(), warm_stats.round_trips));
    // Nor loaded: one statement, the article row (the comments are a `Lazy`). `/stats` itself
    // runs none.
    assert_eq!(
        warm_stats.db_queries, 1,
        "a warm article page runs one query"
    );
    assert_eq!(warm.body, cold.body);
    cached.wait_for_log("GET /articles/1 200 hits=2 misses=0");

    // Raw HTML in a comment is shown as text (the seed puts some in comment 8 of each article).
    assert!(!warm.body.contains("<script"), "raw HTML passed through");
    assert!(warm.body.contains("&lt;script&gt;alert"));

    // 2. A like: that comment's count goes up by one; only it and the fragments around it miss.
    let voted = ids[9];
    let likes = comment_counts(&warm.body, voted).0;
    let vote = blog.post(&format!("/articles/1/comments/{voted}/like"), None);
    assert_eq!(vote.status, 303);
    assert_eq!(
        vote.location.as_deref(),
        Some(format!("/articles/1#comment-{voted}").as_str())
    );
    let before = blog.stats();
    let after = blog.get("/articles/1");
    let rendered = 1 + ARTICLE_FRAGMENTS;
    assert_eq!(after.cache(), (COMMENTS - 1, rendered), "page after a like");
    figures.push((
        "voted",
        after.cache(),
        blog.stats().round_trips - before.round_trips,
    ));
    assert_eq!(comment_counts(&after.body, voted).0, likes + 1);
    for &other in ids.iter().filter(|&&id| id != voted) {
        assert_eq!(
            comment_counts(&after.body, other),
            comment_counts(&warm.body, other),
            "comment {other} changed"
        );
    }
    let dislikes = comment_counts(&after.body, voted).1;
    assert_eq!(
        blog.post(&format!("/articles/1/comments/{voted}/dislike"), None)
            .status,
        303
    );
    let after = blog.get("/articles/1");
    assert_eq!(
        after.cache(),
        (COMMENTS - 1, rendered),
        "page after a dislike"
    );
    assert_eq!(comment_counts(&after.body, voted).1, dislikes + 1);

    // 3. Byte for byte what the uncached server renders from the same database, whether the
    // page was half re-rendered (above) or came whole from the cache (below).
    assert_eq!(after.body, reference.get("/articles/1").body);
    let warm = blog.get("/articles/1");
    assert_eq!(warm.cache(), (ARTICLE_FRAGMENTS, 0));
    assert_eq!(warm.body, reference.get("/articles/1").body);

    // 4. Bad input: 404 for what does not exist, 400 for bad fields, and nothing stored.
    let other_article = blog.get("/articles/2");
    let foreign_comment = comment_ids(&other_article.body)[0];
    for path in ["/articles/999", "/articles/0", "/articles/abc", "/nowhere"] {
        let page = blog.get(path);
        assert_eq!(page.status, 404, "GET {path}");
        assert!(page.body.contains("<h1>Not Found</h1>"), "GET {path}");
    }
    let unknown_votes = [
        format!("/articles/999/comments/{voted}/like"),
        "/articles/1/comments/999999/like".to_owned(),
        format!("/articles/1/comments/{foreign_comment}/like"),
        format!("/articles/1/comments/{foreign_comment}/dislike"),
        format!("/articles/x/comments/{voted}/dislike"),
        "/articles/1/comments/x/dislike".to_owned(),
    ];
    for path in &unknown_votes {
        assert_eq!(blog.post(path, None).status, 404, "POST {path}");
    }
    // Writing comments takes signing in; names are checked at the door.
    let ann = blog.signed_in("ann");
    let good = [("body", "hello")];
    assert_eq!(blog.post("/articles/1/comments", Some(&good)).status, 403);
    assert_eq!(ann.post("/articles/999/comments", Some(&good)).status, 404);
    let long_name = "a".repeat(41);
    for name in ["", "  ", "a b", "é", "<script>", long_name.as_str()] {
        let page = blog.post("/signin", Some(&[("name", name)]));
        assert_eq!(page.status, 400, "name {name:?}");
        assert!(page.body.contains("A name is"), "no message for {name:?}");
    }

    let long_body = "x".repeat(10_001);
    let bad_forms: [&[(&str, &str)]; 3] = [&[("body", " \n ")], &[], &[("body", &long_body)]];
    for form in bad_forms {
        let page = ann.post("/articles/1/comments", Some(form));
        assert_eq!(page.status, 400, "form {:?}", abbreviated(form));
        assert!(
            page.body.contains("must"),
            "no message for {:?}",
            abbreviated(form)
        );
    }
    let unchanged = blog.get("/articles/1");
    assert_eq!(
        unchanged.cache(),
        (ARTICLE_FRAGMENTS, 0),
        "something was invalidated"
    );
    assert_eq!(unchanged.body, warm.body, "something was stored");
    assert_eq!(comment_ids(&unchanged.body).len() as u64, COMMENTS);
    assert_eq!(blog.get("/articles/2").body, other_article.body);

    // The longest body accepted: a new comment, which misses alone with the article's
    // fragments.
    let script = "\n\n<script>alert(2)</script>";
    let body = format!("{}{script}", "y".repeat(10_000 - script.chars().count()));
    let added = ann.post("/articles/1/comments", Some(&[("body", &body)]));
    assert_eq!(added.status, 303);
    let location = added.location.expect("a Location header");
    assert!(location.starts_with("/articles/1#comment-"), "{location}");
    let page = blog.get("/articles/1");
    assert_eq!(
        page.cache(),
        (COMMENTS, rendered),
        "page after a new comment"
    );
    assert_eq!(comment_ids(&page.body).len() as u64, COMMENTS + 1);
    assert!(page.body.contains("<strong>ann</strong>"));
    assert!(!page.body.contains("<script"));
    assert_eq!(page.body, reference.get("/articles/1").body);
    // ann sees her comment's controls, on the cached page as on the uncached one.
    let mine = ann.get("/articles/1").body;
    assert_eq!(mine.matches("class=\"own\"").count(), 1);
    assert_eq!(mine, ann.on(&uncached).get("/articles/1").body);

    // Every page, cached or not, is the same.
    for path in ["/", "/articles/2", "/articles/3", "/", "/articles/3"] {
        assert_eq!(blog.get(path).body, reference.get(path).body, "GET {path}");
    }

    // Writes from outside the blog, `sqlite3` on its file: a like on every comment of the
    // article and a comment deleted. The change log's follower applies them (within its lag):
    // the article and the index, which counts comments, become what the uncached blog shows.
    let sqlite3 = std::env::var("SQLITE3").unwrap_or_else(|_| "sqlite3".to_owned());
    let output = std::process::Command::new(&sqlite3)
        .args(["-cmd", ".timeout 10000", db_path])
        .arg(
            "UPDATE comments SET likes = likes + 1 WHERE article_id = 1;
             DELETE FROM comments WHERE id = (SELECT max(id) FROM comments WHERE article_id = 1);",
        )
        .output()
        .expect("run sqlite3 (scripts/test.sh installs it)");
    assert!(output.status.success(), "sqlite3: {output:?}");
    for path in ["/articles/1", "/"] {
        let expected = reference.get(path).body;
        let started = std::time::Instant::now();
        while blog.get(path).body != expected {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{backend}: GET {path} never showed the writes made with sqlite3"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    assert_eq!(
        comment_ids(&blog.get("/articles/1").body).len() as u64,
        COMMENTS
    );

    // /stats: the counters of every request together, matching the headers' sum.
    let stats = blog.stats();
    let (totals, ann_totals) = (blog.header_totals(), ann.header_totals());
    assert_eq!(
        (stats.hits, stats.misses),
        (totals.0 + ann_totals.0, totals.1 + ann_totals.1),
        "/stats against the sum of X-Fragment-Cache headers"
    );
    assert_eq!(stats.errors, 0);
    assert!(stats.invalidations >= 3, "{stats:?}");
    assert_eq!(reference.stats().hits, 0, "the uncached server hit");

    // Constant round trips per page (Sweeper::render): two per level of fragments that misses
    // (versions, then fragments) plus one batched write; warm, the versions (the article's,
    // with those of the comments its list holds) and its list fragment, or only the versions
    // where the L1 holds the fragments (memcached). After a vote, the comments' versions come
    // with the article's: the second level needs no batch of its own.
    // Memcached (one server or several) has the L1 in front: a warm page asks only versions.
    let warm_round_trips = if backend.starts_with("memcached") {
        1
    } else {
        2
    };
    let expected = [("cold", 5), ("warm", warm_round_trips), ("voted", 4)];
    for ((page, _, round_trips), (expected_page, expected_round_trips)) in
        figures.iter().zip(expected)
    {
        assert_eq!(
            (*page, *round_trips),
            (expected_page, expected_round_trips),
            "{backend}: round trips"
        );
    }
    for (page, (hits, misses), round_trips) in figures {
        eprintln!(
            "{backend}: article page of {COMMENTS} comments, {page}: hits={hits} misses={misses} round_trips={round_trips}"
        );
    }
}

/// A form with long values cut short, for messages.
fn abbreviated<'a>(form: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    form.iter()
        .map(|&(name, value)| (name, value.chars().take(12).collect()))
        .collect()
}

/// Issue 20, also seen: on a fresh three-master Redis Cluster, right after two blog processes
/// start on one database, the second view of an article missed most of its fragments in 2 of
/// 3 runs. Not reproduced here (this checks every view after the first is warm, in either
/// process, alternating), on this code or the code before issue 20; kept as a guard.
#[test]
fn views_after_the_first_are_warm_from_either_process_on_a_fresh_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let db = TempFile::new("sqlite3");
    let urls = cluster.urls();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--db",
        db.arg(),
        "--redis-cluster",
        &urls,
    ];
    let (first, second) = (Server::start(&args), Server::start(&args));
    let (a, b) = (Client::new(&first), Client::new(&second));
    let views: Vec<(u64, u64)> = (0..4)
        .map(|i| if i % 2 == 0 { &a } else { &b }.get("/articles/2").cache())
        .collect();
    assert_eq!(views[0].0, 0, "the first view renders: {views:?}");
    for view in &views[1..] {
        assert_eq!(*view, (ARTICLE_FRAGMENTS, 0), "{views:?}");
    }
}
