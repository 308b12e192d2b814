//! Template digests across real rebuilds of the blog example: a copy of this workspace is built
//! with cargo, edited and built again, and each build is run against one memcached and one
//! SQLite file.
//!
//! Every fragment key carries the compile-time digest of the page's templates
//! (`#[derive(TemplateDigest)]`, put into the keys by `Sweeper::render`). So:
//!
//! - a rebuild without template changes (a Rust edit) keeps the digest, and the new build hits
//!   the fragments the previous one stored;
//! - a rebuild after `templates/blog/comment.html` is edited changes the article page's digest
//!   (the page includes that template), and the new build misses every fragment of the page:
//!   the body and the comment list of the article, and each comment (as in `blog_e2e.rs`,
//!   2 + N) — even when the edit is an Askama comment, which changes no output — and stores
//!   them beside the old ones (memcached's `curr_items` grows by 2 + N);
//! - the old build, started again, still hits its own fragments (a rolling deploy);
//! - after a visible edit of that template, every comment shows it: nothing rendered from the
//!   earlier templates is served.
//!
//! The builds go to `target/template-rebuild` (beside `target/debug`), so the workspace's own
//! `target/debug/examples/blog`, which other tests run, is never replaced, and repeated runs
//! reuse the compiled dependencies. The first run compiles every dependency of the blog: a few
//! minutes on two cores. Each build's binary is copied aside before the next build replaces it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachesweeper_suite::memcached::MemcachedProcess;
use common::blog::{Client, Page, Server, TempFile, comment_ids};

/// Seed: articles, and comments per article.
const ARTICLES: u32 = 2;
const COMMENTS: u64 = 20;

/// Fragments of an article page keyed on the article itself: the body and the comment list.
const ARTICLE_FRAGMENTS: u64 = 2;

/// Every fragment of an article page: the article's two, and one per comment.
const PAGE_FRAGMENTS: u64 = ARTICLE_FRAGMENTS + COMMENTS;

/// What the blog's build needs of the workspace. `benches/` because Cargo.toml declares
/// `[[bench]]` targets, whose files cargo requires to exist to read the manifest at all;
/// `README.md` because `cachesweeper/src/lib.rs` `include_str!`s it. `tests/` is left out:
/// integration tests are discovered, not declared.
const COPIED: [&str; 9] = [
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "benches",
    "cachesweeper",
    "cachesweeper-derive",
    "src",
    "examples",
    "templates",
];

/// The longest a build may take before it is killed: far more than the first build with every
/// dependency needs on a slow two-core machine; only a hung cargo gets there.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

