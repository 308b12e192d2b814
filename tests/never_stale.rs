//! One regression test for each cause of stale pages found in issue 11, on every backend where
//! the cause could appear. `tests/freshness.rs` checks the guarantee as a whole, under load.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use askama::Template;
use cachesweeper::backend::{Backend, Leased, Memcached, Redis};
use cachesweeper::{KeyParts, Scope, Sweepable, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};
use cachesweeper_suite::slow_link::SlowLink;
use common::{cases, known, now_ns};

#[derive(Debug, Clone, Sweepable)]
struct Blog {
    id: i64,
}

#[derive(Debug, Clone, Sweepable)]
struct Post {
    id: i64,
    #[sweeper(touches = Blog)]
    blog_id: i64,
}

#[derive(Debug, Clone, Sweepable)]
struct Note {
    id: i64,
    #[sweeper(touches = Post)]
    post_id: i64,
    likes: u32,
}

fn note(id: i64, likes: u32) -> Note {
    Note {
        id,
        post_id: 1,
        likes,
    }
}

/// Blog > Post > Note, each level a fragment; a note's likes are printed as `likes(N)=L`.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(blog, 600, "front") -%}
<main>{% filter cachesweeper::filters::cachesweeper(post, 600, "post") -%}
<article>{% for n in notes %}{% filter cachesweeper::filters::cachesweeper(n, 600, "note") -%}
<p>likes({{ n.id }})={{ n.likes }}</p>{% filter cachesweeper::filters::cachesweeper(post, 600, "byline") %}<i>post {{ post.id }}</i>{% endfilter %}
{%- endfilter %}{% endfor %}</article>
{%- endfilter %}</main>
{%- endfilter %}"#
)]
struct BlogPage<'a> {
    blog: &'a Blog,
    /// Shown inside each note too (the byline): the same post whoever looks.
    #[sweeper(same_for_everyone)]
    post: &'a Post,
    #[sweeper(belongs_to = post)]
    notes: &'a [Note],
}

const BLOG: Blog = Blog { id: 1 };
const POST: Post = Post { id: 1, blog_id: 1 };

fn page<'a>(notes: &'a [Note]) -> BlogPage<'a> {
    BlogPage {
        blog: &BLOG,
        post: &POST,
        notes,
    }
}

/// Two notes at 0 likes, every record known to the cache, and the page rendered once.
fn rendered_page(s: &Sweeper) -> Vec<Note> {
    let notes = vec![note(1, 0), note(2, 0)];
    known(s, [&BLOG]);
    known(s, [&POST]);
    known(s, &notes);
    s.scope().render(&page(&notes)).unwrap();
    notes
}

fn likes(html: &str, id: i64) -> u32 {
    let marker = format!("likes({id})=");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
        + marker.len();
    html[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Renders `page` through `scope` both ways a page can be rendered: blocking, and awaited on
/// a runtime of its own.
fn both_ways(scope: &Scope, page: &BlogPage<'_>) -> [String; 2] {
    [scope.render(page).unwrap(), awaited(scope, page)]
}

/// `page` rendered through `scope` by the async render, on a runtime of its own.
fn awaited<T: Template + cachesweeper::TemplateDigest + Sync>(scope: &Scope, page: &T) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scope.render_async(page))
        .unwrap()
}

/// `n`'s like count as its fragment `parts` shows it through `scope` (rendered on a miss).
fn shown_likes(scope: &Scope, n: &Note, parts: &KeyParts) -> String {
    scope
        .fragment(n, 600, parts, || {
            Ok::<_, std::convert::Infallible>(n.likes.to_string())
        })
        .unwrap()
}

