//! Values the cache cannot or should not serve: a fragment over the item limit is rendered and
//! not stored; a stored value the library did not write, a truncated one, or one that is not
//! UTF-8 is a miss, and the fresh render overwrites it.

use crate::common;

use std::time::Duration;

use cachesweeper::backend::{Memcached, SetItem};
use cachesweeper::{KeyParts, Sweeper};
use cachesweeper_suite::memcached::MemcachedProcess;
use common::{cases, comment, known};

fn ok(html: String) -> impl FnOnce() -> Result<String, std::convert::Infallible> {
    move || Ok(html)
}

#[test]
fn an_oversized_fragment_is_rendered_and_not_stored() {
    for case in cases() {
        let s = &case.sweeper;
        let big = "x".repeat(2 * 1024 * 1024);
        let c = comment(1, 1);
        known(s, [&c]);
        let parts = KeyParts::new();
        for _ in 0..2 {
            assert_eq!(
                s.scope()
                    .fragment(&c, 600, &parts, ok(big.clone()))
                    .unwrap()
                    .len(),
                big.len()
            );
        }
        // The second lookup, within the single-flight grace period, may be handed the first
        // render's result instead of rendering again; nothing is ever stored.
        let stats = s.stats();
        assert_eq!(
            (
                stats.misses + stats.coalesced,
                stats.oversized,
                stats.errors
            ),
            (2, stats.misses, 0),
            "{}",
            case.name
        );
        let key = s.fragment_key(&c, &parts).unwrap();
        assert_eq!(
            cachesweeper::backend::conformance::get(s.backend().as_ref(), &[&key]),
            vec![None],
            "{}",
            case.name
        );
    }
}

#[test]
fn a_server_limit_below_the_configured_one_is_an_error_not_a_failure() {
    // memcached started with a 512 KiB item limit, the backend told 1 MiB: the server refuses
    // the write; the page does not notice.
    let Some(server) = MemcachedProcess::start_with(&["-I", "512k"]) else {
        return;
    };
    let s = Sweeper::builder()
        .backend(
            Memcached::builder()
                .server(server.url())
                .max_value_len(1024 * 1024)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let html = "y".repeat(700 * 1024);
    let c = comment(2, 1);
    assert_eq!(
        s.scope()
            .fragment(&c, 600, &KeyParts::new(), ok(html.clone()))
            .unwrap(),
        html
    );
    assert_eq!(
        s.scope()
            .fragment(&c, 600, &KeyParts::new(), ok(html.clone()))
            .unwrap(),
        html
    );
    assert!(s.stats().errors >= 1, "{:?}", s.stats());
}

#[test]
fn foreign_truncated_and_non_utf8_values_are_misses_and_are_overwritten() {
    for case in cases() {
        let s = &case.sweeper;
        let c = comment(3, 1);
        let mut truncated = b"cs\x01f".to_vec();
        truncated.extend_from_slice(&100u32.to_le_bytes());
        truncated.extend_from_slice(b"only a few bytes");
        let mut not_utf8 = b"cs\x01f".to_vec();
        not_utf8.extend_from_slice(&2u32.to_le_bytes());
        not_utf8.extend_from_slice(b"\xff\xfe");
        for (i, garbage) in [
            b"<p>written by someone else</p>".to_vec(),
            truncated,
            not_utf8,
        ]
        .into_iter()
        .enumerate()
        {
            // A key of its own per case: the L1 (in front of memcached) rightly keeps serving
            // what this process stored under a versioned key, whoever overwrites it remotely.
            let parts = KeyParts::new().part("bad").part(i);
            let key = s.fragment_key(&c, &parts).unwrap();
            common::wait(s.backend().set_many(&[SetItem {
                key: &key,
                value: &garbage,
                ttl: None,
            }]))
            .unwrap();
            let html = s
                .scope()
                .fragment(&c, 600, &parts, ok(format!("<p>fresh {i}</p>")))
                .unwrap();
            assert_eq!(html, format!("<p>fresh {i}</p>"), "{}", case.name);
            // Overwritten: the next lookup hits the fresh render.
            let again = s
                .scope()
                .fragment(&c, 600, &parts, ok("<p>not rendered</p>".into()))
                .unwrap();
            assert_eq!(again, format!("<p>fresh {i}</p>"), "{}", case.name);
        }
        assert_eq!(s.stats().corrupt, 3, "{}", case.name);
    }
}

#[test]
fn a_time_to_live_beyond_what_the_cache_accepts_is_clamped_not_an_error() {
    // memcached reads more than 30 days as an absolute time, 32 bits of it; moka adds it to an
    // `Instant`. Years, decades and `Duration::MAX` all store, and the batch they are in too.
    let year = Duration::from_secs(365 * 24 * 60 * 60);
    for case in cases() {
        let s = &case.sweeper;
        for (i, ttl) in [year, 31 * year, 100 * year, Duration::MAX]
            .into_iter()
            .enumerate()
        {
            let c = comment(100 + i as i64, 1);
            known(s, [&c]);
            let parts = KeyParts::new().part("long-lived");
            let errors = s.stats().errors;
            s.scope()
                .fragment(&c, ttl, &parts, ok("kept".into()))
                .unwrap();
            assert_eq!(s.stats().errors, errors, "{}: {ttl:?}", case.name);
            let found = s
                .scope()
                .fragment(&c, ttl, &parts, ok("rendered again".into()))
                .unwrap();
            assert_eq!(found, "kept", "{}: {ttl:?} was stored", case.name);
        }
    }
}
