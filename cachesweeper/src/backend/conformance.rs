//! The conformance suite every [`Backend`] must pass.
//!
//! Each check is a plain function over `&dyn Backend` that panics on a failure, so any test
//! harness can run it: `conformance::run_all(&my_backend)`, and with the `tokio` feature
//! `conformance::run_all_async(&my_backend)` for the async forms. The backend must be empty of
//! the keys the suite uses (they all start with `conformance|`); pass a fresh one.

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

/// Nanoseconds since the epoch on this host's clock.
fn clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `raise_each` creates a missing counter at the floor with its lowest bit set (odd: created,
/// not confirmed); raises a counter found odd to an even number past the time it was found (it
/// may stand for a lost counter newer than the floor), and any other to the even number at or
/// above the larger of the floor and its value plus one.
pub fn raise_is_a_monotonic_max(backend: &dyn Backend) {
    let (a, b) = ("conformance|raise-a", "conformance|raise-b");
    let raise = |key: &str, floor: u64| backend.raise_each(&[key], floor).pop().unwrap().unwrap();
    assert_eq!(raise(a, 1_000), 1_001, "created: odd");
    let before = clock_ns();
    let confirmed = raise(a, 5_000);
    assert!(
        confirmed.is_multiple_of(2) && confirmed >= before,
        "an odd counter is confirmed past the clock: {confirmed} < {before}"
    );
    assert_eq!(
        raise(a, 10),
        confirmed + 2,
        "a lower floor still adds, to the next even number"
    );
    let ahead = confirmed + 1_001;
    assert_eq!(
        raise(a, ahead),
        ahead + 1,
        "an odd floor: the next even number"
    );
    assert_eq!(backend.incr_many(&[a], 0, 7).unwrap(), vec![ahead + 1]);
    assert_eq!(backend.incr_many(&[b], 0, 70).unwrap(), vec![70]);
    let both: Vec<u64> = backend
        .raise_each(&[a, b], ahead + 1_001)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(both, vec![ahead + 1_001, ahead + 1_001]);
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

/// Runs every check of the async forms: each must answer as its blocking form does, on the
/// same keys, mixed with it. Each check awaits them on a current-thread tokio runtime of its
/// own, as a server's handlers would. The keys differ from [`run_all`]'s, so both can run on
/// one backend.
#[cfg(feature = "tokio")]
pub fn run_all_async(backend: &dyn Backend) {
    async_empty_batches(backend);
    async_reads_match(backend);
    async_leases_match(backend);
    async_set_replaces_and_expires(backend);
    async_incr_matches(backend);
    async_raise_matches(backend);
    async_raise_is_atomic_across_tasks_and_threads(backend);
}

/// A current-thread runtime with its timer and I/O driver, like a server's.
#[cfg(feature = "tokio")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Awaits every future at once, in order: the async forms of one task running side by side,
/// as on a server's runtime.
#[cfg(feature = "tokio")]
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// An empty batch is an empty answer, as in the blocking forms.
#[cfg(feature = "tokio")]
pub fn async_empty_batches(backend: &dyn Backend) {
    runtime().block_on(async {
        assert!(backend.get_each_async(&[]).await.is_empty());
        assert!(
            backend
                .get_leased_async(&[], Duration::from_secs(1))
                .await
                .is_empty()
        );
        backend.set_many_async(&[]).await.unwrap();
        assert!(backend.incr_each_async(&[], 1, 1).await.is_empty());
        assert!(backend.raise_each_async(&[], 1).await.is_empty());
        backend.release_leases_async(&[]).await.unwrap();
    });
}

/// `get_each_async` answers what `get_each` answers, in the order asked, and sees what the
/// blocking form stored (and the other way round).
#[cfg(feature = "tokio")]
pub fn async_reads_match(backend: &dyn Backend) {
    let (a, b, c) = (
        "conformance|async-a",
        "conformance|async-b",
        "conformance|async-c",
    );
    backend
        .set_many(&[
            SetItem {
                key: a,
                value: b"1",
                ttl: None,
            },
            SetItem {
                key: b,
                value: b"\0\r\nEND\r\n\xff",
                ttl: Some(Duration::from_secs(60)),
            },
        ])
        .unwrap();
    let keys = [b, "conformance|async-missing", a];
    let blocking = backend.get_each(&keys);
    runtime().block_on(async {
        let awaited = backend.get_each_async(&keys).await;
        assert_eq!(
            awaited.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            blocking.into_iter().map(Result::unwrap).collect::<Vec<_>>()
        );
        backend
            .set_many_async(&[SetItem {
                key: c,
                value: b"async",
                ttl: None,
            }])
            .await
            .unwrap();
    });
    assert_eq!(
        backend.get_many(&[c]).unwrap(),
        vec![Some(b"async".to_vec())]
    );
}

/// The leased lookups and releases give the answers of [`leases`], awaited.
#[cfg(feature = "tokio")]
pub fn async_leases_match(backend: &dyn Backend) {
    let (stored, released) = (
        "conformance|async-lease-stored",
        "conformance|async-lease-released",
    );
    let lease = Duration::from_secs(2);
    runtime().block_on(async {
        let leased = |key: &'static str| async move {
            backend
                .get_leased_async(&[key], lease)
                .await
                .pop()
                .unwrap()
                .unwrap()
        };
        assert_eq!(leased(stored).await, Leased::Won);
        let again = leased(stored).await;
        assert!(matches!(again, Leased::Busy | Leased::Won));
        // Whatever the backend answers a second caller, its blocking form answers the same.
        assert_eq!(
            backend.get_leased(&[stored], lease).pop().unwrap().unwrap(),
            again
        );
        backend
            .set_many_async(&[SetItem {
                key: stored,
                value: b"done",
                ttl: None,
            }])
            .await
            .unwrap();
        assert_eq!(leased(stored).await, Leased::Hit(b"done".to_vec()));

        assert_eq!(leased(released).await, Leased::Won);
        backend.release_leases_async(&[released]).await.unwrap();
        assert_eq!(
            leased(released).await,
            Leased::Won,
            "a released lease is free at once"
        );
        backend.release_leases_async(&[released]).await.unwrap();
    });
}

/// `set_many_async` replaces, and honours a time to live.
#[cfg(feature = "tokio")]
pub fn async_set_replaces_and_expires(backend: &dyn Backend) {
    let (short, kept) = ("conformance|async-ttl", "conformance|async-kept");
    runtime().block_on(async {
        let set = |key, value: &'static [u8], ttl| async move {
            backend
                .set_many_async(&[SetItem { key, value, ttl }])
                .await
                .unwrap();
        };
        set(kept, b"old", None).await;
        set(kept, b"new", Some(Duration::from_secs(3600))).await;
        set(short, b"x", Some(Duration::from_secs(1))).await;
        let both = [short, kept];
        assert_eq!(
            backend
                .get_each_async(&both)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            vec![Some(b"x".to_vec()), Some(b"new".to_vec())]
        );
        // memcached counts whole seconds from its own clock tick: allow two.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(
            backend
                .get_each_async(&both)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            vec![None, Some(b"new".to_vec())]
        );
    });
}