/// Cause 1: a render that read its rows before a write, and learns versions only after the
/// write's invalidation (late passes, lease waits), stored the old rows under the new version.
#[test]
fn a_render_that_read_before_an_invalidation_stores_nothing_under_its_version() {
    for case in cases() {
        let s = &case.sweeper;
        let notes = rendered_page(s);

        // A request begins and reads its rows...
        let slow = s.scope();
        let read = notes.clone();
        // ...a vote commits and is invalidated...
        let voted = vec![note(1, 1), note(2, 0)];
        s.invalidate(&voted[0]).unwrap();
        // ...and the slow request learns the versions only now: it shows what it read, and
        // keeps it to itself.
        for html in both_ways(&slow, &page(&read)) {
            assert_eq!(likes(&html, 1), 0, "{}", case.name);
        }
        assert!(
            slow.stats().unstored >= 2,
            "{}: {:?}",
            case.name,
            slow.stats()
        );

        // Every request that begins after the invalidation returned shows the vote: had the
        // slow request stored its rows under the new version, these would find them.
        for html in both_ways(&s.scope(), &page(&voted)) {
            assert_eq!(likes(&html, 1), 1, "{}", case.name);
        }
        let warm = s.scope();
        for html in both_ways(&warm, &page(&voted)) {
            assert_eq!(likes(&html, 1), 1, "{}", case.name);
        }
        assert!(warm.stats().hits > 0, "{}: {:?}", case.name, warm.stats());
    }
}

/// Cause 2: the L1 kept fragments found in memcached for 60 s, whatever their time to live.
#[test]
fn the_l1_keeps_a_fragment_no_longer_than_its_time_to_live() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let process = || Sweeper::memcached(&server.url()).unwrap();
    let (a, b) = (process(), process());
    let n = note(7, 0);
    known(&a, [&n]);
    let parts = KeyParts::new().part("short");
    let renders = Cell::new(0);
    let render = || {
        renders.set(renders.get() + 1);
        Ok::<_, std::convert::Infallible>("<p>7</p>".to_owned())
    };
    a.scope()
        .fragment(&n, Duration::from_secs(2), &parts, render)
        .unwrap();
    b.scope()
        .fragment(&n, Duration::from_secs(2), &parts, render)
        .unwrap();
    assert_eq!(
        renders.get(),
        1,
        "b found a's fragment (and keeps it in its L1)"
    );
    std::thread::sleep(Duration::from_millis(3_200));
    b.scope()
        .fragment(&n, Duration::from_secs(2), &parts, render)
        .unwrap();
    assert_eq!(renders.get(), 2, "b's L1 copy expired with the fragment");
}

/// Cause 3: `touches` is one level deep; a note touches its post, not the blog, and the blog's
/// fragment kept the old note inside it.
#[test]
fn a_change_at_any_depth_makes_every_fragment_around_it_miss() {
    for case in cases() {
        let s = &case.sweeper;
        let mut notes = rendered_page(s);
        let warm = s.scope();
        both_ways(&warm, &page(&notes));
        assert_eq!(warm.stats().misses, 0, "{}", case.name);

        notes[1].likes = 5;
        s.invalidate(&notes[1]).unwrap(); // raises note 2 and post 1, not blog 1
        let after = s.scope();
        for html in both_ways(&after, &page(&notes)) {
            assert_eq!(likes(&html, 2), 5, "{}: {html}", case.name);
        }
        let stats = after.stats();
        assert!(
            stats.outdated >= 1,
            "{}: the front fragment: {stats:?}",
            case.name
        );
    }
}

/// Cause 4: a page render that learnt the post's version in one pass and met another block of
/// the post in a deeper pass (the byline inside each note) looked it up with no version; on
/// memcached it took a lease on a key never stored, and the next renders waited on it.
#[test]
fn a_version_learnt_in_one_pass_keys_the_blocks_met_in_deeper_ones() {
    for case in cases() {
        let s = &case.sweeper;
        let notes = rendered_page(s);
        // Another process (no L1, no flights in common) finds every fragment: blog, post,
        // two notes, and the byline (one key for both notes).
        let other = Sweeper::builder()
            .backend(std::sync::Arc::clone(s.backend()))
            .l1(0)
            .build()
            .unwrap();
        let request = other.scope();
        request.render(&page(&notes)).unwrap();
        assert_eq!(
            (request.stats().hits, request.stats().misses),
            (1, 0),
            "{}: the front fragment hits, and holds everything else",
            case.name
        );
        // The byline's key carries the post's version: the post changes, the byline misses
        // (with the front, the post and both notes), and is stored under the new version: the
        // next process finds the whole page.
        s.invalidate(&POST).unwrap();
        let after = s.scope();
        after.render(&page(&notes)).unwrap();
        assert_eq!(
            after.stats().misses,
            5,
            "{}: {:?}",
            case.name,
            after.stats()
        );
        let next = other_process(s).scope();
        next.render(&page(&notes)).unwrap();
        assert_eq!(
            (next.stats().hits, next.stats().misses),
            (1, 0),
            "{}: stored under the new versions",
            case.name
        );
    }
}

