//! Many renders missing the same fragment at once render it once (single-flight).

mod common;

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use askama::Template;
use cachesweeper::KeyParts;
use common::{Comment, cases, comment, known};

#[test]
fn sixty_four_threads_missing_one_fragment_render_it_once() {
    for case in cases() {
        let renders = AtomicUsize::new(0);
        let barrier = Barrier::new(64);
        let c = comment(1, 1);
        known(&case.sweeper, [&c]);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    barrier.wait();
                    let html = case
                        .sweeper
                        .scope()
                        .fragment(&c, 600, &KeyParts::new(), || {
                            renders.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50)); // an expensive body
                            Ok::<_, std::convert::Infallible>("<p>once</p>".to_owned())
                        })
                        .unwrap();
                    assert_eq!(html, "<p>once</p>");
                });
            }
        });
        assert_eq!(renders.load(Ordering::SeqCst), 1, "{}", case.name);
        let stats = case.sweeper.stats();
        assert_eq!(stats.hits + stats.misses, 64, "{}: {stats:?}", case.name);
    }
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600, \"comment\") %}{{ self.expensive()|safe }}{% endfilter %}"
)]
#[sweeper(same_for_everyone(expensive))]
struct Page<'a> {
    comment: &'a Comment,
    renders: &'a AtomicUsize,
}

impl Page<'_> {
    fn expensive(&self) -> &'static str {
        self.renders.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        "<p>page</p>"
    }
}

#[test]
fn sixty_four_page_renders_missing_one_fragment_render_it_once() {
    for case in cases() {
        let renders = AtomicUsize::new(0);
        let barrier = Barrier::new(64);
        let c = comment(2, 1);
        known(&case.sweeper, [&c]);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    barrier.wait();
                    let page = Page {
                        comment: &c,
                        renders: &renders,
                    };
                    assert_eq!(case.sweeper.scope().render(&page).unwrap(), "<p>page</p>");
                });
            }
        });
        assert_eq!(renders.load(Ordering::SeqCst), 1, "{}", case.name);
    }
}

/// Run by `two_processes_missing_one_fragment_render_it_once` as a child process: 8 threads
/// miss the same fragment on the memcached named in the environment; prints its renders.
#[test]
fn stampede_child() {
    let Ok(url) = std::env::var("CACHESWEEPER_STAMPEDE_MEMCACHED") else {
        return;
    };
    let sweeper = cachesweeper::Sweeper::memcached(&url).unwrap();
    let renders = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    let c = comment(42, 1);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                barrier.wait();
                let html = sweeper
                    .scope()
                    .fragment(&c, 600, &KeyParts::new().part("two-processes"), || {
                        renders.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok::<_, std::convert::Infallible>("<p>shared</p>".to_owned())
                    })
                    .unwrap();
                assert_eq!(html, "<p>shared</p>");
            });
        }
    });
    println!("child renders={}", renders.load(Ordering::SeqCst));
}

#[test]
fn two_processes_missing_one_fragment_render_it_once() {
    let Some(server) = cachesweeper_suite::memcached::MemcachedProcess::start() else {
        return;
    };
    known(
        &cachesweeper::Sweeper::memcached(&server.url()).unwrap(),
        [&comment(42, 1)],
    );
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stampede_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CACHESWEEPER_STAMPEDE_MEMCACHED", server.url())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let renders: usize = stdout
            .lines()
            .find_map(|l| l.split("child renders=").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no count in {stdout:?}"));
        total += renders;
    }
    // In-process single-flight alone gives at most one per process; the memcached lease makes
    // it one across both.
    assert!(total <= 2, "{total} renders");
    assert_eq!(
        total, 1,
        "the lease should leave one render across processes"
    );
}
