//! django-cache-sweeper's own three tests, on every backend, plus the properties of counters
//! that the original lacked: atomic bumps and no resurrection after a lost counter.

use crate::common;

use cachesweeper::{KeyParts, Sweeper};
use common::forgetful::Forgetful;
use common::{Page, article, cases, comment, known};

#[test]
fn a_record_has_a_version_right_after_creation() {
    for case in cases() {
        let v = case.sweeper.version(&comment(1, 1)).unwrap();
        assert!(
            v.counter.is_some(),
            "{}: counter-versioned record has a counter",
            case.name
        );
        let a = case.sweeper.version(&article(1)).unwrap();
        assert!(a.field.is_some() && a.counter.is_some(), "{}", case.name);
        // Asking again, with no change, gives the same version.
        assert_eq!(
            case.sweeper.version(&comment(1, 1)).unwrap(),
            v,
            "{}",
            case.name
        );
    }
}

#[test]
fn saving_a_change_changes_the_version() {
    for case in cases() {
        let s = &case.sweeper;
        let c = comment(2, 1);
        let before = s.version(&c).unwrap();
        s.invalidate(&c).unwrap();
        assert_ne!(
            s.version(&c).unwrap(),
            before,
            "{}: invalidate bumps",
            case.name
        );

        // A field-versioned record changes version when its field does, with no round trip.
        let mut page = Page {
            slug: "about".into(),
            revision: 1,
        };
        let trips = s.stats().round_trips;
        let v1 = s.version(&page).unwrap();
        page.revision = 2;
        assert_ne!(s.version(&page).unwrap(), v1, "{}", case.name);
        assert_eq!(
            s.stats().round_trips,
            trips,
            "{}: no round trip for a field version",
            case.name
        );
    }
}

#[test]
fn after_a_change_the_fragment_key_differs_and_misses() {
    for case in cases() {
        let s = &case.sweeper;
        let c = comment(3, 1);
        let parts = KeyParts::new().part("comment.html");
        let render = || Ok::<_, std::convert::Infallible>("<p>v1</p>".to_owned());
        // The record has a version from its creation on (a render that meets a version it
        // created itself cannot know its data is newer, and stores nothing).
        s.version(&c).unwrap();
        s.scope().fragment(&c, 500, &parts, render).unwrap();
        let old_key = s.fragment_key(&c, &parts).unwrap();
        assert!(
            cachesweeper::backend::conformance::get(s.backend().as_ref(), &[&old_key])[0].is_some(),
            "{}: stored",
            case.name
        );

        s.invalidate(&c).unwrap();
        let new_key = s.fragment_key(&c, &parts).unwrap();
        assert_ne!(new_key, old_key, "{}", case.name);
        assert_eq!(
            cachesweeper::backend::conformance::get(s.backend().as_ref(), &[&new_key]),
            vec![None],
            "{}",
            case.name
        );
    }
}

#[test]
fn invalidating_a_child_invalidates_its_parent_and_nothing_else() {
    for case in cases() {
        let s = &case.sweeper;
        let (a1, a2) = (article(1), article(2));
        let (c1, c2) = (comment(10, 1), comment(11, 1));
        let before = [
            &s.version(&a1),
            &s.version(&a2),
            &s.version(&c1),
            &s.version(&c2),
        ]
        .map(|v| v.as_ref().unwrap().clone());
        let trips = s.stats().round_trips;
        s.invalidate(&c1).unwrap();
        assert_eq!(
            s.stats().round_trips,
            trips + 1,
            "{}: one round trip",
            case.name
        );
        let after = [
            &s.version(&a1),
            &s.version(&a2),
            &s.version(&c1),
            &s.version(&c2),
        ]
        .map(|v| v.as_ref().unwrap().clone());
        assert_ne!(after[0], before[0], "{}: parent bumped", case.name);
        assert_eq!(
            after[1], before[1],
            "{}: other article untouched",
            case.name
        );
        assert_ne!(after[2], before[2], "{}: comment bumped", case.name);
        assert_eq!(after[3], before[3], "{}: sibling untouched", case.name);
    }
}

#[test]
fn a_lost_counter_never_brings_back_an_older_fragment() {
    for case in cases() {
        // The store behind loses keys on request, whichever it is.
        let store = Forgetful::new(case.sweeper.backend().clone());
        let s = &Sweeper::builder().backend(store.clone()).build().unwrap();
        let c = comment(4, 1);
        let parts = KeyParts::new();
        let mut seen = Vec::new();
        for generation in 0..3 {
            let html = format!("<p>generation {generation}</p>");
            s.scope()
                .fragment(&c, 500, &parts, || {
                    Ok::<_, std::convert::Infallible>(html.clone())
                })
                .unwrap();
            seen.push(s.version(&c).unwrap());
            s.invalidate(&c).unwrap();
        }
        // The counter is evicted (or lost with a restarted server) while old fragments remain.
        store.forget(&s.counter_key(&c));
        let fresh = s.version(&c).unwrap();
        assert!(
            !seen.contains(&fresh),
            "{}: {fresh:?} repeats one of {seen:?}",
            case.name
        );
        let html = s
            .scope()
            .fragment(&c, 500, &parts, || {
                Ok::<_, std::convert::Infallible>("<p>now</p>".into())
            })
            .unwrap();
        assert_eq!(
            html, "<p>now</p>",
            "{}: an old fragment came back",
            case.name
        );
    }
}

#[test]
fn concurrent_invalidations_are_never_lost() {
    for case in cases() {
        let s = &case.sweeper;
        let c = comment(5, 1);
        let start = s.version(&c).unwrap().counter.unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        s.invalidate(&c).unwrap();
                    }
                });
            }
        });
        let end = s.version(&c).unwrap().counter.unwrap();
        // Each invalidation raises the counter to the time at least, and by one at least.
        assert!(end - start >= 400, "{}: a raise was lost", case.name);
    }
}

#[test]
fn namespaces_do_not_see_each_other() {
    for case in cases() {
        let other = cachesweeper::Sweeper::builder()
            .namespace("other-app")
            .backend(case.sweeper.backend().clone())
            .build()
            .unwrap();
        let c = comment(6, 1);
        let parts = KeyParts::new();
        case.sweeper
            .scope()
            .fragment(&c, 500, &parts, || {
                Ok::<_, std::convert::Infallible>("mine".into())
            })
            .unwrap();
        let theirs = other
            .scope()
            .fragment(&c, 500, &parts, || {
                Ok::<_, std::convert::Infallible>("theirs".into())
            })
            .unwrap();
        assert_eq!(theirs, "theirs", "{}", case.name);
        assert_ne!(case.sweeper.counter_key(&c), other.counter_key(&c));
    }
}

#[test]
fn a_record_known_only_by_reference_is_invalidated_too() {
    // From a database trigger or a message queue: the model name and the key, no row.
    for case in cases() {
        let s = &case.sweeper;
        let c = comment(8, 1);
        known(s, [&c]);
        let parts = KeyParts::new().part("by-reference");
        let show = |html: &'static str| move || Ok::<_, std::convert::Infallible>(html.into());
        assert_eq!(
            s.scope().fragment(&c, 600, &parts, show("old")).unwrap(),
            "old"
        );
        assert_eq!(
            s.scope().fragment(&c, 600, &parts, show("new")).unwrap(),
            "old"
        );
        s.invalidate_ref(&cachesweeper::ModelRef::to(&c)).unwrap();
        assert_eq!(
            s.scope().fragment(&c, 600, &parts, show("new")).unwrap(),
            "new",
            "{}",
            case.name
        );
    }
}
