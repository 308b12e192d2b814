//! The one place that builds cache keys.
//!
//! Every key sent to a backend is a valid memcached key whatever the input: at most
//! [`MAX_KEY_LEN`] bytes of printable ASCII with no spaces. Layout:
//!
//! ```text
//! {namespace}|v|{model}|{key}                                        version counter
//! {namespace}|f|{model}|{key}|{version}|{digest}|{parts hash}        fragment
//! {namespace}|h|{sha-256 of the readable key}                        either, when too long
//! ```
//!
//! Each component is escaped so that `|` only ever separates components, which makes the
//! readable form injective; a key too long for memcached is replaced by the hash of its readable
//! form, under its own tag so it cannot equal a readable key. The extra key parts of a fragment
//! are always hashed (length-prefixed, so `("a:b", "c")` and `("a", "b:c")` differ): they are
//! often user input and never appear raw in a key.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::{Error, KeyPart, Result};

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// The longest namespace, so that a hashed key always fits.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// The extra parts of a fragment key (the original's `"comment.xml"` and friends), hashed as
/// they are added, plus the template digest.
///
/// ```
/// use cachesweeper::KeyParts;
///
/// let a = KeyParts::new().part("a:b").part("c");
/// let b = KeyParts::new().part("a").part("b:c");
/// assert_ne!(a.finish(), b.finish());
/// ```
#[derive(Clone, Default)]
pub struct KeyParts {
    /// The parts, each prefixed by its length: what is hashed.
    raw: Vec<u8>,
    count: u64,
    digest: &'static str,
    without_digest: bool,
    /// [`finish`](Self::finish), once asked: a fragment's key and its hint key both need it.
    finished: OnceLock<String>,
}

impl std::fmt::Debug for KeyParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyParts")
            .field("count", &self.count)
            .field("digest", &self.digest)
            .field("without_digest", &self.without_digest)
            .finish_non_exhaustive()
    }
}

impl KeyParts {
    /// No parts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one part.
    #[must_use]
    pub fn part(mut self, part: impl KeyPart) -> Self {
        self.push(&part);
        self
    }

    /// Adds one part in place.
    pub(crate) fn push(&mut self, part: &(impl KeyPart + ?Sized)) {
        let form = part.key_form();
        self.raw
            .extend_from_slice(&(form.len() as u64).to_le_bytes());
        self.raw.extend_from_slice(form.as_bytes());
        self.count += 1;
        self.finished = OnceLock::new();
    }

    /// Sets the digest of the template the fragment comes from (computed at compile time);
    /// [`Scope::render`](crate::Scope::render) sets it for every fragment of a page.
    #[must_use]
    pub fn template_digest(mut self, digest: &'static str) -> Self {
        self.digest = digest;
        // Whether the key has a digest decides whether the template is hashed with the parts.
        self.finished = OnceLock::new();
        self
    }

    /// Names the template the block is in (the `cachesweeper` filter and [`cached`](crate::cached)
    /// set it), hashed with the parts: two templates' blocks with the same name on the same
    /// record never share an entry, whichever way the page is rendered (Askama's own `render()`
    /// has no digest to give; a page's digest covers the templates it includes, not the
    /// templates rendered as values inside it; `digest=false` leaves the digest out). Tagged, so
    /// that no key part, whatever its text, hashes like a template's name.
    #[doc(hidden)]
    #[must_use]
    pub fn in_template(mut self, template: &'static str) -> Self {
        self.raw
            .extend_from_slice(&(TEMPLATE_TAG | template.len() as u64).to_le_bytes());
        self.raw.extend_from_slice(template.as_bytes());
        self.finished = OnceLock::new();
        self
    }

    /// Leaves the template digest out of the key, so that the fragment keeps its key across
    /// template edits (and a stale fragment is served after one, until its record changes).
    #[must_use]
    pub fn without_template_digest(mut self) -> Self {
        self.without_digest = true;
        self.finished = OnceLock::new();
        self
    }

    /// The first part, which names the block (the filter's third argument), if it is text.
    pub(crate) fn name(&self) -> Option<&str> {
        let len = usize::try_from(u64::from_le_bytes(self.raw.get(..8)?.try_into().ok()?)).ok()?;
        std::str::from_utf8(self.raw.get(8..8usize.checked_add(len)?)?).ok()
    }

    /// Whether a template digest should go into the key and none is set yet.
    pub(crate) fn wants_digest(&self) -> bool {
        !self.without_digest && self.digest.is_empty()
    }

    /// The hash of all parts, as it appears in the key (22 characters of URL-safe base64).
    pub fn finish(&self) -> &str {
        self.finished
            .get_or_init(|| recent_hash(&self.raw, self.count))
    }

    /// The template digest that goes into the key ("" without one).
    fn key_digest(&self) -> &'static str {
        if self.without_digest { "" } else { self.digest }
    }
}

/// Marks a template's name among the length-prefixed parts (no part is 2^63 bytes long).
const TEMPLATE_TAG: u64 = 1 << 63;

