//! The blog example (`examples/blog`) as a test sees it: the real binary, started as a child
//! process on a free port ([`Server`]), and an HTTP client of it ([`Client`]) that reads the
//! per-request cache figures (`X-Fragment-Cache`) and `GET /stats`.
//!
//! Shared by `tests/blog_e2e.rs` (the functional end-to-end test), `tests/blog_faults.rs`
//! (the blog while memcached is absent, silent, or stopped and started under load) and
//! `tests/blog_visibility.rs` (what the blog shows of its cache, in a real browser too:
//! [`Chromium`]).

use std::io::{BufRead, BufReader, Read};

/// The blog's own signing of visitors: a test client signs in with it (the harness gives the
/// blog [`SESSION_SECRET`]) rather than scraping a page for its token.
#[path = "../../examples/blog/visitor.rs"]
pub mod visitor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The blog binary, built by cargo (plain `cargo test` builds examples before the tests run):
/// `target/<profile>/examples/blog`, beside this test's `target/<profile>/deps/`.
///
/// `cargo test --test blog_e2e` builds only this test, which could leave an old binary: if it
/// is missing or older than the example's sources, it is rebuilt once with the same cargo.
pub fn blog_binary() -> &'static Path {
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
pub struct Server {
    child: Child,
    pub url: String,
    /// Everything it logged to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the blog with `args` and waits (up to 60 s) for the URL it prints first.
    pub fn start(args: &[&str]) -> Server {
        Server::start_binary(blog_binary(), args)
    }

