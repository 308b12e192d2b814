//! The conformance suite every [`Backend`] must pass.
//!
//! Each check is a plain function over `&dyn Backend` that panics on a failure, so any test
//! harness can run it: `conformance::run_all(&my_backend)`. The backend must be empty of the keys
//! the suite uses (they all start with `conformance|`); pass a fresh one.

use std::time::Duration;

use super::{Backend, BackendExt, Leased, SetItem};

/// Runs every check.
pub fn run_all(backend: &dyn Backend) {
    get_missing_is_none(backend);
    set_then_get_many_in_order(backend);
    set_replaces(backend);
    binary_values_round_trip(backend);
    leases(backend);
    incr_creates_then_adds(backend);
    incr_many_is_per_key(backend);
    incr_is_atomic_across_threads(backend);
    raise_is_a_monotonic_max(backend);
    raise_is_atomic_across_threads(backend);
    delete_removes(backend);
    ttl_expires(backend);
}

/// A key no one stored is `None`; an empty batch is an empty answer.
pub fn get_missing_is_none(backend: &dyn Backend) {
    assert_eq!(
        backend.get_many(&["conformance|missing"]).unwrap(),
        vec![None]
    );
    assert_eq!(
        backend.get_many(&[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
}

/// `get_many` answers in the order of the keys asked, with `None` for the gaps.
pub fn set_then_get_many_in_order(backend: &dyn Backend) {
    let items = [
        SetItem {
            key: "conformance|a",
            value: b"1",
            ttl: None,
        },
        SetItem {
            key: "conformance|b",
            value: b"22",
            ttl: Some(Duration::from_secs(60)),
        },
    ];
    backend.set_many(&items).unwrap();
    let got = backend
        .get_many(&["conformance|b", "conformance|nope", "conformance|a"])
        .unwrap();
    assert_eq!(got, vec![Some(b"22".to_vec()), None, Some(b"1".to_vec())]);
}

/// `set_many` overwrites.
pub fn set_replaces(backend: &dyn Backend) {
    let key = "conformance|replace";
    backend
        .set_many(&[SetItem {
            key,
            value: b"old",
            ttl: None,
        }])
        .unwrap();
    backend
        .set_many(&[SetItem {
            key,
            value: b"new",
            ttl: None,
        }])
        .unwrap();
    assert_eq!(
        backend.get_many(&[key]).unwrap(),
        vec![Some(b"new".to_vec())]
    );
}

/// Values are bytes: NUL, CR LF and invalid UTF-8 come back unchanged, as does a large value.
pub fn binary_values_round_trip(backend: &dyn Backend) {
    let odd = b"\0\r\nEND\r\n\xff\xfe".to_vec();
    let large: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    backend
        .set_many(&[
            SetItem {
                key: "conformance|odd",
                value: &odd,
                ttl: None,
            },
            SetItem {
                key: "conformance|large",
                value: &large,
                ttl: None,
            },
        ])
        .unwrap();
    let got = backend
        .get_many(&["conformance|odd", "conformance|large"])
        .unwrap();
    assert_eq!(got, vec![Some(odd), Some(large)]);
}

/// Leases: the first leased lookup of a missing key wins it; while it is held, another one
/// is told to wait (or, on a backend without leases, wins too); a stored value ends it, and so
/// does a release.
pub fn leases(backend: &dyn Backend) {
    let (stored, released) = ("conformance|lease-stored", "conformance|lease-released");
    let lease = Duration::from_secs(2);
    let leased = |key: &str| backend.get_leased(&[key], lease).pop().unwrap().unwrap();
    assert_eq!(leased(stored), Leased::Won);
    assert!(matches!(leased(stored), Leased::Busy | Leased::Won));
    backend
        .set_many(&[SetItem {
            key: stored,
            value: b"done",
            ttl: None,
        }])
        .unwrap();
    assert_eq!(leased(stored), Leased::Hit(b"done".to_vec()));

    assert_eq!(leased(released), Leased::Won);
    backend.release_leases(&[released]).unwrap();
    assert_eq!(
        leased(released),
        Leased::Won,
        "a released lease is free at once"
    );
    backend.release_leases(&[released]).unwrap();
}

/// A missing counter is created at `initial`; an existing one gets `delta`.
pub fn incr_creates_then_adds(backend: &dyn Backend) {
    let key = "conformance|counter";
    assert_eq!(backend.incr_many(&[key], 1, 1_000).unwrap(), vec![1_000]);
    assert_eq!(backend.incr_many(&[key], 1, 5).unwrap(), vec![1_001]);
    assert_eq!(backend.incr_many(&[key], 0, 5).unwrap(), vec![1_001]);
}

/// `raise_each` creates a missing counter at the floor, and otherwise sets it to the larger of
/// the floor and its value plus one.
pub fn raise_is_a_monotonic_max(backend: &dyn Backend) {
    let (a, b) = ("conformance|raise-a", "conformance|raise-b");
    let raise = |key: &str, floor: u64| backend.raise_each(&[key], floor).pop().unwrap().unwrap();
    assert_eq!(raise(a, 1_000), 1_000);
    assert_eq!(raise(a, 5_000), 5_000);
    assert_eq!(raise(a, 10), 5_001, "a lower floor still adds one");
    assert_eq!(backend.incr_many(&[a], 0, 7).unwrap(), vec![5_001]);
    assert_eq!(backend.incr_many(&[b], 0, 70).unwrap(), vec![70]);
    let both: Vec<u64> = backend
        .raise_each(&[a, b], 6_000)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(both, vec![6_000, 6_000]);
}

/// Concurrent raises are never lost: each adds at least one, and the counter ends at least at
/// the highest floor.
pub fn raise_is_atomic_across_threads(backend: &dyn Backend) {
    let key = "conformance|raise-threads";
    let start = backend
        .raise_each(&[key], 1_000_000)
        .pop()
        .unwrap()
        .unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            scope.spawn(move || {
                for i in 0..100u64 {
                    // Floors that sometimes jump ahead, sometimes lag behind.
                    let floor = start + (i * 4 + thread) * if i % 3 == 0 { 3 } else { 0 };
                    backend.raise_each(&[key], floor).pop().unwrap().unwrap();
                }
            });
        }
    });
    let end = backend.incr_many(&[key], 0, 0).unwrap()[0];
    assert!(
        end >= start + 400,
        "{end} < {start} + 400: a raise was lost"
    );
    assert!(end >= start + 399 * 3, "{end} is below the highest floor");
}

