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

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use cachesweeper_suite::memcached::MemcachedProcess;

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
    figures.push((
        "warm",
        warm.cache(),
        blog.stats().round_trips - before.round_trips,
    ));
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
    let good = [("author", "ann"), ("body", "hello")];
    assert_eq!(blog.post("/articles/999/comments", Some(&good)).status, 404);

    let long_author = "é".repeat(101);
    let long_body = "x".repeat(10_001);
    let bad_forms: [&[(&str, &str)]; 6] = [
        &[("author", ""), ("body", "hello")],
        &[("author", "  \t "), ("body", "hello")],
        &[("author", "ann"), ("body", " \n ")],
        &[("author", "ann")],
        &[("author", &long_author), ("body", "hello")],
        &[("author", "ann"), ("body", &long_body)],
    ];
    for form in bad_forms {
        let page = blog.post("/articles/1/comments", Some(form));
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

    // The longest author and body accepted: a new comment, which misses alone with the
    // article's fragments.
    let author = format!("  {}  ", "é".repeat(100));
    let script = "\n\n<script>alert(2)</script>";
    let body = format!("{}{script}", "y".repeat(10_000 - script.chars().count()));
    let added = blog.post(
        "/articles/1/comments",
        Some(&[("author", &author), ("body", &body)]),
    );
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
    assert!(
        page.body
            .contains(&format!("<strong>{}</strong>", "é".repeat(100)))
    );
    assert!(!page.body.contains("<script"));
    assert_eq!(page.body, reference.get("/articles/1").body);

    // Every page, cached or not, is the same.
    for path in ["/", "/articles/2", "/articles/3", "/", "/articles/3"] {
        assert_eq!(blog.get(path).body, reference.get(path).body, "GET {path}");
    }

    // /stats: the counters of every request together, matching the headers' sum.
    let stats = blog.stats();
    assert_eq!(
        (stats.hits, stats.misses),
        blog.header_totals(),
        "/stats against the sum of X-Fragment-Cache headers"
    );
    assert_eq!(stats.errors, 0);
    assert!(stats.invalidations >= 3, "{stats:?}");
    assert_eq!(reference.stats().hits, 0, "the uncached server hit");

    // Constant round trips per page (Sweeper::render): two per level of fragments that misses
    // (versions, then fragments) plus one batched write; warm, the article's version and its
    // list fragment, or only the version where the L1 holds the fragments (memcached).
    let warm_round_trips = if backend == "memcached" { 1 } else { 2 };
    let expected = [("cold", 5), ("warm", warm_round_trips), ("voted", 5)];
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

/// The blog binary, built by cargo (plain `cargo test` builds examples before the tests run):
/// `target/<profile>/examples/blog`, beside this test's `target/<profile>/deps/`.
///
/// `cargo test --test blog_e2e` builds only this test, which could leave an old binary: if it
/// is missing or older than the example's sources, it is rebuilt once with the same cargo.
fn blog_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps/");
        let binary = profile_dir
            .join("examples")
            .join(format!("blog{}", std::env::consts::EXE_SUFFIX));
        let debug = profile_dir.file_name().is_some_and(|name| name == "debug");
        if debug && !up_to_date(&binary) {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--example", "blog"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo to build the blog example");
            assert!(status.success(), "`cargo build --example blog` failed");
        }
        assert!(
            binary.is_file(),
            "the blog example is not built: {} is missing. Run `cargo build --example blog` \
             (plain `cargo test` builds it before running the tests).",
            binary.display()
        );
        binary
    })
}

/// Whether `binary` exists and is newer than every source of the blog example.
fn up_to_date(binary: &Path) -> bool {
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = modified(&root.join("Cargo.toml")).unwrap_or(SystemTime::UNIX_EPOCH);
    for dir in ["examples/blog", "templates/blog"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            newest = newest.max(modified(&entry.path()).unwrap_or(SystemTime::UNIX_EPOCH));
        }
    }
    built >= newest
}