    /// Like [`start`](Self::start), with the blog binary at `binary` rather than this
    /// workspace's own: `tests/template_rebuild.rs` runs builds of a copy of the workspace.
    pub fn start_binary(binary: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(binary)
            .args(args)
            .args(["--session-secret", SESSION_SECRET])
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
    pub fn wait_for_log(&self, line: &str) {
        self.wait_for_logged(line, 1);
    }

    /// Waits (up to 5 s) until the server has logged `line` `times` times.
    pub fn wait_for_logged(&self, line: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log.lock().unwrap().matches(line).count() < times {
            assert!(
                Instant::now() < deadline,
                "the server never logged {line:?}; log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it logged to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Panics if the process has exited (crashed) by now.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            panic!("the blog exited ({status}); log:\n{}", self.log());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new visitor's `Cookie` header value and CSRF token, signed in as `name` or not.
fn visitor_cookie(name: Option<&str>) -> (String, String) {
    let keys = visitor::Keys::new(Some(SESSION_SECRET));
    let visitor = keys.visitor(name.map(str::to_owned));
    let cookie = keys.cookie(&visitor);
    let cookie = cookie.to_str().expect("ASCII").split(';').next();
    (cookie.expect("name=value").to_owned(), keys.csrf(&visitor))
}

/// The secret every blog the harness starts signs its visitors with.
pub const SESSION_SECRET: &str = "the tests' session secret";

/// An HTTP client of one server, which follows no redirects and adds up the cache figures of
/// every response. It is one visitor (anonymous unless [`signed_in`](Self::signed_in)): it
/// sends the visitor's cookie with every request and the visitor's CSRF token with every form
/// ([`post`](Self::post)), as a browser on the blog's pages does.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    totals: Mutex<(u64, u64)>,
    /// `blog_visitor=...`, or empty for a visitor without a cookie.
    cookie: String,
    csrf: String,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// `X-Fragment-Cache: hits=H misses=M`.
    pub cache: Option<(u64, u64)>,
    pub location: Option<String>,
    pub content_type: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// Every header.
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Page {
    /// The header `name`'s value, if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// The cache figures, which every HTML response must carry.
    pub fn cache(&self) -> (u64, u64) {
        self.cache.expect("no X-Fragment-Cache header")
    }
}

/// The counters of `GET /stats` that the tests read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub round_trips: u64,
    pub invalidations: u64,
    /// SQL statements the blog ran.
    pub db_queries: u64,
}

impl Stats {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
            errors: self.errors - earlier.errors,
            round_trips: self.round_trips - earlier.round_trips,
            invalidations: self.invalidations - earlier.invalidations,
            db_queries: self.db_queries - earlier.db_queries,
        }
    }
}

impl Client {
    /// A client whose every request (connect, send, read the whole answer) has 30 s.
    pub fn new(server: &Server) -> Client {
        Client::with_timeout(server, Duration::from_secs(30))
    }

    /// A client whose every request has `timeout`, all included.
    pub fn with_timeout(server: &Server, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build();
        // One anonymous visitor for every client of the process: pages of two servers, or of
        // two clients, can then be compared byte for byte (tokens included).
        static ANONYMOUS: OnceLock<(String, String)> = OnceLock::new();
        let (cookie, csrf) = ANONYMOUS.get_or_init(|| visitor_cookie(None)).clone();
        Client {
            agent: config.into(),
            url: server.url.clone(),
            totals: Mutex::new((0, 0)),
            cookie,
            csrf,
        }
    }

    /// A client of the same server, another visitor: one signed in as `name`.
    pub fn signed_in(&self, name: &str) -> Client {
        let (cookie, csrf) = visitor_cookie(Some(name));
        Client {
            agent: self.agent.clone(),
            url: self.url.clone(),
            totals: Mutex::new((0, 0)),
            cookie,
            csrf,
        }
    }

    /// A client of `server`, the same visitor as this one (the harness gives every blog one
    /// secret): its pages are this client's pages, tokens included.
    pub fn on(&self, server: &Server) -> Client {
        Client {
            agent: self.agent.clone(),
            url: server.url.clone(),
            totals: Mutex::new((0, 0)),
            cookie: self.cookie.clone(),
            csrf: self.csrf.clone(),
        }
    }

    /// A client of `url` (an HTTP cache in front of this client's server), a visitor without a
    /// cookie: one who reads the pages everyone reads.
    pub fn without_cookie_at(&self, url: &str) -> Client {
        Client {
            agent: self.agent.clone(),
            url: url.to_owned(),
            totals: Mutex::new((0, 0)),
            cookie: String::new(),
            csrf: String::new(),
        }
    }

    /// This client's visitor, on `url` (an HTTP cache in front of its server).
    pub fn at(&self, url: &str) -> Client {
        Client {
            agent: self.agent.clone(),
            url: url.to_owned(),
            totals: Mutex::new((0, 0)),
            cookie: self.cookie.clone(),
            csrf: self.csrf.clone(),
        }
    }

    /// The visitor's CSRF token.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn get(&self, path: &str) -> Page {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POSTs `form` (or an empty body).
    pub fn post(&self, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        self.try_post(path, form)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Like [`get`](Self::get), with a transport error (refused, reset, timed out) or an
    /// unreadable answer as an `Err` rather than a panic.
    pub fn try_get(&self, path: &str) -> Result<Page, String> {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if !self.cookie.is_empty() {
            request = request.header("cookie", &self.cookie);
        }
        self.read(request.call().map_err(|e| e.to_string())?)
    }

    /// A conditional GET: with `If-None-Match: etag`.
    pub fn get_if_none_match(&self, path: &str, etag: &str) -> Page {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("if-none-match", etag);
        if !self.cookie.is_empty() {
            request = request.header("cookie", &self.cookie);
        }
        let response = request.call();
        self.read(response.unwrap_or_else(|e| panic!("GET {path}: {e}")))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Like [`post`](Self::post), with errors as [`try_get`](Self::try_get) has them.
    pub fn try_post(&self, path: &str, form: Option<&[(&str, &str)]>) -> Result<Page, String> {
        let mut fields = vec![("csrf", self.csrf.as_str())];
        fields.extend(form.unwrap_or_default().iter().copied());
        self.try_post_as_is(path, &fields)
    }

    /// POSTs `form` as it is, with no token added (a forged or a missing one).
    pub fn try_post_as_is(&self, path: &str, form: &[(&str, &str)]) -> Result<Page, String> {
        let mut request = self.agent.post(format!("{}{path}", self.url));
        if !self.cookie.is_empty() {
            request = request.header("cookie", &self.cookie);
        }
        let response = request.send_form(form.iter().copied());
        self.read(response.map_err(|e| e.to_string())?)
    }

    fn read(&self, mut response: ureq::http::Response<ureq::Body>) -> Result<Page, String> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().expect("ASCII header").to_owned())
        };
        let cache = header("x-fragment-cache").map(|value| parse_figures(&value));
        let location = header("location");
        let content_type = header("content-type");
        let etag = header("etag");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("status {status}, reading the body: {e}"))?;
        if let Some((hits, misses)) = cache {
            let mut totals = self.totals.lock().unwrap();
            totals.0 += hits;
            totals.1 += misses;
        } else if response_is_html(&response) {
            return Err(format!(
                "an HTML response without X-Fragment-Cache (status {status})"
            ));
        }
        Ok(Page {
            status,
            cache,
            location,
            content_type,
            etag,
            headers: response.headers().clone(),
            body,
        })
    }