/// Cause 5: a fragment whose body failed kept its lease, and the next render of it (in any
/// process) waited for a value that would never come.
#[test]
fn a_body_that_fails_gives_its_lease_back() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let s = Sweeper::memcached(&server.url()).unwrap();
    let n = note(9, 0);
    known(&s, [&n]);
    let parts = KeyParts::new().part("fails");
    let failed = s
        .scope()
        .fragment(&n, 60, &parts, || Err::<String, _>("the body failed"));
    assert_eq!(failed, Err("the body failed"));
    let lease_is_free = |key: &str| {
        matches!(
            common::wait(s.backend().get_leased(&[key], Duration::from_secs(2))).as_slice(),
            [Ok(Leased::Won)]
        )
    };
    let key = s.fragment_key(&n, &parts).unwrap();
    assert!(
        lease_is_free(&key),
        "the next render gets the lease at once"
    );
    // The same through a page render.
    #[derive(Template, cachesweeper::TemplateDigest)]
    #[template(
        ext = "html",
        source = r#"{% filter cachesweeper::filters::cachesweeper(note, 60, "failing") %}{{ self.fail()? }}{% endfilter %}"#
    )]
    #[sweeper(same_for_everyone(fail))]
    struct Failing<'a> {
        note: &'a Note,
    }
    impl Failing<'_> {
        fn fail(&self) -> askama::Result<&'static str> {
            Err(askama::Error::Fmt)
        }
    }
    assert!(s.scope().render(&Failing { note: &n }).is_err());
    let key = s
        .fragment_key(
            &n,
            &KeyParts::new()
                .part("failing")
                .template_digest(<Failing as cachesweeper::TemplateDigest>::TEMPLATE_DIGEST),
        )
        .unwrap();
    assert!(
        lease_is_free(&key),
        "a page whose fragment failed gives its lease back too"
    );
}

/// Cause 6: single flight's grace period never applied (the flight was removed when its
/// leader published), so a render that missed just after another finished rendered again.
#[test]
fn a_render_that_misses_just_after_another_finished_takes_its_result() {
    // A fragment too large to store: nothing to find in the cache, only the flight's result.
    let s = Sweeper::embedded();
    let n = note(3, 0);
    let big = "x".repeat(2 << 20);
    let renders = Cell::new(0);
    let render = || {
        renders.set(renders.get() + 1);
        Ok::<_, std::convert::Infallible>(big.clone())
    };
    let parts = KeyParts::new().part("big");
    assert_eq!(
        s.scope().fragment(&n, 60, &parts, render).unwrap().len(),
        big.len()
    );
    assert_eq!(
        s.scope().fragment(&n, 60, &parts, render).unwrap().len(),
        big.len()
    );
    assert_eq!(renders.get(), 1);
    assert_eq!(s.stats().coalesced, 1);
}

