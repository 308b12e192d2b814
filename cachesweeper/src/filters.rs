//! The `cachesweeper` filter for Askama templates.
//!
//! ```text
//! {% filter cachesweeper::filters::cachesweeper(comment, 500, "comment.html") %}
//!   <p><strong>{{ comment.author }}</strong> said {{ comment.body }}</p>
//! {% endfilter %}
//! ```
//!
//! Arguments: the record (anything [`Sweepable`]), the time to live ([`Ttl`]: seconds or a
//! `Duration`), then up to twelve extra key parts ([`KeyPart`]). On a hit the body is not
//! rendered at all; on a miss it is rendered once, stored, and written out. The output is the
//! body's own output, byte for byte, and is not escaped a second time.
//!
//! For the short name `cachesweeper(...)`, re-export the filter from your crate's `filters`
//! module, where Askama looks for custom filters:
//!
//! ```
//! mod filters {
//!     pub use cachesweeper::filters::cachesweeper;
//! }
//! ```
//!
//! The fragment's key includes the digest of the page's templates when the page is rendered
//! with [`Sweeper::render`](crate::Sweeper::render); `digest=false` as a named argument leaves
//! it out, so the key survives template edits:
//! `{% filter cachesweeper(comment, 500, digest=false) %}`.
//!
//! Misuse is a compile error: a record that is not `Sweepable`, a lifetime that is not an
//! integer or a `Duration`, a key part with no stable key form, fewer than two arguments, or more
//! than fourteen.
//!
//! The filter is written by hand rather than with `#[askama::filter_fn]` because it takes a
//! variable number of key parts; it follows the same builder protocol that Askama's generated
//! code calls (`default()`, `with_N(arg)`, `execute(input, values)`).

#![allow(non_camel_case_types)]

use std::fmt::{self, Write as _};

use askama::filters::HtmlSafe;

use crate::{KeyPart, KeyParts, Sweepable, Ttl, default::sweeper_for};

/// The `cachesweeper` filter (see the [module docs](self)). Askama builds it argument by
/// argument; the type parameters track which required arguments were given.
#[must_use]
pub struct cachesweeper<R = (), T = ()> {
    record: R,
    ttl: T,
    parts: KeyParts,
}

impl Default for cachesweeper {
    fn default() -> Self {
        cachesweeper {
            record: (),
            ttl: (),
            parts: KeyParts::new(),
        }
    }
}

impl cachesweeper {
    /// The record whose version keys the fragment.
    pub fn with_0<R: Sweepable>(self, record: R) -> cachesweeper<R, ()> {
        cachesweeper {
            record,
            ttl: (),
            parts: self.parts,
        }
    }
}

impl<R: Sweepable> cachesweeper<R, ()> {
    /// How long the fragment may be served.
    pub fn with_1<T: Ttl>(self, ttl: T) -> cachesweeper<R, T> {
        cachesweeper {
            record: self.record,
            ttl,
            parts: self.parts,
        }
    }
}

impl<R: Sweepable, T: Ttl> cachesweeper<R, T> {
    /// `digest=false`: keeps the fragment's key the same across edits of its template (a
    /// stale fragment is then served after an edit, until its record changes).
    pub fn with_digest(mut self, digest: bool) -> Self {
        if !digest {
            self.parts = self.parts.without_template_digest();
        }
        self
    }
}

macro_rules! key_part_setters {
    ($($setter:ident),*) => {
        impl<R: Sweepable, T: Ttl> cachesweeper<R, T> {$(
            /// An extra key part.
            pub fn $setter<P: KeyPart>(mut self, part: P) -> Self {
                self.parts.push(&part);
                self
            }
        )*}
    };
}

key_part_setters!(
    with_2, with_3, with_4, with_5, with_6, with_7, with_8, with_9, with_10, with_11, with_12,
    with_13
);

macro_rules! valid_arg_indices {
    ($($idx:literal),*) => {$(
        impl askama::filters::ValidArgIdx<$idx> for cachesweeper {}
    )*};
}

valid_arg_indices!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13);

impl<R: Sweepable, T: Ttl> askama::filters::ValidFilterInvocation for cachesweeper<R, T> {}

impl<R: Sweepable, T: Ttl> cachesweeper<R, T> {
    /// Serves the fragment from the cache, or renders `body` and stores it.
    pub fn execute(
        self,
        body: impl fmt::Display,
        values: &dyn askama::Values,
    ) -> askama::Result<Fragment> {
        let sweeper = sweeper_for(values);
        let rendered = sweeper.fragment(&self.record, &self.ttl, &self.parts, || {
            let mut out = String::new();
            write!(out, "{body}").map(|()| out)
        });
        // A body that failed to render left its own error in Askama's filter cell; failing at
        // display time hands control back to the generated code, which reports that error.
        Ok(Fragment(rendered.ok()))
    }
}

/// The output of the `cachesweeper` filter: the fragment's HTML, already escaped by the body
/// that produced it.
#[derive(Debug, Clone)]
pub struct Fragment(Option<String>);

impl fmt::Display for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(html) => f.write_str(html),
            None => Err(fmt::Error),
        }
    }
}

impl HtmlSafe for Fragment {}
