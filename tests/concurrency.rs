//! 8 threads × 10 000 mixed renders and invalidations on each backend: no render that starts
//! after an `invalidate` returned serves content from before it.
//!
//! Each comment's "database row" is a like count behind a mutex. A vote commits (likes + 1),
//! then invalidates, then records the count as *returned*. A render notes the returned count
//! when it starts, loads the row, renders the fragment (from the cache or fresh), and checks
//! that the count it shows is at least the one noted: content from before an invalidate that
//! had returned would show less.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cachesweeper::backend::Embedded;
use cachesweeper::{KeyParts, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use common::comment;

const THREADS: usize = 8;
const OPS: usize = 10_000;
const COMMENTS: usize = 8;
/// One op in ten is a vote.
const VOTE_EVERY: usize = 10;

fn run(name: &str, sweeper: &Sweeper) {
    let rows: Vec<Mutex<u32>> = (0..COMMENTS).map(|_| Mutex::new(0)).collect();
    let returned: Vec<AtomicU32> = (0..COMMENTS).map(|_| AtomicU32::new(0)).collect();
    let parts = KeyParts::new().part("likes");
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (rows, returned, parts) = (&rows, &returned, &parts);
            scope.spawn(move || {
                for op in 0..OPS {
                    let id = (op * 7 + thread * 3) % COMMENTS;
                    let record = comment(id as i64, 1);
                    if (op + thread) % VOTE_EVERY == 0 {
                        let likes = {
                            let mut row = rows[id].lock().unwrap();
                            *row += 1;
                            *row
                        }; // committed
                        sweeper.invalidate(&record).unwrap();
                        returned[id].fetch_max(likes, Ordering::SeqCst);
                    } else {
                        let floor = returned[id].load(Ordering::SeqCst);
                        let request = sweeper.scope(); // before the data is read
                        let likes = *rows[id].lock().unwrap(); // the render's data load
                        let html = request
                            .fragment(&record, 600, parts, || {
                                Ok::<_, std::convert::Infallible>(likes.to_string())
                            })
                            .unwrap();
                        let shown: u32 = html.parse().unwrap();
                        assert!(
                            shown >= floor,
                            "{name}: comment {id} showed {shown} likes after an invalidate for {floor} had returned"
                        );
                    }
                }
            });
        }
    });
    let stats = sweeper.stats();
    assert!(stats.hits > 0 && stats.misses > 0, "{name}: {stats:?}");
    eprintln!("{name}: {stats:?}");
}

#[test]
fn no_render_after_an_invalidate_serves_what_came_before_it() {
    let embedded = Sweeper::builder()
        .backend(Embedded::new(16 << 20))
        .build()
        .unwrap();
    run("embedded", &embedded);
    if let Some(server) = MemcachedProcess::start() {
        run("memcached", &common::patient_memcached(&server.url()));
    }
}