#[test]
#[ignore = "heavy: compiles the blog several times (minutes); run by scripts/test.sh"]
fn fragments_follow_template_edits_across_rebuilds() {
    let Some(memcached) = MemcachedProcess::start() else {
        eprintln!("memcached is not installed: skipping the template rebuild test");
        return;
    };
    let started = Instant::now();
    let workspace = WorkspaceCopy::new();
    let db = TempFile::new("sqlite3");
    let (articles, comments) = (ARTICLES.to_string(), COMMENTS.to_string());
    let url = memcached.url();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--memcache",
        &url,
        "--db",
        db.arg(),
        "--articles",
        &articles,
        "--comments",
        &comments,
    ];
    let mut figures = Vec::new();
    let mut record = |step: &str, pages: &[Page]| {
        for page in pages {
            figures.push(format!("{step}: {:?}", page.cache()));
        }
    };

    // A: the first build. A cold page misses all its fragments; again, it hits the article's
    // two (the list hits, so its comments are not even looked up).
    let a = workspace.build("a");
    let pages = serve(&a, &args, 2);
    record("build A", &pages);
    assert_eq!(pages[0].cache(), (0, PAGE_FRAGMENTS), "build A, cold page");
    assert_eq!(
        pages[1].cache(),
        (ARTICLE_FRAGMENTS, 0),
        "build A, warm page"
    );
    let reference = pages[1].body.clone();
    assert_same_page(&pages[0].body, &reference, "build A, cold page");
    assert_eq!(comment_ids(&reference).len() as u64, COMMENTS);
    let stored = curr_items(memcached.port());

    // B: a Rust edit, no template change. A new process (an empty L1) on the same memcached
    // finds the fragments of build A, and stores nothing.
    workspace.append(
        "examples/blog/main.rs",
        "\n// Rebuilt by tests/template_rebuild.rs: no template changed.\n",
    );
    let b = workspace.build("b");
    let pages = serve(&b, &args, 1);
    record("build B", &pages);
    assert_eq!(
        pages[0].cache(),
        (ARTICLE_FRAGMENTS, 0),
        "build B (no template change) missed fragments of build A"
    );
    assert_same_page(&pages[0].body, &reference, "build B");
    assert_eq!(
        curr_items(memcached.port()),
        stored,
        "build B stored fragments"
    );

    // C: an Askama comment added to the comment template. The page's text is the same, but
    // its digest is not: every fragment of the page misses, once. (At the top: appended, it
    // would turn the file's final newline, which Askama drops, into output.)
    workspace.prepend("templates/blog/comment.html", "{# edited #}");
    let c = workspace.build("c");
    let pages = serve(&c, &args, 2);
    record("build C", &pages);
    assert_eq!(
        pages[0].cache(),
        (0, PAGE_FRAGMENTS),
        "build C (comment.html edited) hit fragments of the earlier builds"
    );
    assert_eq!(
        pages[1].cache(),
        (ARTICLE_FRAGMENTS, 0),
        "build C, warm page"
    );
    assert_same_page(
        &pages[0].body,
        &reference,
        "build C (an Askama comment), cold page",
    );
    assert_same_page(
        &pages[1].body,
        &reference,
        "build C (an Askama comment), warm page",
    );
    // Beside build A's fragments, not over them: a new key for each.
    let stored_c = curr_items(memcached.port());
    assert_eq!(stored_c, stored + PAGE_FRAGMENTS, "items stored by build C");

    // A again, after C: the old templates' fragments are still there, under the old digest.
    let pages = serve(&a, &args, 1);
    record("build A again", &pages);
    assert_eq!(
        pages[0].cache(),
        (ARTICLE_FRAGMENTS, 0),
        "build A, after build C"
    );
    assert_same_page(&pages[0].body, &reference, "build A, after build C");

    // D: a visible change to the comment template. Every fragment misses again, and every
    // comment shows the change: nothing of the earlier templates is served.
    workspace.replace(
        "templates/blog/comment.html",
        r#"<article class="comment""#,
        r#"<article class="comment edited""#,
    );
    let d = workspace.build("d");
    let pages = serve(&d, &args, 2);
    record("build D", &pages);
    assert_eq!(
        pages[0].cache(),
        (0, PAGE_FRAGMENTS),
        "build D (comment.html changed) hit fragments of the earlier builds"
    );
    assert_eq!(
        pages[1].cache(),
        (ARTICLE_FRAGMENTS, 0),
        "build D, warm page"
    );
    let edited = pages[0].body.matches(r#"class="comment edited""#).count();
    assert_eq!(edited as u64, COMMENTS, "comments rendered with the edit");
    assert_same_page(
        &pages[0]
            .body
            .replace(r#"class="comment edited""#, r#"class="comment""#),
        &reference,
        "build D, with its edit undone",
    );
    assert_same_page(&pages[1].body, &pages[0].body, "build D, warm page");
    assert_eq!(
        curr_items(memcached.port()),
        stored_c + PAGE_FRAGMENTS,
        "items stored by build D"
    );

    for line in &figures {
        eprintln!("template rebuild: {line}");
    }
    eprintln!(
        "template rebuild: builds {} ; whole test {:.1?}",
        workspace.timings.lock().unwrap().join(", "),
        started.elapsed()
    );
}

/// Runs the blog binary `binary` with `args`, GETs `/articles/1` `gets` times, and stops it.
fn serve(binary: &Path, args: &[&str], gets: usize) -> Vec<Page> {
    let server = Server::start_binary(binary, args);
    let client = Client::new(&server);
    let pages: Vec<Page> = (0..gets).map(|_| client.get("/articles/1")).collect();
    for page in &pages {
        assert_eq!(page.status, 200, "{}", server.log());
    }
    pages
}

/// Panics, showing where they part (not two whole pages), if `page` is not `expected`.
fn assert_same_page(page: &str, expected: &str, what: &str) {
    if page == expected {
        return;
    }
    let at = page
        .bytes()
        .zip(expected.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(page.len().min(expected.len()));
    let around = |text: &str| -> String {
        let bytes = &text.as_bytes()[at.saturating_sub(120)..(at + 120).min(text.len())];
        String::from_utf8_lossy(bytes).into_owned()
    };
    panic!(
        "{what}: the page differs from the reference at byte {at} (lengths {} and {}):\n\
         page:      {:?}\nreference: {:?}",
        page.len(),
        expected.len(),
        around(page),
        around(expected)
    );
}

/// memcached's own count of the items it holds (`stats`, `curr_items`).
fn curr_items(port: u16) -> u64 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"stats\r\n").unwrap();
    for line in BufReader::new(stream).lines() {
        let line = line.expect("memcached's stats");
        if let Some(n) = line.strip_prefix("STAT curr_items ") {
            return n.trim().parse().unwrap();
        }
        assert_ne!(line, "END", "no curr_items in stats");
    }
    unreachable!("memcached closed the connection")
}

/// A copy of the workspace in a fresh temp directory (removed when dropped), which builds the
/// blog into `target/template-rebuild`.
struct WorkspaceCopy {
    /// The temp directory: the copy in `workspace/`, each build's binary in `bin/`.
    dir: PathBuf,
    target: PathBuf,
    /// "a 1.2s", ...: each build and how long it took.
    timings: Mutex<Vec<String>>,
}