/// A running blog server; killed when dropped.
struct Server {
    child: Child,
    url: String,
    /// Everything it logged to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(blog_binary())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the blog example");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(url) = line.trim().strip_prefix("blog listening on ") else {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the blog did not print its URL (args {args:?}); first line {line:?}; log:\n{}",
                server.log.lock().unwrap()
            );
        };
        server.url = url.to_owned();
        server
    }

    /// Waits (up to 5 s) until the server has logged `line`.
    fn wait_for_log(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log.lock().unwrap().contains(line) {
            assert!(
                Instant::now() < deadline,
                "the server never logged {line:?}; log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client of one server, which follows no redirects and adds up the cache figures of
/// every response.
struct Client {
    agent: ureq::Agent,
    url: String,
    totals: Mutex<(u64, u64)>,
}

/// A response, read whole.
struct Page {
    status: u16,
    /// `X-Fragment-Cache: hits=H misses=M`.
    cache: Option<(u64, u64)>,
    location: Option<String>,
    body: String,
}

impl Page {
    /// The cache figures, which every HTML response must carry.
    fn cache(&self) -> (u64, u64) {
        self.cache.expect("no X-Fragment-Cache header")
    }
}

/// The counters of `GET /stats` that the test reads.
#[derive(Debug)]
struct Stats {
    hits: u64,
    misses: u64,
    errors: u64,
    round_trips: u64,
    invalidations: u64,
}

impl Client {
    fn new(server: &Server) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Client {
            agent: config.into(),
            url: server.url.clone(),
            totals: Mutex::new((0, 0)),
        }
    }

    fn get(&self, path: &str) -> Page {
        let response = self.agent.get(format!("{}{path}", self.url)).call();
        self.read(response.unwrap_or_else(|e| panic!("GET {path}: {e}")))
    }

    /// POSTs `form` (or an empty body).
    fn post(&self, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let request = self.agent.post(format!("{}{path}", self.url));
        let response = match form {
            Some(form) => request.send_form(form.iter().copied()),
            None => request.send_empty(),
        };
        self.read(response.unwrap_or_else(|e| panic!("POST {path}: {e}")))
    }

    fn read(&self, mut response: ureq::http::Response<ureq::Body>) -> Page {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().expect("ASCII header").to_owned())
        };
        let cache = header("x-fragment-cache").map(|value| parse_figures(&value));
        let location = header("location");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("a UTF-8 body");
        if let Some((hits, misses)) = cache {
            let mut totals = self.totals.lock().unwrap();
            totals.0 += hits;
            totals.1 += misses;
        } else if response_is_html(&response) {
            panic!("an HTML response without X-Fragment-Cache (status {status})");
        }
        Page {
            status,
            cache,
            location,
            body,
        }
    }

    fn header_totals(&self) -> (u64, u64) {
        *self.totals.lock().unwrap()
    }

    fn stats(&self) -> Stats {
        let page = self.get("/stats");
        assert_eq!(page.status, 200);
        let json: serde_json::Value = serde_json::from_str(&page.body).expect("/stats is JSON");
        let counter = |name: &str| {
            json[name]
                .as_u64()
                .unwrap_or_else(|| panic!("/stats has no counter {name:?}: {json}"))
        };
        for name in ["bytes_read", "bytes_written", "oversized", "corrupt"] {
            counter(name);
        }
        Stats {
            hits: counter("hits"),
            misses: counter("misses"),
            errors: counter("errors"),
            round_trips: counter("round_trips"),
            invalidations: counter("invalidations"),
        }
    }
}

fn response_is_html(response: &ureq::http::Response<ureq::Body>) -> bool {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"))
}

/// `hits=H misses=M`, exactly.
fn parse_figures(value: &str) -> (u64, u64) {
    let figures = value
        .strip_prefix("hits=")
        .and_then(|rest| rest.split_once(" misses="))
        .and_then(|(hits, misses)| Some((hits.parse().ok()?, misses.parse().ok()?)));
    figures.unwrap_or_else(|| panic!("X-Fragment-Cache is {value:?}, not `hits=H misses=M`"))
}

/// The ids of the comments on a page, in order (`id="comment-N"`).
fn comment_ids(html: &str) -> Vec<i64> {
    html.split(r#"id="comment-"#)
        .skip(1)
        .map(|rest| {
            let digits = rest.split('"').next().unwrap_or_default();
            digits.parse().expect("a numeric comment id")
        })
        .collect()
}

/// A comment's `(data-likes, data-dislikes)`, from its element's opening tag.
fn comment_counts(html: &str, id: i64) -> (i64, i64) {
    let start = html
        .find(&format!(r#"id="comment-{id}""#))
        .unwrap_or_else(|| panic!("comment {id} is not on the page"));
    let tag = &html[start..start + html[start..].find('>').expect("a closed tag")];
    let attribute = |name: &str| -> i64 {
        let value = tag
            .split(&format!(r#"{name}=""#))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("comment {id} has no {name}: {tag}"));
        value.parse().expect("a count")
    };
    (attribute("data-likes"), attribute("data-dislikes"))
}

/// A form with long values cut short, for messages.
fn abbreviated<'a>(form: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    form.iter()
        .map(|&(name, value)| (name, value.chars().take(12).collect()))
        .collect()
}

/// A file in the system's temp directory, removed (with SQLite's journal) when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(extension: &str) -> TempFile {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cachesweeper-blog-e2e-{}-{}.{extension}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut journal = self.0.clone().into_os_string();
        journal.push("-journal");
        let _ = std::fs::remove_file(journal);
    }
}