    /// The sum of the `X-Fragment-Cache` figures of every response so far.
    pub fn header_totals(&self) -> (u64, u64) {
        *self.totals.lock().unwrap()
    }

    pub fn stats(&self) -> Stats {
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
            db_queries: counter("db_queries"),
        }
    }
}

/// One entry of `/stats`'s `fragments`: the hits and misses of the blocks of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentFigures {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub hit_rate: f64,
}

impl Client {
    /// `/stats`'s figures by fragment name.
    pub fn fragment_stats(&self) -> Vec<FragmentFigures> {
        let page = self.get("/stats");
        assert_eq!(page.status, 200);
        let json: serde_json::Value = serde_json::from_str(&page.body).expect("/stats is JSON");
        let fragments = json["fragments"]
            .as_array()
            .unwrap_or_else(|| panic!("/stats has no list of fragments: {json}"));
        fragments
            .iter()
            .map(|f| FragmentFigures {
                name: f["name"].as_str().expect("a name").to_owned(),
                hits: f["hits"].as_u64().expect("hits"),
                misses: f["misses"].as_u64().expect("misses"),
                hit_rate: f["hit_rate"].as_f64().expect("a hit rate"),
            })
            .collect()
    }
}

/// The sum of every sample of the metric `name` in Prometheus's text format, whatever its
/// labels, and only those that carry every one of `labels` (`backend="embedded"`); 0 if there
/// is none (a counter appears at its first use).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, series_labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|label| series_labels.split(',').any(|l| l == *label));
            wanted.then(|| {
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("not a number in {line:?}"))
            })
        })
        .sum()
}

/// Headless Chromium, for what a browser makes of a page: Debian's `chromium` on `PATH`, or
/// the binary `CHROMIUM` names.
pub struct Chromium {
    binary: String,
}

impl Chromium {
    /// The browser, or `None` when it is not installed and this is not CI. Panics under CI
    /// (`CI` set), as the memcached harness does: browser tests must never skip there
    /// (`scripts/test.sh` installs it).
    pub fn find() -> Option<Chromium> {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        match Command::new(&binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) if output.status.success() => Some(Chromium { binary }),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() =>
            {
                eprintln!(
                    "{binary} not found ({e}); skipping. Run scripts/test.sh, which installs it."
                );
                None
            }
            Ok(output) => panic!(
                "{binary} --version failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{binary} not found ({e}), and CI must not skip the browser tests: install it \
                 (scripts/test.sh does, with apt-get) or point CHROMIUM at it"
            ),
            Err(e) => panic!("could not run {binary}: {e}"),
        }
    }

    /// The browser's program.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// The DOM of `url` once loaded and its scripts have run (`--dump-dom`), as HTML. Gives up
    /// after 60 s.
    pub fn dump_dom(&self, url: &str) -> String {
        // A profile of its own: a browser left from another run must not share (or lock) it.
        let profile = TempFile::new("chromium-profile");
        let mut child = Command::new(&self.binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,1600",
                &format!("--user-data-dir={}", profile.arg()),
                "--dump-dom",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut dom = String::new();
            let _ = stdout.read_to_string(&mut dom);
            dom
        });
        let err = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for chromium") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium took over 60 s on {url}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let dom = out.join().expect("stdout reader");
        let log = err.join().expect("stderr reader");
        let _ = std::fs::remove_dir_all(&profile.0);
        assert!(
            status.success() && !dom.is_empty(),
            "chromium --dump-dom {url}: {status}; stderr:\n{log}"
        );
        dom
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
pub fn comment_ids(html: &str) -> Vec<i64> {
    html.split(r#"id="comment-"#)
        .skip(1)
        .map(|rest| {
            let digits = rest.split('"').next().unwrap_or_default();
            digits.parse().expect("a numeric comment id")
        })
        .collect()
}

/// A comment's `(data-likes, data-dislikes)`, from its element's opening tag.
pub fn comment_counts(html: &str, id: i64) -> (i64, i64) {
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

pub use cachesweeper_suite::temp_file::TempFile;
