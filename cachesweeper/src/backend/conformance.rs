//! The conformance suite every [`Backend`] must pass.
//!
//! Each check is a plain function over `&dyn Backend` that panics on a failure, so any test
//! harness can run it: `conformance::run_all(&my_backend)`. The checks await the backend's
//! operations the way a blocking render does (parking the thread between polls), and the
//! concurrency checks also run many operations at once on one thread, as a server's tasks do.
//! The backend must be empty of the keys the suite uses (they all start with `conformance|`);
//! pass a fresh one.

use std::time::Duration;

use super::{Backend, Leased, SetItem};
use crate::Result;
use crate::io::{block_on, join_all};

/// Runs every check.
pub fn run_all(backend: &dyn Backend) {
    empty_batches(backend);
    set_then_get_in_order(backend);
    set_replaces(backend);
    binary_values_round_trip(backend);
    leases(backend);
    incr_creates_then_adds(backend);
    incr_is_per_key(backend);
    incr_is_atomic_across_threads(backend);
    raise_is_a_monotonic_max(backend);
    raise_is_atomic_across_tasks_and_threads(backend);
    ttl_expires(backend);
}

/// The values under `keys`, in order (`None` for a miss, whose lease is released at once), as
/// the checks read them; panics if the backend fails. For tests of your own that look at
/// what a backend holds.
pub fn get(backend: &dyn Backend, keys: &[&str]) -> Vec<Option<Vec<u8>>> {
    let found = unwrap_all(block_on(backend.get_leased(keys, Duration::from_secs(1))));
    let found: Vec<Option<Vec<u8>>> = found
        .into_iter()
        .map(|found| match found {
            Leased::Hit(value) => Some(value),
            Leased::Won | Leased::Busy => None,
        })
        .collect();
    let missed: Vec<&str> = keys
        .iter()
        .zip(&found)
        .filter_map(|(key, found)| found.is_none().then_some(*key))
        .collect();
    block_on(backend.release_leases(&missed)).unwrap();
    found
}

fn unwrap_all<T>(results: Vec<Result<T>>) -> Vec<T> {
    results.into_iter().map(Result::unwrap).collect()
}

/// Stores `(key, value, ttl)` items, in one batch.
fn set(backend: &dyn Backend, items: &[(&str, &[u8], Option<Duration>)]) {
    let items: Vec<SetItem<'_>> = items
        .iter()
        .map(|&(key, value, ttl)| SetItem { key, value, ttl })
        .collect();
    block_on(backend.set_many(&items)).unwrap();
}

fn incr(backend: &dyn Backend, keys: &[&str], delta: u64, initial: u64) -> Vec<u64> {
    unwrap_all(block_on(backend.incr_each(keys, delta, initial)))
}

fn raise(backend: &dyn Backend, keys: &[&str], floor: u64) -> Vec<u64> {
    unwrap_all(block_on(backend.raise_each(keys, floor)))
}

/// An empty batch is an empty answer, and a key no one stored is a miss.
pub fn empty_batches(backend: &dyn Backend) {
    let lease = Duration::from_secs(1);
    block_on(async {
        assert!(backend.get_leased(&[], lease).await.is_empty());
        backend.set_many(&[]).await.unwrap();
        assert!(backend.incr_each(&[], 1, 1).await.is_empty());
        assert!(backend.raise_each(&[], 1).await.is_empty());
        backend.release_leases(&[]).await.unwrap();
    });
    assert_eq!(get(backend, &["conformance|missing"]), vec![None]);
}

/// Lookups answer in the order of the keys asked, with misses for the gaps.
pub fn set_then_get_in_order(backend: &dyn Backend) {
    let (a, b, minute) = ("conformance|a", "conformance|b", Duration::from_secs(60));
    set(backend, &[(a, b"1", None), (b, b"22", Some(minute))]);
    let got = get(backend, &[b, "conformance|nope", a]);
    assert_eq!(got, vec![Some(b"22".to_vec()), None, Some(b"1".to_vec())]);
}

/// `set_many` overwrites.
pub fn set_replaces(backend: &dyn Backend) {
    let key = "conformance|replace";
    for value in [&b"old"[..], b"new"] {
        set(backend, &[(key, value, None)]);
    }
    assert_eq!(get(backend, &[key]), vec![Some(b"new".to_vec())]);
}

/// Values are bytes: NUL, CR LF and invalid UTF-8 come back unchanged, as does a large value.
pub fn binary_values_round_trip(backend: &dyn Backend) {
    let odd = b"\0\r\nEND\r\n\xff\xfe".to_vec();
    let large: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    let keys = ["conformance|odd", "conformance|large"];
    set(backend, &[(keys[0], &odd, None), (keys[1], &large, None)]);
    let got = get(backend, &keys);
    assert_eq!(got, vec![Some(odd), Some(large)]);
}

/// Leases: the first leased lookup of a missing key wins it; while it is held, another one
/// is told to wait (or, on a backend without leases, wins too); a stored value ends it, and so
/// does a release.
pub fn leases(backend: &dyn Backend) {
    let (stored, released) = ("conformance|lease-stored", "conformance|lease-released");
    let lease = Duration::from_secs(2);
    let leased = |key: &str| {
        block_on(backend.get_leased(&[key], lease))
            .pop()
            .unwrap()
            .unwrap()
    };
    assert_eq!(leased(stored), Leased::Won);
    assert!(matches!(leased(stored), Leased::Busy | Leased::Won));
    set(backend, &[(stored, b"done", None)]);
    assert_eq!(leased(stored), Leased::Hit(b"done".to_vec()));

    assert_eq!(leased(released), Leased::Won);
    block_on(backend.release_leases(&[released])).unwrap();
    assert_eq!(
        leased(released),
        Leased::Won,
        "a released lease is free at once"
    );
    block_on(backend.release_leases(&[released])).unwrap();
}