/// The hash of `count` length-prefixed parts, as it appears in a key.
fn hash(raw: &[u8], count: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(raw);
    // The count closes the sequence, so a prefix of the parts never hashes like the whole.
    hasher.update(count.to_le_bytes());
    URL_SAFE_NO_PAD.encode(&hasher.finalize()[..16])
}

/// [`hash`], remembered for the parts hashed recently on this thread. A template block builds its
/// key parts on every render, mostly the same few literal names: remembering their hashes
/// spares a SHA-256 per fragment, which was a fifth of an embedded hit. Bounded: starts over
/// when full (parts that are user input can be of any variety).
fn recent_hash(raw: &[u8], count: u64) -> String {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const CAPACITY: usize = 4096;
    thread_local! {
        // By the length-prefixed parts, which determine their count too.
        static RECENT: RefCell<HashMap<Vec<u8>, String, foldhash::fast::RandomState>> =
            RefCell::default();
    }
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(known) = recent.get(raw) {
            return known.clone();
        }
        let hashed = hash(raw, count);
        if recent.len() >= CAPACITY {
            recent.clear();
        }
        recent.insert(raw.to_vec(), hashed.clone());
        hashed
    })
}

/// A record's version, as it goes into fragment keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// The token of the record's version field, if it has one.
    pub field: Option<String>,
    /// The record's counter, if its version includes one.
    pub counter: Option<u64>,
}