impl WorkspaceCopy {
    fn new() -> WorkspaceCopy {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "cachesweeper-template-rebuild-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // The guard exists from here on, so that a failed copy is removed too.
        let copy = WorkspaceCopy {
            dir,
            target: rebuild_target_dir(),
            timings: Mutex::new(Vec::new()),
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = copy.workspace();
        std::fs::create_dir(&workspace).unwrap();
        std::fs::create_dir(copy.dir.join("bin")).unwrap();
        for name in COPIED {
            copy_path(&root.join(name), &workspace.join(name));
        }
        copy
    }

    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// Appends `text` to the copy's file `path`.
    fn append(&self, path: &str, text: &str) {
        let file = self.workspace().join(path);
        let mut content = std::fs::read_to_string(&file).unwrap();
        content.push_str(text);
        std::fs::write(&file, content).unwrap();
    }

    /// Puts `text` before the content of the copy's file `path`.
    fn prepend(&self, path: &str, text: &str) {
        let file = self.workspace().join(path);
        let content = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("{text}{content}")).unwrap();
    }

    /// Replaces every `from` in the copy's file `path` with `to` (there must be one).
    fn replace(&self, path: &str, from: &str, to: &str) {
        let file = self.workspace().join(path);
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(content.contains(from), "{path} has no {from:?}");
        std::fs::write(&file, content.replace(from, to)).unwrap();
    }

    /// Builds the blog example of the copy, checks that cargo compiled it (rather than finding
    /// it up to date), and returns the binary copied aside as `bin/blog-{name}`.
    ///
    /// Cargo decides that the blog is up to date from the modification times of its sources
    /// against those of the last build in the target directory, which may be a build of another
    /// copy: of a run of this test in another process at the same time (copies of the same
    /// workspace have the same artifacts there). Then the copy's `main.rs` is touched and the
    /// blog built again, so that the binary is always built from this copy.
    fn build(&self, name: &str) -> PathBuf {
        let note = if self.target.join("debug").is_dir() {
            ""
        } else {
            " (the first build there compiles every dependency: a few minutes)"
        };
        eprintln!(
            "template rebuild: building {name} into {}{note}",
            self.target.display()
        );
        let started = Instant::now();
        for attempt in 1.. {
            let (mut status, mut stderr) = self.cargo_build(true);
            if !status.success() && stderr.contains("offline") {
                eprintln!("template rebuild: the offline build failed; building online:\n{stderr}");
                (status, stderr) = self.cargo_build(false);
            }
            assert!(
                status.success(),
                "`cargo build --example blog` of the workspace copy {} failed ({status}); its \
                 stderr:\n{stderr}",
                self.workspace().display()
            );
            if stderr.contains("Compiling cachesweeper-suite") {
                break;
            }
            assert!(
                attempt < 3,
                "build {name}: cargo found the blog up to date {attempt} times, even after its \
                 main.rs was touched; its stderr:\n{stderr}"
            );
            eprintln!(
                "template rebuild: build {name}: cargo found the blog up to date (a build of \
                 another copy, at the same time?); touching main.rs and building again"
            );
            std::thread::sleep(Duration::from_secs(1)); // past a coarse clock's tick
            std::fs::File::options()
                .write(true)
                .open(self.workspace().join("examples/blog/main.rs"))
                .and_then(|file| file.set_modified(SystemTime::now()))
                .expect("touch main.rs");
        }
        let took = started.elapsed();
        eprintln!("template rebuild: build {name} took {took:.1?}");
        self.timings
            .lock()
            .unwrap()
            .push(format!("{name} {took:.1?}"));
        let built = self
            .target
            .join("debug")
            .join("examples")
            .join(format!("blog{}", std::env::consts::EXE_SUFFIX));
        let aside = self
            .dir
            .join("bin")
            .join(format!("blog-{name}{}", std::env::consts::EXE_SUFFIX));
        std::fs::copy(&built, &aside)
            .unwrap_or_else(|e| panic!("copy {} aside: {e}", built.display()));
        aside
    }

    /// Runs `cargo build --example blog` in the copy, within [`BUILD_LIMIT`].
    fn cargo_build(&self, offline: bool) -> (ExitStatus, String) {
        let mut command = Command::new(env!("CARGO"));
        command.args(["build", "--example", "blog", "--color", "never"]);
        if offline {
            command.arg("--offline");
        }
        let mut child = command
            .current_dir(self.workspace())
            .env("CARGO_TARGET_DIR", &self.target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cargo");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + BUILD_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for cargo") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`cargo build --example blog` took over {BUILD_LIMIT:?}: killed; its \
                     stderr so far:\n{}",
                    stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = reader.join();
        let stderr = stderr.lock().unwrap().clone();
        (status, stderr)
    }
}

impl Drop for WorkspaceCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `target/template-rebuild`, from this test's own path: `target/<profile>/deps/<test>`.
fn rebuild_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps/")
        .join("template-rebuild")
}

/// Copies the file or directory `from` to `to`, directories recursively.
fn copy_path(from: &Path, to: &Path) {
    let kind = std::fs::metadata(from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .file_type();
    if kind.is_dir() {
        std::fs::create_dir(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_path(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}