/// A process on `server` that gives up on it quickly: 50 ms to connect, 100 ms an exchange,
/// a breaker that opens after two failures for 200 ms.
fn impatient(server: &MemcachedProcess) -> Sweeper {
    Sweeper::builder()
        .backend(
            Memcached::builder()
                .server(server.url())
                .connect_timeout(Duration::from_millis(50))
                .io_timeout(Duration::from_millis(100))
                .circuit_breaker(2, Duration::from_millis(200))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Cause 7: an invalidation that failed (memcached unreachable, holding its data) was logged
/// and forgotten: once the server answered again, the old fragments came back.
#[test]
fn a_failed_invalidation_is_retried_and_meanwhile_nothing_old_is_served_here() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let process = || impatient(&server);
    let (writer, reader) = (process(), process());
    let parts = KeyParts::new().part("likes");
    let show = |s: &Sweeper, n: &Note| {
        s.scope()
            .fragment(n, 600, &parts, || {
                Ok::<_, std::convert::Infallible>(n.likes.to_string())
            })
            .unwrap()
    };
    let old = note(5, 0);
    known(&writer, [&old]);
    assert_eq!(show(&writer, &old), "0");
    assert_eq!(show(&reader, &old), "0");
    assert_eq!(
        reader.scope().fragment(&old, 600, &parts, || Err("miss")),
        Ok("0".into())
    );

    server.pause();
    let new = note(5, 1); // committed
    assert!(writer.invalidate(&new).is_err(), "memcached is paused");
    // Until the retry lands, the writer's process serves nothing under the old version.
    assert_eq!(show(&writer, &new), "1");
    server.resume();

    // The retry lands by itself, within a few of its waits (50 ms doubling, at most 1 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = reader
            .scope()
            .fragment(&old, 600, &parts, || Err::<String, _>("miss"));
        if found == Err("miss") {
            break; // the old version is gone for everyone
        }
        assert!(
            Instant::now() < deadline,
            "the failed invalidation was never retried"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(show(&reader, &new), "1");
    assert_eq!(show(&writer, &new), "1");
}

/// A counter lost after an invalidation raised it (memcached restarted) must come back newer
/// than every render already under way: recreated at a render's start time instead, a render
/// that began between that start and the invalidation stored its old rows under it.
#[test]
fn a_counter_lost_after_an_invalidation_comes_back_newer_than_renders_under_way() {
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    // Processes that have not talked to memcached yet: their first call after the restart
    // connects afresh.
    let url = server.url();
    let process = || Sweeper::memcached(&url).unwrap();
    let (earlier, slow, writer) = (process(), process(), process());
    let parts = KeyParts::new().part("lost");
    let show = |scope: &Scope, n: &Note| shown_likes(scope, n, &parts);
    let old = note(4, 0);
    let earlier = earlier.scope();
    std::thread::sleep(Duration::from_millis(2));
    let slow = slow.scope(); // ...reads the old row
    std::thread::sleep(Duration::from_millis(2));
    let new = note(4, 1); // committed
    writer.invalidate(&new).unwrap();
    server.restart(); // the raised counter is lost

    assert_eq!(show(&earlier, &old), "0"); // recreates the counter
    assert_eq!(show(&slow, &old), "0"); // must not store its old row under it
    let reader = process();
    assert_eq!(
        show(&reader.scope(), &new),
        "1",
        "a page after the invalidation"
    );
}

/// Issue 20, item 9: the retry thread held its list weakly, so dropping the last handle on a
/// sweeper whose invalidation had failed ended the retry silently, and other processes kept
/// the old version after the server answered again.
#[test]
fn a_failed_invalidation_lands_after_its_sweeper_is_dropped() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let process = || impatient(&server);
    let (writer, reader) = (process(), process());
    let n = note(11, 0);
    known(&writer, [&n]);
    let before = reader.version(&n).unwrap().counter.unwrap();

    server.pause();
    let invalidated_at = now_ns();
    assert!(
        writer.invalidate(&note(11, 1)).is_err(),
        "memcached is paused"
    );
    drop(writer); // the last handle: a request's clone, a reconfiguration
    server.resume();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = reader.version(&n).unwrap().counter.unwrap();
        if now >= invalidated_at {
            break; // the retry landed
        }
        assert!(
            Instant::now() < deadline,
            "the invalidation was forgotten with its sweeper: counter {now}, was {before}, \
             invalidated at {invalidated_at}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record versioned by its field alone (no counter of its own in its keys).
#[derive(Debug, Clone, Sweepable)]
struct Author {
    id: i64,
    name: String,
    #[sweeper(version)]
    revision: u64,
}

/// A page versioned by its field alone, like `Author`.
#[derive(Debug, Clone, Sweepable)]
struct Wiki {
    id: i64,
    #[sweeper(version)]
    revision: u64,
}

/// An author's block inside a post's (counter) and inside a wiki page's (field) block.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(post, 600, "post") -%}
<article>{% filter cachesweeper::filters::cachesweeper(author, 600, "author") %}<b>{{ author.name }}</b>{% endfilter %}</article>
{%- endfilter %}{% filter cachesweeper::filters::cachesweeper(wiki, 600, "wiki") -%}
<aside>{% filter cachesweeper::filters::cachesweeper(author, 600, "author-aside") %}<i>{{ author.name }}</i>{% endfilter %}</aside>
{%- endfilter %}"#
)]
struct ByAuthor<'a> {
    post: &'a Post,
    wiki: &'a Wiki,
    /// The same author whoever looks: the post's and the wiki page's blocks show it.
    #[sweeper(same_for_everyone)]
    author: &'a Author,
}