/// `incr_many` treats each key on its own, in order.
pub fn incr_many_is_per_key(backend: &dyn Backend) {
    let (a, b) = ("conformance|ca", "conformance|cb");
    assert_eq!(backend.incr_many(&[a], 0, 10).unwrap(), vec![10]);
    assert_eq!(backend.incr_many(&[a, b], 2, 20).unwrap(), vec![12, 20]);
}

/// Concurrent increments are never lost.
pub fn incr_is_atomic_across_threads(backend: &dyn Backend) {
    let key = "conformance|race";
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..250 {
                    backend.incr_many(&[key], 1, 0).unwrap();
                }
            });
        }
    });
    // Whoever came first created the counter at 0 without adding; the other 999 added one each.
    assert_eq!(backend.incr_many(&[key], 0, 0).unwrap(), vec![999]);
}

/// `delete` removes, and says whether there was anything.
pub fn delete_removes(backend: &dyn Backend) {
    let key = "conformance|delete";
    backend
        .set_many(&[SetItem {
            key,
            value: b"x",
            ttl: None,
        }])
        .unwrap();
    assert!(backend.delete(key).unwrap());
    assert!(!backend.delete(key).unwrap());
    assert_eq!(backend.get_many(&[key]).unwrap(), vec![None]);
}

/// A value with a time to live is gone after it.
pub fn ttl_expires(backend: &dyn Backend) {
    let key = "conformance|ttl";
    backend
        .set_many(&[SetItem {
            key,
            value: b"x",
            ttl: Some(Duration::from_secs(1)),
        }])
        .unwrap();
    assert_eq!(backend.get_many(&[key]).unwrap(), vec![Some(b"x".to_vec())]);
    // memcached counts whole seconds from its own clock tick: allow two.
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(backend.get_many(&[key]).unwrap(), vec![None]);
}