/// `incr_each_async` creates, adds and reads as `incr_each` does: the same steps on two
/// counters, one awaited and one blocking, give the same values, and each form sees the
/// other's counter.
#[cfg(feature = "tokio")]
pub fn async_incr_matches(backend: &dyn Backend) {
    let (awaited, blocking) = ("conformance|async-incr", "conformance|async-incr-twin");
    let steps = [(0, 10), (2, 20), (0, 30), (5, 0), (1, 5)];
    let blocking_values: Vec<u64> = steps
        .iter()
        .map(|&(delta, initial)| backend.incr_many(&[blocking], delta, initial).unwrap()[0])
        .collect();
    assert_eq!(blocking_values, vec![10, 12, 12, 17, 18]);
    runtime().block_on(async {
        let mut values = Vec::new();
        for (delta, initial) in steps {
            let mut answer = backend.incr_each_async(&[awaited], delta, initial).await;
            values.push(answer.pop().unwrap().unwrap());
        }
        assert_eq!(values, blocking_values);
        let both: Vec<u64> = backend
            .incr_each_async(&[blocking, awaited, "conformance|async-incr-new"], 0, 7)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(both, vec![18, 18, 7]);
    });
    assert_eq!(backend.incr_many(&[awaited], 1, 0).unwrap(), vec![19]);
}