/// Another process on the same cache: no L1, no flights, no hints in common.
fn other_process(s: &Sweeper) -> Sweeper {
    Sweeper::builder()
        .backend(std::sync::Arc::clone(s.backend()))
        .l1(0)
        .build()
        .unwrap()
}

/// Issue 20, item 1: a record versioned by a field alone, in a block of its own inside an
/// outer fragment, reported no version to the outer one, which kept being served with the old
/// record after `invalidate` returned `Ok`.
#[test]
fn a_field_versioned_record_inside_a_fragment_is_remembered() {
    for case in cases() {
        let s = &case.sweeper;
        let other = other_process(s);
        let wiki = Wiki { id: 1, revision: 1 };
        let before = Author {
            id: 1,
            name: "Ann".into(),
            revision: 1,
        };
        known(s, [&POST]);
        known(s, [&before]);
        let page = |author| ByAuthor {
            post: &POST,
            wiki: &wiki,
            author,
        };
        for process in [s, &other] {
            for html in [
                process.scope().render(&page(&before)).unwrap(),
                awaited(&process.scope(), &page(&before)),
            ] {
                assert!(html.contains("<b>Ann</b>") && html.contains("<i>Ann</i>"));
            }
        }
        let warm = other.scope();
        warm.render(&page(&before)).unwrap();
        assert_eq!(warm.stats().misses, 0, "{}: {:?}", case.name, warm.stats());

        let after = Author {
            name: "Bea".into(),
            revision: 2,
            ..before.clone()
        };
        s.invalidate(&after).unwrap();
        for process in [s, &other] {
            for html in [
                process.scope().render(&page(&after)).unwrap(),
                awaited(&process.scope(), &page(&after)),
            ] {
                assert!(
                    html.contains("<b>Bea</b>") && html.contains("<i>Bea</i>"),
                    "{}: the old author after invalidate returned Ok: {html}",
                    case.name
                );
            }
        }
        // And the pages around the new author are stored again: a later render hits.
        std::thread::sleep(Duration::from_millis(5));
        other.scope().render(&page(&after)).unwrap();
        let warm = other.scope();
        assert!(warm.render(&page(&after)).unwrap().contains("<b>Bea</b>"));
        assert_eq!(warm.stats().misses, 0, "{}: {:?}", case.name, warm.stats());
    }
}

/// Issue 20, item 4: a debug render stored an outer fragment versioned by a field alone (the
/// store rule compared a counter, and it had none), with the debug marks of the blocks inside
/// it; other processes then served the marks to everyone.
#[test]
fn a_debug_render_stores_nothing_whatever_versions_its_records() {
    for case in cases() {
        let s = &case.sweeper;
        let author = Author {
            id: 2,
            name: "Cy".into(),
            revision: 1,
        };
        known(s, [&POST]);
        known(s, [&author]);
        let first = Wiki { id: 2, revision: 1 };
        let page = |wiki| ByAuthor {
            post: &POST,
            wiki,
            author: &author,
        };
        s.scope().render(&page(&first)).unwrap();
        // A new revision of the wiki page: its block misses, the author's inside it hits.
        let edited = Wiki { id: 2, revision: 2 };
        for debug in [
            s.scope().debug().render(&page(&edited)).unwrap(),
            awaited(&s.scope().debug(), &page(&edited)),
        ] {
            assert!(debug.contains("<!--cachesweeper hit"), "{debug}");
        }
        let other = other_process(s);
        for html in [
            other.scope().render(&page(&edited)).unwrap(),
            s.scope().render(&page(&edited)).unwrap(),
        ] {
            assert!(
                !html.contains("<!--cachesweeper"),
                "{}: a debug render's marks reached the cache: {html}",
                case.name
            );
        }
    }
}

