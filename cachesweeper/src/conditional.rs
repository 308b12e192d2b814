//! Conditional GET: a page's validator (its `ETag`), known once the page's fragments are, so
//! that a request whose `If-None-Match` names the current one is answered `304 Not Modified`
//! without rendering any fragment.
//!
//! The validator is a hash of everything the page shows, taken without rendering it:
//!
//! - the page's template digest;
//! - the page's first pass, in which every block is still empty: whatever the page writes
//!   outside its cached blocks (the viewer's name, an article's title, blocks with
//!   `cache=false`), its holes filled as they will be;
//! - the key of every fragment the page shows (which names its record's version), the
//!   versions of the records inside each (checked current on every hit), and what each
//!   fragment's holes are filled with for this request.
//!
//! So it changes as soon as any record on the page changes, at any depth, or anything outside
//! its blocks does, and never otherwise. It is computed only from what a warm render learns
//! anyway: answering a revalidation costs the page's first pass and its first batch of
//! versions (one round trip on memcached, whose fragments the L1 holds).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Holes;
use crate::holes::HoleTable;
use crate::http_cache::Caching;
use crate::value::Stored;

/// What [`Scope::render_conditional`](crate::Scope::render_conditional) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// The request's `If-None-Match` names the page's current validator: answer
    /// `304 Not Modified` with this `ETag`. Nothing was rendered and nothing counted as a hit.
    NotModified {
        /// The page's `ETag` header value, quotes included.
        etag: String,
        /// Which caches may keep the page (a 304 updates what a cache kept).
        caching: Caching,
    },
    /// The page, rendered, with its validator when it has one. It has none when part of it
    /// was rendered from versions the render could not read (the cache failed), in a debug or
    /// uncached render, or when a fragment appeared that the page's first passes did not
    /// announce.
    Page {
        /// The HTML.
        html: String,
        /// The page's `ETag` header value, quotes included.
        etag: Option<String>,
        /// Which caches may keep it: none without a validator.
        caching: Caching,
    },
}

/// Whether an `If-None-Match` header value names `etag` (weak comparison, as RFC 9110 says
/// `If-None-Match` is compared; `*` names any).
pub(crate) fn matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || bare(tag) == etag)
}

/// The validator of a page: see the [module docs](self). `outside` is the page's first pass,
/// `fragments` what it shows, by key, in page order (a fragment shown twice, twice).
pub(crate) fn validator<'a>(
    digest: &str,
    outside: &str,
    fragments: impl Iterator<Item = (&'a str, &'a Stored)>,
    holes: &HoleTable,
    page: Option<&dyn Holes>,
) -> Option<String> {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(digest.as_bytes());
    field(holes.fill(outside.to_owned(), page, "").ok()?.as_bytes());
    let mut fill = String::new();
    for (key, stored) in fragments {
        field(key.as_bytes());
        for dep in stored.deps.iter() {
            field(dep.counter_key.as_bytes());
            field(&dep.version.to_le_bytes());
        }
        for placed in stored.holes.iter() {
            fill.clear();
            page?.fill(&placed.hole, &mut fill).ok()?;
            let _ = write!(fill, "@{}", placed.offset);
            field(fill.as_bytes());
        }
    }
    let hash = hash.finalize();
    Some(format!("\"cs1-{}\"", URL_SAFE_NO_PAD.encode(&hash[..18])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        let etag = "\"cs1-abc\"";
        for header in [
            "\"cs1-abc\"",
            "W/\"cs1-abc\"",
            "\"x\", \"cs1-abc\"",
            "*",
            " \"cs1-abc\" ",
        ] {
            assert!(matches(header, etag), "{header}");
        }
        for header in ["\"cs1-abd\"", "cs1-abc", "", "\"cs1-ab\""] {
            assert!(!matches(header, etag), "{header}");
        }
    }
}