/// `raise_each_async` is the same monotonic max as `raise_each`: it creates a missing counter
/// at the floor, lifts a lower one to the floor, adds one to a counter at or above it, never
/// lowers one, and mixes with the blocking form on the same counters.
#[cfg(feature = "tokio")]
pub fn async_raise_matches(backend: &dyn Backend) {
    let (awaited, blocking) = ("conformance|async-raise", "conformance|async-raise-twin");
    let floors = [1_000, 5_000, 10, 5_001];
    // Created odd, confirmed past the clock (a different time for each counter), then up by
    // two each time.
    let shape = |values: &[u64], before: u64| {
        assert_eq!(values[0], 1_001, "created: odd");
        assert!(
            values[1].is_multiple_of(2) && values[1] >= before,
            "{values:?}"
        );
        assert_eq!(values[2..], [values[1] + 2, values[1] + 4], "{values:?}");
    };
    let before = clock_ns();
    let blocking_values: Vec<u64> = floors
        .iter()
        .map(|&floor| {
            backend
                .raise_each(&[blocking], floor)
                .pop()
                .unwrap()
                .unwrap()
        })
        .collect();
    shape(&blocking_values, before);
    let confirmed = runtime().block_on(async {
        let before = clock_ns();
        let mut values = Vec::new();
        for floor in floors {
            let mut answer = backend.raise_each_async(&[awaited], floor).await;
            values.push(answer.pop().unwrap().unwrap());
        }
        shape(&values, before);

        // A counter read by a version read (created there, even), then raised, in one batch
        // with one raised by the blocking form, one raised by this one, and one that does not
        // exist yet.
        let read = "conformance|async-raise-read";
        let created = backend.incr_each_async(&[read], 0, 70).await;
        assert_eq!(
            created.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            vec![70]
        );
        let missing = "conformance|async-raise-missing";
        let raised: Vec<u64> = backend
            .raise_each_async(&[read, blocking, missing, awaited], 7_000)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            raised,
            vec![7_000, blocking_values[3] + 2, 7_001, values[3] + 2]
        );
        // Below every counter: each goes to the next even number.
        let again: Vec<u64> = backend
            .raise_each_async(&[read, blocking], 1)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(again, vec![7_002, raised[1] + 2]);
        raised[3]
    });
    assert_eq!(
        backend
            .raise_each(&[awaited], 6_500)
            .pop()
            .unwrap()
            .unwrap(),
        confirmed + 2,
        "the blocking form continues where the async one left off"
    );
}

/// Concurrent raises are never lost, whether they are tasks on one runtime thread or blocking
/// calls on another thread, all on one counter: each adds at least one, and the counter ends
/// at least at the highest floor.
#[cfg(feature = "tokio")]
pub fn async_raise_is_atomic_across_tasks_and_threads(backend: &dyn Backend) {
    let key = "conformance|async-raise-race";
    let start = backend
        .raise_each(&[key], 1_000_000)
        .pop()
        .unwrap()
        .unwrap();
    let floor =
        |worker: u64, i: u64| start + (i * 5 + worker) * if i.is_multiple_of(3) { 3 } else { 0 };
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for i in 0..100 {
                backend
                    .raise_each(&[key], floor(4, i))
                    .pop()
                    .unwrap()
                    .unwrap();
            }
        });
        runtime().block_on(async {
            let tasks = (0..4u64)
                .map(|task| async move {
                    for i in 0..100 {
                        let mut answer = backend.raise_each_async(&[key], floor(task, i)).await;
                        answer.pop().unwrap().unwrap();
                    }
                })
                .collect();
            join_all(tasks).await;
        });
    });
    let end = backend.incr_many(&[key], 0, 0).unwrap()[0];
    assert!(
        end >= start + 500,
        "{end} < {start} + 500: a raise was lost"
    );
    assert!(end >= floor(4, 99), "{end} is below the highest floor");
}
