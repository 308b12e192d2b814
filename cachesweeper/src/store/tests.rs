//! The fragment store against a scripted backend: what a miss stores, and what it does not
//! store, with the backend calls each costs. A lone fragment (`Scope::fragment`) goes through
//! the store alone: a version read, a leased lookup, then one write or one lease release.

use std::convert::Infallible;

use crate::KeyParts;
use crate::scripted::{Note, Scripted};

fn note(id: u32) -> Note {
    Note { id, text: "hi" }
}

fn body(text: &str) -> impl FnOnce() -> Result<String, Infallible> + '_ {
    move || Ok(text.to_owned())
}

#[test]
fn a_miss_is_stored_in_one_write_and_then_hits() {
    let (sweeper, script) = Scripted::sweeper();
    let (n, parts) = (note(1), KeyParts::new().part("n"));
    let request = sweeper.scope();
    assert_eq!(
        request.fragment(&n, 600, &parts, body("<p>1</p>")),
        Ok("<p>1</p>".into())
    );
    assert_eq!(script.take_calls(), ["incr_each", "get_leased", "set_many"]);
    let request = sweeper.scope();
    let again = request.fragment(&n, 600, &parts, || -> Result<String, Infallible> {
        unreachable!("a hit renders nothing")
    });
    assert_eq!(again, Ok("<p>1</p>".into()));
    assert_eq!(script.take_calls(), ["incr_each", "get_leased"]);
    let stats = request.stats();
    assert_eq!((stats.hits, stats.misses, stats.round_trips), (1, 0, 2));
}

#[test]
fn a_fragment_larger_than_the_store_takes_is_served_and_its_lease_released() {
    let (sweeper, script) = Scripted::sweeper();
    script.take_at_most(64);
    let (n, parts) = (note(2), KeyParts::new().part("n"));
    let large = "x".repeat(200);
    let request = sweeper.scope();
    assert_eq!(
        request.fragment(&n, 600, &parts, body(&large)),
        Ok(large.clone())
    );
    // Not written: its lease is given back, so that no other render waits for it.
    assert_eq!(
        script.take_calls(),
        ["incr_each", "get_leased", "release_leases"]
    );
    let stats = request.stats();
    assert_eq!((stats.misses, stats.oversized), (1, 1), "{stats:?}");
}

#[test]
fn a_render_that_began_before_an_invalidation_stores_nothing() {
    let (sweeper, script) = Scripted::sweeper();
    let (n, parts) = (note(3), KeyParts::new().part("n"));
    // The request reads its data, then a write commits and is invalidated...
    let request = sweeper.scope();
    sweeper.invalidate(&n).unwrap();
    script.take_calls();
    // ...and the request renders what it read: served, never stored under the new version.
    assert_eq!(
        request.fragment(&n, 600, &parts, body("old")),
        Ok("old".into())
    );
    assert_eq!(
        script.take_calls(),
        ["incr_each", "get_leased", "release_leases"]
    );
    assert_eq!(request.stats().unstored, 1);
    // A request that begins now renders and stores.
    let later = sweeper.scope();
    assert_eq!(
        later.fragment(&n, 600, &parts, body("new")),
        Ok("new".into())
    );
    assert_eq!(script.take_calls(), ["incr_each", "get_leased", "set_many"]);
}

#[test]
fn a_body_that_fails_releases_its_lease_and_stores_nothing() {
    let (sweeper, script) = Scripted::sweeper();
    let (n, parts) = (note(4), KeyParts::new().part("n"));
    let failed = sweeper
        .scope()
        .fragment(&n, 600, &parts, || Err::<String, _>("the query failed"));
    assert_eq!(failed, Err("the query failed"));
    assert_eq!(
        script.take_calls(),
        ["incr_each", "get_leased", "release_leases"]
    );
    // Nothing was stored: the next render runs the body.
    let request = sweeper.scope();
    assert_eq!(
        request.fragment(&n, 600, &parts, body("ok")),
        Ok("ok".into())
    );
    assert_eq!(request.stats().misses, 1);
}

#[test]
fn a_write_that_fails_costs_the_page_nothing_and_a_later_render_stores() {
    let (sweeper, script) = Scripted::sweeper();
    let (n, parts) = (note(5), KeyParts::new().part("n"));
    script.fail(&["set_many"]);
    let request = sweeper.scope();
    assert_eq!(request.fragment(&n, 600, &parts, body("a")), Ok("a".into()));
    assert_eq!(request.stats().errors, 1);
    script.fail(&[]);
    script.take_calls();
    // For a second, renders that miss it are handed what was rendered (it was fit to store).
    let request = sweeper.scope();
    let handed = request.fragment(&n, 600, &parts, || -> Result<String, Infallible> {
        unreachable!("handed, not rendered")
    });
    assert_eq!(handed, Ok("a".into()));
    assert_eq!(request.stats().coalesced, 1);
    assert_eq!(script.take_calls(), ["incr_each", "get_leased"]);
    // Then a render misses, renders and stores it.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let request = sweeper.scope();
    assert_eq!(request.fragment(&n, 600, &parts, body("a")), Ok("a".into()));
    assert_eq!(script.take_calls(), ["incr_each", "get_leased", "set_many"]);
    assert_eq!(request.stats().misses, 1);
}