/// Issue 20, item 6: every version read (`ma ... D0`) gave the counter a new CAS, so an
/// invalidation's compare-and-add kept losing to the reads of a hot record and failed against
/// a healthy server ("still contended after 16 attempts").
#[test]
fn a_hot_record_is_invalidated_whatever_its_read_load() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let writer = common::patient_memcached(&server.url());
    let hot = note(21, 0);
    known(&writer, [&hot]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (reads, failed) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let reader = common::patient_memcached(&server.url());
                let (stop, hot) = (&stop, &hot);
                scope.spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        reader.version(hot).unwrap();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let failed = (0..40)
            .filter(|_| {
                std::thread::sleep(Duration::from_millis(5));
                writer.invalidate(&hot).is_err()
            })
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (reads, failed)
    });
    println!("hot record: {reads} reads by 4 threads, 40 invalidations, {failed} returned Err");
    assert!(reads > 1_000, "the readers ran: {reads}");
    assert_eq!(failed, 0, "invalidations against a healthy server failed");
}

/// Issue 20, item 7: memcached run with `-C` answers CAS 0, a compare checks nothing, and two
/// invalidations at once each added their whole gap: the counter ended an hour ahead of the
/// clock and the record could not be cached, with nothing said. Now versions are neither read
/// nor raised there: pages render (uncached) and the error names the cause.
#[test]
fn memcached_without_cas_is_refused_loudly_and_pages_still_render() {
    let Some(server) = MemcachedProcess::start_with(&["-C"]) else {
        return;
    };
    let s = Sweeper::memcached(&server.url()).unwrap();
    let n = note(22, 0);
    let error = s.invalidate(&n).unwrap_err().to_string();
    assert!(error.contains("-C"), "{error}");
    let renders = Cell::new(0);
    let parts = KeyParts::new().part("no-cas");
    for _ in 0..3 {
        let html = s
            .scope()
            .fragment(&n, 600, &parts, || {
                renders.set(renders.get() + 1);
                Ok::<_, std::convert::Infallible>("<p>22</p>".to_owned())
            })
            .unwrap();
        assert_eq!(html, "<p>22</p>");
    }
    assert_eq!(
        renders.get(),
        3,
        "nothing is served from a server without CAS"
    );
    assert!(s.stats().errors > 0, "{:?}", s.stats());
}

/// Issue 20, item 8: a restarted memcached issues the same CAS numbers again, so a raise that
/// used what this process had seen of a counter before the restart matched the recreated one
/// and added a gap computed for another value: the counter landed ahead of the clock by the
/// time between the two, and nothing under it could be stored meanwhile.
#[test]
fn a_raise_after_a_restart_lands_at_the_clock() {
    let Some(mut server) = MemcachedProcess::start() else {
        return;
    };
    let url = server.url();
    let n = note(23, 0);
    let writer = Sweeper::memcached(&url).unwrap();
    known(&writer, [&n]); // the first item of this server: CAS 1, a second ago
    writer.version(&n).unwrap();
    server.restart();
    std::thread::sleep(Duration::from_millis(300));
    let reader = Sweeper::memcached(&url).unwrap();
    // Recreates the counter, at the CAS numbers the first server gave it (a read by `ma`
    // gave a counter a new CAS, as the writer's own read did).
    reader.version(&n).unwrap();
    reader.version(&n).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    writer.invalidate(&n).unwrap();
    let after = now_ns();
    let raised = reader.version(&n).unwrap().counter.unwrap();
    assert!(
        raised <= after,
        "the counter landed {} ms ahead of the clock",
        (raised - after) / 1_000_000
    );
}

