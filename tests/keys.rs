//! Every key is a valid memcached key whatever the input, and distinct inputs never share one.

use cachesweeper::keys::{KeySpace, is_valid_memcached_key};
use cachesweeper::{KeyParts, Version};
use proptest::prelude::*;

fn keys() -> KeySpace {
    KeySpace::new("prop").unwrap()
}

/// Any string, with the awkward ones (separators, escapes, whitespace, huge) well represented.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z|%: \\n\\t]{0,12}",
        ".{200,400}",
        Just("x".repeat(10_000)),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    (
        proptest::option::of(text()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(field, counter)| Version { field, counter })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_key_is_valid(model in text(), key in text(), v in version(), parts in proptest::collection::vec(text(), 0..4)) {
        let k = keys();
        let counter = k.counter_key(&model, &key);
        prop_assert!(is_valid_memcached_key(&counter), "{counter:?}");
        let parts = parts.iter().fold(KeyParts::new(), |p, s| p.part(s.as_str()));
        let fragment = k.fragment_key(&model, &key, &v, &parts);
        prop_assert!(is_valid_memcached_key(&fragment), "{fragment:?}");
    }

    #[test]
    fn distinct_records_get_distinct_keys(a in (text(), text()), b in (text(), text())) {
        prop_assume!(a != b);
        let k = keys();
        prop_assert_ne!(k.counter_key(&a.0, &a.1), k.counter_key(&b.0, &b.1));
        let v = Version { field: None, counter: Some(1) };
        let p = KeyParts::new();
        prop_assert_ne!(k.fragment_key(&a.0, &a.1, &v, &p), k.fragment_key(&b.0, &b.1, &v, &p));
    }

    #[test]
    fn distinct_parts_get_distinct_keys(a in proptest::collection::vec(text(), 0..4), b in proptest::collection::vec(text(), 0..4)) {
        prop_assume!(a != b);
        let k = keys();
        let v = Version { field: None, counter: Some(1) };
        let pa = a.iter().fold(KeyParts::new(), |p, s| p.part(s.as_str()));
        let pb = b.iter().fold(KeyParts::new(), |p, s| p.part(s.as_str()));
        prop_assert_ne!(k.fragment_key("m", "1", &v, &pa), k.fragment_key("m", "1", &v, &pb));
    }

    #[test]
    fn distinct_versions_get_distinct_keys(a in version(), b in version()) {
        prop_assume!(a != b);
        let k = keys();
        let p = KeyParts::new();
        prop_assert_ne!(k.fragment_key("m", "1", &a, &p), k.fragment_key("m", "1", &b, &p));
    }

    #[test]
    fn user_key_parts_never_appear_raw(part in "[a-z]{8,20}") {
        let key = keys().fragment_key("m", "1", &Version { field: None, counter: Some(1) }, &KeyParts::new().part(part.as_str()));
        prop_assert!(!key.contains(&part), "{key:?} contains {part:?}");
    }
}

#[test]
fn joined_parts_do_not_collide() {
    let k = keys();
    let v = Version {
        field: None,
        counter: Some(1),
    };
    let ab = KeyParts::new().part("a:b").part("c");
    let bc = KeyParts::new().part("a").part("b:c");
    assert_ne!(
        k.fragment_key("m", "1", &v, &ab),
        k.fragment_key("m", "1", &v, &bc)
    );
    let one = KeyParts::new().part("ab");
    let two = KeyParts::new().part("a").part("b");
    assert_ne!(one.finish(), two.finish());
}

/// Short strings from a small alphabet rich in separators and escapes: where collisions between
/// distinct inputs would hide, if the encoding were not injective.
fn tricky() -> impl Strategy<Value = String> {
    "[a|%: \\n0-9é]{0,6}"
}

proptest! {
    // 100 000 cases, in CI too: model names, keys and parts near the separators and escapes.
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    #[test]
    fn a_hundred_thousand_key_pairs(
        a in (tricky(), tricky(), proptest::collection::vec(tricky(), 0..3)),
        b in (tricky(), tricky(), proptest::collection::vec(tricky(), 0..3)),
    ) {
        let k = keys();
        let v = Version { field: None, counter: Some(1) };
        let parts = |p: &Vec<String>| p.iter().fold(KeyParts::new(), |acc, s| acc.part(s.as_str()));
        let ka = k.fragment_key(&a.0, &a.1, &v, &parts(&a.2));
        let kb = k.fragment_key(&b.0, &b.1, &v, &parts(&b.2));
        prop_assert!(is_valid_memcached_key(&ka), "{ka:?}");
        prop_assert_eq!(a == b, ka == kb, "{:?} {:?}", a, b);
        let ca = k.counter_key(&a.0, &a.1);
        prop_assert!(is_valid_memcached_key(&ca), "{ca:?}");
        prop_assert_eq!((&a.0, &a.1) == (&b.0, &b.1), ca == k.counter_key(&b.0, &b.1));
    }
}