impl Version {
    /// Writes the version as it goes into a key: `f{len}:{field}` and `c{counter}`. The field
    /// token is length-prefixed: it may be any string (an ETag), and must not be able to
    /// imitate a counter.
    fn write_into(&self, out: &mut String) {
        let mut digits = itoa::Buffer::new();
        if let Some(field) = &self.field {
            out.push('f');
            out.push_str(digits.format(field.len()));
            out.push(':');
            escape_into(out, field);
        }
        if let Some(counter) = self.counter {
            out.push('c');
            out.push_str(digits.format(counter));
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        self.write_into(&mut out);
        f.write_str(&out)
    }
}

/// Builds the keys of one namespace: the only code that makes cache keys.
#[derive(Debug, Clone)]
pub struct KeySpace {
    namespace: String,
}

impl KeySpace {
    /// The keys of `namespace` (1 to 64 ASCII letters, digits, `_`, `-` or `.`).
    pub fn new(namespace: &str) -> Result<Self> {
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        if namespace.is_empty()
            || namespace.len() > MAX_NAMESPACE_LEN
            || !namespace.bytes().all(valid)
        {
            return Err(Error::Config(format!(
                "namespace {namespace:?} must be 1 to {MAX_NAMESPACE_LEN} ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        Ok(KeySpace {
            namespace: namespace.to_owned(),
        })
    }

    /// The key of a record's version counter.
    pub fn counter_key(&self, model: &str, key: &str) -> String {
        self.finish(4 + model.len() + key.len(), |out| {
            out.push_str("|v|");
            escape_into(out, model);
            out.push('|');
            escape_into(out, key);
        })
    }

    /// The key of a fragment of a record at a version.
    pub fn fragment_key(
        &self,
        model: &str,
        key: &str,
        version: &Version,
        parts: &KeyParts,
    ) -> String {
        let digest = parts.key_digest();
        let version_len = version.field.as_ref().map_or(0, |f| f.len() + 8) + 21;
        let len = 7 + model.len() + key.len() + version_len + digest.len() + 22;
        self.finish(len, |out| {
            out.push_str("|f|");
            escape_into(out, model);
            out.push('|');
            escape_into(out, key);
            out.push('|');
            version.write_into(out);
            out.push('|');
            escape_into(out, digest);
            out.push('|');
            out.push_str(parts.finish());
        })
    }

    /// The tag that names a record in an HTTP cache (see [`crate::http_cache`]), from its
    /// counter key: `cs` and 16 hex digits of the key's SHA-256. Short, since a page names
    /// every record it shows; the same in every process, which purges what another stored;
    /// lower case only, since some caches fold the case of tags. Two records that share a tag
    /// purge each other's pages: safe, and one in 2^64.
    pub(crate) fn http_tag(counter_key: &str) -> String {
        let hash = Sha256::digest(counter_key.as_bytes());
        let mut tag = String::with_capacity(18);
        tag.push_str("cs");
        for byte in &hash[..8] {
            let _ = write!(tag, "{byte:02x}");
        }
        tag
    }

    /// A fragment's identity without its version: the same for every version of one block of
    /// one record, in this process (it keys in-process hints, never the shared cache).
    pub(crate) fn hint_key(&self, model: &str, key: &str, parts: &KeyParts) -> u64 {
        use std::hash::BuildHasher;
        // Fixed-seeded: the same fragment must give the same hint key for the process's life.
        foldhash::fast::FixedState::with_seed(0x5eed).hash_one((
            model,
            key,
            parts.key_digest(),
            parts.finish(),
        ))
    }

    /// The key `body` writes after the namespace (about `len` bytes, before escapes), or its
    /// hash if it is too long.
    fn finish(&self, len: usize, body: impl FnOnce(&mut String)) -> String {
        let mut key = String::with_capacity(self.namespace.len() + len);
        key.push_str(&self.namespace);
        body(&mut key);
        if key.len() <= MAX_KEY_LEN {
            return key;
        }
        let hash = Sha256::digest(key.as_bytes());
        key.truncate(self.namespace.len());
        key.push_str("|h|");
        URL_SAFE_NO_PAD.encode_string(hash, &mut key);
        key
    }
}

/// Percent-escapes everything memcached rejects (space, control bytes, non-ASCII) and our own
/// separator `|` and escape `%`. Injective, so distinct components stay distinct.
fn escape_into(out: &mut String, component: &str) {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'|' && b != b'%';
    if component.bytes().all(plain) {
        out.push_str(component);
        return;
    }
    for b in component.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The part of a key that decides which server holds it: the record's model and key, for a
/// counter and for every fragment of the record, so that they all live on one server. Then a
/// server that is down costs exactly the records that live there, instead of every fragment
/// whose counter *or* value is there, and one record's lookups go to one server. Hashed (too
/// long) keys route whole.
#[cfg_attr(not(any(feature = "memcache", feature = "redis")), allow(dead_code))] // only a distributed backend routes
pub(crate) fn routing_part(key: &str) -> &str {
    let kind_and_rest = key
        .split_once('|')
        .and_then(|(_namespace, tail)| tail.split_once('|'));
    match kind_and_rest {
        Some(("v", rest)) => rest,
        // model|key|version|digest|parts: up to the separator after the record's key.
        Some(("f", rest)) => rest
            .match_indices('|')
            .nth(1)
            .map_or(key, |(end, _)| &rest[..end]),
        _ => key,
    }
}

/// Whether memcached accepts `key` (length, and no whitespace or control bytes).
#[cfg(test)]
fn is_valid_memcached_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::{KeyParts, KeySpace, Version, is_valid_memcached_key};

    #[test]
    fn a_counter_key_is_readable_and_a_fragment_key_always_valid() {
        let keys = KeySpace::new("blog").unwrap();
        assert_eq!(
            keys.counter_key("app::Comment", "42"),
            "blog|v|app::Comment|42"
        );
        let version = Version {
            field: None,
            counter: Some(7),
        };
        let key = keys.fragment_key(
            "app::Comment",
            "a key with spaces",
            &version,
            &KeyParts::new(),
        );
        assert!(is_valid_memcached_key(&key), "{key}");
    }

    #[test]
    fn the_parts_hash_is_the_same_in_every_build_and_every_call() {
        // SHA-256 of the length-prefixed parts and their count, first 16 bytes, base64url: the
        // keys already in a shared cache stay valid across releases.
        for _ in 0..2 {
            let parts = KeyParts::new().part("comment").part(42_i64);
            assert_eq!(parts.finish(), "X6lCQSvad8UqXKn4xpSNMA");
        }
    }

    use super::*;

    fn space() -> KeySpace {
        KeySpace::new("test").unwrap()
    }

    #[test]
    fn readable_keys_for_ordinary_records() {
        let v = Version {
            field: None,
            counter: Some(7),
        };
        assert_eq!(
            space().counter_key("blog::Comment", "42"),
            "test|v|blog::Comment|42"
        );
        let key = space().fragment_key("blog::Comment", "42", &v, &KeyParts::new());
        assert!(key.starts_with("test|f|blog::Comment|42|c7||"), "{key}");
    }

    #[test]
    fn hostile_keys_are_escaped_or_hashed() {
        let k = space().counter_key("m", "a b|c%\n");
        assert_eq!(k, "test|v|m|a%20b%7Cc%25%0A");
        let long = "é".repeat(5_000);
        let k = space().counter_key("m", &long);
        assert!(
            k.starts_with("test|h|") && is_valid_memcached_key(&k),
            "{k}"
        );
    }

    #[test]
    fn a_records_counter_and_fragments_route_together() {
        let keys = space();
        let v = Version {
            field: None,
            counter: Some(3),
        };
        let counter = keys.counter_key("blog::Comment", "42");
        let fragment = keys.fragment_key("blog::Comment", "42", &v, &KeyParts::new().part("x"));
        assert_eq!(routing_part(&counter), "blog::Comment|42");
        assert_eq!(routing_part(&fragment), "blog::Comment|42");
        assert_eq!(routing_part("test|h|abc"), "test|h|abc");
        assert_eq!(routing_part("plain"), "plain");
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(KeySpace::new("").is_err());
        assert!(KeySpace::new("a b").is_err());
        assert!(KeySpace::new("a|b").is_err());
        assert!(KeySpace::new(&"x".repeat(65)).is_err());
        assert!(KeySpace::new("blog-prod_2.0").is_ok());
    }
}

/// Every key is a valid memcached key whatever the input, and distinct inputs never share one
/// (moved here from `tests/keys.rs` when the module stopped being public).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::{KeyParts, KeySpace, Version, is_valid_memcached_key};

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
}
