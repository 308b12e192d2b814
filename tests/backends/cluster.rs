//! Several memcached servers: keys spread by weighted rendezvous hashing, membership changes
//! move few keys, a dead server costs only its own keys. Real memcached processes on loopback ports.

use crate::common;

use std::time::Duration;

use askama::Template;
use cachesweeper::Sweeper;
use cachesweeper::backend::{Backend, Memcached, SetItem};
use cachesweeper_suite::memcached::MemcachedProcess;
use common::{Comment, comment, known};

const KEYS: usize = 10_000;

fn servers(n: usize) -> Option<Vec<MemcachedProcess>> {
    (0..n).map(|_| MemcachedProcess::start()).collect()
}

fn cluster(servers: &[&MemcachedProcess]) -> Memcached {
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    Memcached::from_url(&urls.join(",")).unwrap()
}

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("cs|f|blog::Comment|{i}|c1795000000000000{i}||h"))
        .collect()
}

/// Stores every key through `backend`, in batches.
fn store_all(backend: &Memcached, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let items: Vec<SetItem<'_>> = chunk
            .iter()
            .map(|k| SetItem {
                key: k,
                value: b"v",
                ttl: None,
            })
            .collect();
        common::wait(backend.set_many(&items)).unwrap();
    }
}

/// How many of `keys` `backend` finds.
fn found_by(backend: &Memcached, keys: &[String]) -> usize {
    keys.chunks(500)
        .map(|chunk| {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            cachesweeper::backend::conformance::get(backend, &refs)
                .iter()
                .filter(|v| v.is_some())
                .count()
        })
        .sum()
}

/// How many of `keys` each single server holds.
fn held_by_each(servers: &[&MemcachedProcess], keys: &[String]) -> Vec<usize> {
    servers
        .iter()
        .map(|s| found_by(&Memcached::from_url(&s.url()).unwrap(), keys))
        .collect()
}

#[test]
fn keys_spread_evenly_and_membership_changes_move_few() {
    let Some(four) = servers(4) else { return };
    let three: Vec<&MemcachedProcess> = four[..3].iter().collect();
    let keys = keys();
    store_all(&cluster(&three), &keys);
    let held = held_by_each(&three, &keys);
    assert_eq!(held.iter().sum::<usize>(), KEYS, "{held:?}");
    for &n in &held {
        let share = n as f64 / (KEYS as f64 / 3.0);
        assert!((0.85..=1.15).contains(&share), "uneven spread: {held:?}");
        // Rendezvous hashing (the default) does far better than the ±15% asked for.
        assert!((0.93..=1.07).contains(&share), "uneven spread: {held:?}");
    }
    eprintln!("3 servers: {held:?}");

    // A fourth server: a client that knows all four still finds at least 70% where they were.
    let all: Vec<&MemcachedProcess> = four.iter().collect();
    let grown = cluster(&all);
    let found = found_by(&grown, &keys);
    let moved = KEYS - found;
    eprintln!("adding a 4th server moved {moved} of {KEYS} keys");
    assert!(moved as f64 <= 0.30 * KEYS as f64, "{moved} keys moved");

    // Removing server 0: a client that knows servers 1 and 2 finds all of their keys.
    let shrunk = cluster(&three[1..]);
    let found = found_by(&shrunk, &keys);
    assert_eq!(
        found,
        held[1] + held[2],
        "only the removed server's keys moved"
    );
}

#[test]
fn weights_take_their_share() {
    let Some(three) = servers(3) else { return };
    let urls = format!(
        "{},{}?weight=2,{}",
        three[0].url(),
        three[1].url(),
        three[2].url()
    );
    let keys = keys();
    store_all(&Memcached::from_url(&urls).unwrap(), &keys);
    let refs: Vec<&MemcachedProcess> = three.iter().collect();
    let held = held_by_each(&refs, &keys);
    let ratio = held[1] as f64 / ((held[0] + held[2]) as f64 / 2.0);
    eprintln!("weights 1, 2, 1: {held:?} (ratio {ratio:.2})");
    assert!((1.7..=2.3).contains(&ratio), "{held:?}");
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(
    ext = "html",
    source = "{% for c in comments %}{% filter cachesweeper::filters::cachesweeper(c, 600, \"comment\") %}<p>{{ c.body }}</p>{% endfilter %}{% endfor %}"
)]
struct Page<'a> {
    comments: &'a [Comment],
}

fn sweeper(backend: Memcached) -> Sweeper {
    Sweeper::builder().backend(backend).l1(0).build().unwrap()
}

fn fast(urls: &[String]) -> Memcached {
    urls.iter()
        .fold(Memcached::builder(), |b, u| b.server(u.as_str()))
        .connect_timeout(Duration::from_millis(50))
        .io_timeout(Duration::from_millis(100))
        .circuit_breaker(2, Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn a_dead_server_costs_only_its_keys() {
    let Some(mut three) = servers(3) else { return };
    let urls: Vec<String> = three.iter().map(|s| s.url()).collect();
    let s = sweeper(fast(&urls));
    let comments: Vec<Comment> = (0..300).map(|id| comment(id, 1)).collect();
    known(&s, &comments);
    let page = Page {
        comments: &comments,
    };
    let expected = s.scope().render(&page).unwrap();
    three[1].kill();
    for _ in 0..3 {
        let request = s.scope();
        assert_eq!(request.render(&page).unwrap(), expected);
        let stats = request.stats();
        // A record's counter and fragments live on one server: the records of the two live
        // servers keep hitting, the dead one's third misses.
        assert!(stats.hits >= 170 && stats.misses >= 70, "{stats:?}");
        assert_eq!(stats.hits + stats.misses, 300, "{stats:?}");
    }
}