/// A missing counter is created at `initial`; an existing one gets `delta`; a read (delta 0)
/// changes nothing.
pub fn incr_creates_then_adds(backend: &dyn Backend) {
    let key = "conformance|counter";
    let steps = [(1, 1_000), (1, 5), (0, 5), (5, 0), (0, 30)];
    let values: Vec<u64> = steps
        .iter()
        .map(|&(delta, initial)| incr(backend, &[key], delta, initial)[0])
        .collect();
    assert_eq!(values, vec![1_000, 1_001, 1_001, 1_006, 1_006]);
}

/// Each key of a batch is counted on its own, in order.
pub fn incr_is_per_key(backend: &dyn Backend) {
    let (a, b, c) = ("conformance|ca", "conformance|cb", "conformance|cc");
    assert_eq!(incr(backend, &[a], 0, 10), vec![10]);
    assert_eq!(incr(backend, &[a, b], 2, 20), vec![12, 20]);
    assert_eq!(incr(backend, &[b, a, c], 0, 7), vec![20, 12, 7]);
}

/// Concurrent increments are never lost.
pub fn incr_is_atomic_across_threads(backend: &dyn Backend) {
    let key = "conformance|race";
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..250 {
                    incr(backend, &[key], 1, 0);
                }
            });
        }
    });
    // Whoever came first created the counter at 0 without adding; the other 999 added one each.
    assert_eq!(incr(backend, &[key], 0, 0), vec![999]);
}

/// Nanoseconds since the epoch on this host's clock.
fn clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `raise_each` creates a missing counter at the floor with its lowest bit set (odd: created,
/// not confirmed); raises a counter found odd to an even number past the time it was found (it
/// may stand for a lost counter newer than the floor), and any other to the even number at or
/// above the larger of the floor and its value plus one; it never lowers one, and mixes with
/// version reads in one batch.
pub fn raise_is_a_monotonic_max(backend: &dyn Backend) {
    let (a, b) = ("conformance|raise-a", "conformance|raise-b");
    let raise_one = |key: &str, floor: u64| raise(backend, &[key], floor)[0];
    assert_eq!(raise_one(a, 1_000), 1_001, "created: odd");
    let before = clock_ns();
    let confirmed = raise_one(a, 5_000);
    assert!(
        confirmed.is_multiple_of(2) && confirmed >= before,
        "an odd counter is confirmed past the clock: {confirmed} < {before}"
    );
    assert_eq!(
        raise_one(a, 10),
        confirmed + 2,
        "a lower floor still adds, to the next even number"
    );
    let ahead = confirmed + 1_001;
    assert_eq!(
        raise_one(a, ahead),
        ahead + 1,
        "an odd floor: the next even number"
    );
    assert_eq!(incr(backend, &[a], 0, 7), vec![ahead + 1]);
    assert_eq!(incr(backend, &[b], 0, 70), vec![70]);
    let missing = "conformance|raise-missing";
    assert_eq!(
        raise(backend, &[a, b, missing], ahead + 1_001),
        vec![ahead + 1_001, ahead + 1_001, (ahead + 1_001) | 1],
        "a missing counter is created at the floor, odd"
    );
    // Below every counter: each goes to the next even number.
    assert_eq!(
        raise(backend, &[b, a], 1),
        vec![ahead + 1_003, ahead + 1_003]
    );
}

/// Concurrent raises are never lost, whether they are tasks side by side on one thread or
/// calls on other threads, all on one counter: each adds at least one, and the counter ends at
/// least at the highest floor.
pub fn raise_is_atomic_across_tasks_and_threads(backend: &dyn Backend) {
    let key = "conformance|raise-race";
    let start = raise(backend, &[key], 1_000_000)[0];
    // Floors that sometimes jump ahead, sometimes lag behind.
    let floor =
        |worker: u64, i: u64| start + (i * 8 + worker) * if i.is_multiple_of(3) { 3 } else { 0 };
    std::thread::scope(|scope| {
        for thread in 4..8u64 {
            scope.spawn(move || {
                for i in 0..100 {
                    raise(backend, &[key], floor(thread, i));
                }
            });
        }
        let tasks = (0..4u64)
            .map(|task| async move {
                for i in 0..100 {
                    let mut raised = backend.raise_each(&[key], floor(task, i)).await;
                    raised.pop().unwrap().unwrap();
                }
            })
            .collect();
        block_on(join_all(tasks));
    });
    let end = incr(backend, &[key], 0, 0)[0];
    assert!(
        end >= start + 800,
        "{end} < {start} + 800: a raise was lost"
    );
    assert!(end >= floor(7, 99), "{end} is below the highest floor");
}

/// A value with a time to live is gone after it; one without stays.
pub fn ttl_expires(backend: &dyn Backend) {
    let (short, kept) = ("conformance|ttl", "conformance|ttl-kept");
    let (second, hour) = (
        Some(Duration::from_secs(1)),
        Some(Duration::from_secs(3600)),
    );
    set(backend, &[(short, b"x", second), (kept, b"y", hour)]);
    let got = || get(backend, &[short, kept]);
    assert_eq!(got(), vec![Some(b"x".to_vec()), Some(b"y".to_vec())]);
    // memcached counts whole seconds from its own clock tick: allow two.
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(got(), vec![None, Some(b"y".to_vec())]);
}