/// Issue 20, item 2: a version read chose the value it would recreate a missing counter at
/// before its request travelled. A slow read left; an invalidation raised the counter and
/// returned `Ok`; the counter was lost; the slow read arrived and recreated it older than the
/// invalidation. A render that had read its rows before the write then stored them under it,
/// and every page after `Ok` showed them. A counter created where one was missing is now odd
/// (not confirmed): nothing is stored under it until a render raises it past its creation.
#[test]
fn a_counter_recreated_by_a_slow_read_never_carries_old_rows() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let delay = Duration::from_millis(150);
    let slow = Sweeper::builder()
        .backend(
            Memcached::builder()
                .server(SlowLink::start(server.port(), delay).memcached_url())
                .io_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let process = || Sweeper::memcached(&server.url()).unwrap();
    let (writer, victim, reader) = (process(), process(), process());
    let parts = KeyParts::new().part("slow");
    let show = |scope: &Scope, n: &Note| shown_likes(scope, n, &parts);
    let old = note(24, 0);
    known(&writer, [&old]);
    slow.version(&old).unwrap(); // the link is up and idle
    let key = writer.counter_key(&old);

    std::thread::scope(|scope| {
        let started = Instant::now();
        // A slow read leaves...
        let read = scope.spawn(|| slow.version(&old).unwrap());
        std::thread::sleep(Duration::from_millis(10));
        // ...a request begins and reads the old row...
        let request = victim.scope();
        std::thread::sleep(Duration::from_millis(10));
        // ...a vote commits and is invalidated...
        let new = note(24, 1);
        writer.invalidate(&new).unwrap();
        // ...the counter is lost (an eviction)...
        assert!(server.delete(&key));
        // ...and the slow read arrives, before the request learns its versions.
        read.join().unwrap();
        assert!(started.elapsed() >= delay);
        assert_eq!(show(&request, &old), "0", "it shows what it read");
        // Every request that begins now shows the vote.
        for _ in 0..3 {
            assert_eq!(show(&reader.scope(), &new), "1", "a page after Ok");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Found by issue 20's checker (scenarios k to n): the memcached backend's tokio client was
/// made on the first runtime that used it, and its pooled connections failed ("a Tokio context
/// is being shut down") once that runtime was gone, so an async invalidation on another
/// runtime failed against a healthy server.
#[test]
fn an_async_invalidation_outlives_the_runtime_that_first_used_the_cache() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let s = common::patient_memcached(&server.url());
    let notes: Vec<Note> = (30..34).map(|id| note(id, 0)).collect();
    known(&s, &notes);
    // Threads with runtimes of their own, ending one after another while the others go on;
    // ten times over, since what fails is a use of a connection during another runtime's
    // shutdown.
    let failed: usize = (0..10)
        .map(|_| {
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..4)
                    .map(|t| {
                        let (s, n) = (&s, &notes[t]);
                        scope.spawn(move || {
                            let runtime = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .unwrap();
                            (0..40 * (t + 1))
                                .filter(|_| runtime.block_on(s.invalidate_async(n)).is_err())
                                .count()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .sum::<usize>()
            })
        })
        .sum();
    assert_eq!(
        failed, 0,
        "async invalidations failed against a healthy server"
    );
}

/// Issue 20, item 3: Redis replicates asynchronously, so a raise the master acknowledged and
/// its replica never received was lost when the replica was promoted, which still held the old
/// counter and the old fragment: both processes showed the old record after `Ok`. A raise on a
/// cluster now waits (`WAIT`) for every replica of its master, and is not `Ok` until they have
/// it; one that is not acknowledged is retried until it lands, on whichever node then serves
/// the counter.
#[test]
fn a_raise_acknowledged_on_a_redis_cluster_survives_a_failover() {
    let Some(mut cluster) = RedisCluster::start_with_replicas(1) else {
        return;
    };
    let writer = Sweeper::builder()
        .backend(Redis::cluster(&cluster.urls()).unwrap())
        .build()
        .unwrap();
    let parts = KeyParts::new().part("failover");
    let show = |scope: &Scope, n: &Note| shown_likes(scope, n, &parts);
    let old = note(26, 0);
    known(&writer, [&old]);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(show(&writer.scope(), &old), "0"); // stored, and replicated
    std::thread::sleep(Duration::from_millis(300));

    let (master, replica) = cluster.master_and_replica(&writer.counter_key(&old));
    // The link to the replica breaks: paused, and cut off by its master (what was already
    // sent would still reach a paused process's socket).
    cluster.nodes()[replica].pause();
    cluster.nodes()[master].command("CLIENT KILL TYPE replica");
    let new = note(26, 1); // committed
    let acknowledged = writer.invalidate(&new).is_ok();
    cluster.nodes_mut()[master].kill(); // the master dies, with whatever only it had
    cluster.nodes()[replica].resume();
    cluster.promote(replica);

    let reader = Sweeper::builder()
        .backend(Redis::cluster(&cluster.live_urls()).unwrap())
        .build()
        .unwrap();
    if acknowledged {
        assert_eq!(
            show(&reader.scope(), &new),
            "1",
            "a raise acknowledged with Ok was lost in the failover"
        );
    }
    // Acknowledged or not, the invalidation lands: the retry reaches the promoted replica.
    let deadline = Instant::now() + Duration::from_secs(15);
    while show(&reader.scope(), &new) != "1" {
        assert!(
            Instant::now() < deadline,
            "the invalidation never landed on the promoted replica (acknowledged: {acknowledged})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A post with a "card" block on two pages.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(post, 60, "card", digest=false) %}<detail>{{ post.id }}</detail>{% endfilter %}"#
)]
struct Detail<'a> {
    post: &'a Post,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(post, 60, "card", digest=false) %}<item>{{ post.id }}</item>{% endfilter %}"#
)]
struct ListItem<'a> {
    post: &'a Post,
}

/// Issue 20, item 5: two templates' blocks with the same name on the same record shared an
/// entry when their keys carried no template digest (Askama's own `render()` then; a block
/// with `digest=false` now): a Detail page showed the ListItem block's HTML. The filter names
/// the block's template, which a key without a digest carries.
#[test]
fn two_templates_blocks_of_one_name_never_share_an_entry() {
    for case in cases() {
        let s = &case.sweeper;
        known(s, [&POST]);
        let (detail, item) = (Detail { post: &POST }, ListItem { post: &POST });
        for _ in 0..4 {
            assert_eq!(s.scope().render(&detail).unwrap(), "<detail>1</detail>");
            assert_eq!(
                s.scope().render(&item).unwrap(),
                "<item>1</item>",
                "{}",
                case.name
            );
        }
        assert!(s.stats().hits >= 4, "{}: {:?}", case.name, s.stats());
    }
}

/// Issue 20, also seen: Redis counters were not refreshed by reads, so a hot record read for
/// 30 days and never raised expired (and cost a render that cannot store). Reads now refresh
/// what they read, one batch in 64.
#[test]
fn redis_counters_live_on_while_they_are_read() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let s = Sweeper::redis(&server.url()).unwrap();
    let hot = note(27, 0);
    known(&s, [&hot]);
    // The key as stored: `namespace|v|{record}`, the record its hash tag.
    let key = s.counter_key(&hot);
    let mut fields = key.splitn(3, '|');
    let (namespace, kind, record) = (
        fields.next().unwrap(),
        fields.next().unwrap(),
        fields.next().unwrap(),
    );
    let tagged = format!("{namespace}|{kind}|{{{record}}}");
    assert_eq!(
        server.command(&format!("EXPIRE {tagged} 100")).as_deref(),
        Some(":1")
    );
    let ttl = || {
        server
            .command(&format!("TTL {tagged}"))
            .and_then(|t| t.trim_start_matches(':').parse::<i64>().ok())
            .unwrap()
    };
    let mut reads = 0;
    while ttl() <= 100 {
        s.version(&hot).unwrap();
        reads += 1;
        assert!(
            reads < 10_000,
            "the counter's time to live was never refreshed"
        );
    }
    assert!(
        ttl() > 24 * 60 * 60,
        "refreshed to the counters' 30 days: {}",
        ttl()
    );
}

/// Two templates with a "summary" block on one record, rendered as values inside one page.
#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(post, 60, "summary") %}<a>{{ post.id }}</a>{% endfilter %}"#
)]
struct CardA<'a> {
    post: &'a Post,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = r#"{% filter cachesweeper::filters::cachesweeper(post, 60, "summary") %}<b>{{ post.id }}</b>{% endfilter %}"#
)]
struct CardB<'a> {
    post: &'a Post,
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(ext = "html", source = r#"{{ a|safe }}|{{ b|safe }}"#)]
struct TwoCards<'a> {
    a: CardA<'a>,
    b: CardB<'a>,
}

/// Found in review of item 5: templates rendered as values inside a page (`{{ card }}`) take the
/// page's digest, which does not cover them, so their same-named blocks on one record shared an
/// entry under `sweeper.render` too. Every key now names its block's template.
#[test]
fn blocks_of_templates_rendered_inside_a_page_never_share_an_entry() {
    for case in cases() {
        let s = &case.sweeper;
        known(s, [&POST]);
        let page = || TwoCards {
            a: CardA { post: &POST },
            b: CardB { post: &POST },
        };
        for _ in 0..2 {
            assert_eq!(
                s.scope().render(&page()).unwrap(),
                "<a>1</a>|<b>1</b>",
                "{}",
                case.name
            );
        }
    }
}
