//! Many renders missing the same fragment at once render it once (single-flight).

mod common;

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use askama::Template;
use cachesweeper::KeyParts;
use common::{Comment, cases, comment};

#[test]
fn sixty_four_threads_missing_one_fragment_render_it_once() {
    for case in cases() {
        let renders = AtomicUsize::new(0);
        let barrier = Barrier::new(64);
        let c = comment(1, 1);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    barrier.wait();
                    let html = case
                        .sweeper
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

#[derive(Template)]
#[template(
    ext = "html",
    source = "{% filter cachesweeper::filters::cachesweeper(comment, 600) %}{{ self.expensive()|safe }}{% endfilter %}"
)]
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
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    barrier.wait();
                    let page = Page {
                        comment: &c,
                        renders: &renders,
                    };
                    assert_eq!(case.sweeper.render(&page).unwrap(), "<p>page</p>");
                });
            }
        });
        assert_eq!(renders.load(Ordering::SeqCst), 1, "{}", case.name);
    }
}
