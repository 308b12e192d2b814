//! The `cachesweeper` filter for Askama templates.
//!
//! ```text
//! {% filter cachesweeper::filters::cachesweeper(comment, 500, "comment") %}
//!   <p><strong>{{ comment.author }}</strong> said {{ comment.body }}</p>
//! {% endfilter %}
//! ```
//!
//! Arguments: the record (anything [`Sweepable`]), the time to live ([`Ttl`]: seconds or a
//! `Duration`), the block's name, then up to eleven extra key parts ([`KeyPart`]). On a hit the
//! body is not rendered at all; on a miss it is rendered once, stored, and written out. The
//! output is the body's own output, byte for byte, and is not escaped a second time.
//!
//! # Every block has a name
//!
//! A fragment's key is the record's version plus the key parts, so two blocks on one record
//! with the same key parts would share one cache entry: the second block would show the first
//! one's HTML. The name, the first key part after the time to live, is what tells a page's
//! blocks apart, and it is required, as django-cache-sweeper's `{% cachesweeper %}` tag required
//! it (at least three arguments). A block without one does not compile:
//!
//! ```text
//! {% filter cachesweeper(post, 300, "body") %}<p>{{ post.body }}</p>{% endfilter %}
//! {% filter cachesweeper(post, 300, "footer") %}<footer>{{ post.title }}</footer>{% endfilter %}
//! ```
//!
//! The filter refuses a block without a name at compile time (`this cachesweeper block has no
//! name`). It cannot see the other blocks: [`#[derive(TemplateDigest)]`](crate::TemplateDigest)
//! can, reading the page and every template it includes, extends or imports, and refuses two
//! blocks on one record expression with the same literal key parts, naming both places. Derive
//! it on every page.
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
//! A page with blocks is rendered with [`Scope::render`](crate::Scope::render) (Askama's own
//! `render()` fails with [`Error::NoSweeper`](crate::Error::NoSweeper)). The fragment's key
//! includes the digest of the page's templates; `digest=false` as a named argument leaves it
//! out, so the key survives template edits:
//! `{% filter cachesweeper(comment, 500, "comment", digest=false) %}`. Every key also names the
//! block's template by its Rust type, so that two templates' blocks never share an entry.
//!
//! `cache=false` as a named argument renders the block without the cache for this render:
//! nothing looked up, nothing stored (`{% filter cachesweeper(post, 300, "body",
//! cache=!preview) %}`); [`Scope::uncached`](crate::Scope::uncached) does it for every block of
//! a render.
//!
//! The filter is written by hand rather than with `#[askama::filter_fn]` because it takes a
//! variable number of key parts; it follows the same builder protocol that Askama's generated
//! code calls (`default()`, `with_N(arg)`, `execute(input, values)`). The builder's type
//! parameters track which required arguments were given, so `execute` exists only once the
//! record, the time to live and the name were.

#![allow(non_camel_case_types)]

use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use askama::filters::HtmlSafe;

use crate::in_render::{self, with_render};
use crate::value::Html;
use crate::{KeyPart, KeyParts, Sweepable, Ttl};

/// The `cachesweeper` filter (see the [module docs](self)). Askama builds it argument by
/// argument; the type parameters track which required arguments were given: the record `R`,
/// the time to live `T`, and whether the block was named (`N`: [`Unnamed`] or [`Named`]).
#[must_use]
pub struct cachesweeper<R = (), T = (), N = Unnamed> {
    record: R,
    ttl: T,
    parts: KeyParts,
    /// `cache=false`: this render of the block neither looks up nor stores.
    cache: bool,
    named: PhantomData<N>,
}

/// The state of a [`cachesweeper`] filter before its name (third argument) is given: it cannot
/// be executed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unnamed;

/// The state of a [`cachesweeper`] filter whose name was given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named;

/// A [`cachesweeper`] filter state that may be executed: the block has a name.
#[diagnostic::on_unimplemented(
    message = "this `cachesweeper` block has no name",
    label = "the block's name is missing",
    note = "give the block a name after the time to live, as in `cachesweeper(post, 300, \"body\")`",
    note = "the name keeps the blocks on one record apart: without it, two blocks on `post` would share one cache entry and the second would show the first one's HTML"
)]
pub trait BlockName {}

impl BlockName for Named {}

impl Default for cachesweeper {
    fn default() -> Self {
        cachesweeper {
            record: (),
            ttl: (),
            parts: KeyParts::new(),
            cache: true,
            named: PhantomData,
        }
    }
}

impl cachesweeper {
    /// The record whose version keys the fragment.
    #[doc(hidden)]
    pub fn with_0<R: Sweepable>(self, record: R) -> cachesweeper<R, ()> {
        cachesweeper {
            record,
            ttl: (),
            parts: self.parts,
            cache: self.cache,
            named: PhantomData,
        }
    }
}

impl<R: Sweepable> cachesweeper<R, ()> {
    /// How long the fragment may be served.
    #[doc(hidden)]
    pub fn with_1<T: Ttl>(self, ttl: T) -> cachesweeper<R, T> {
        cachesweeper {
            record: self.record,
            ttl,
            parts: self.parts,
            cache: self.cache,
            named: PhantomData,
        }
    }
}

impl<R: Sweepable, T: Ttl> cachesweeper<R, T, Unnamed> {
    /// The block's name: the first key part, which tells the blocks on one record apart.
    #[doc(hidden)]
    pub fn with_2<P: KeyPart>(self, name: P) -> cachesweeper<R, T, Named> {
        cachesweeper {
            record: self.record,
            ttl: self.ttl,
            parts: self.parts.part(name),
            cache: self.cache,
            named: PhantomData,
        }
    }
}

impl<R: Sweepable, T: Ttl, N> cachesweeper<R, T, N> {
    /// `digest=false`: keeps the fragment's key the same across edits of its template (a
    /// stale fragment is then served after an edit, until its record changes).
    #[doc(hidden)]
    pub fn with_digest(mut self, digest: bool) -> Self {
        if !digest {
            self.parts = self.parts.without_template_digest();
        }
        self
    }

    /// `cache=false`: renders the block without the cache this time (nothing looked up,
    /// nothing stored), for a request that must not share it: `cache=!preview`.
    #[doc(hidden)]
    pub fn with_cache(mut self, cache: impl std::borrow::Borrow<bool>) -> Self {
        // By reference when Askama passes an expression (`cache=!preview`), by value for a
        // literal.
        self.cache = *cache.borrow();
        self
    }
}

macro_rules! key_part_setters {
    ($($setter:ident),*) => {
        impl<R: Sweepable, T: Ttl> cachesweeper<R, T, Named> {$(
            /// An extra key part.
            #[doc(hidden)]
            pub fn $setter<P: KeyPart>(mut self, part: P) -> Self {
                self.parts.push(&part);
                self
            }
        )*}
    };
}

key_part_setters!(
    with_3, with_4, with_5, with_6, with_7, with_8, with_9, with_10, with_11, with_12, with_13
);

macro_rules! valid_arg_indices {
    ($($idx:literal),*) => {$(
        impl askama::filters::ValidArgIdx<$idx> for cachesweeper {}
    )*};
}

valid_arg_indices!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13);

impl<R: Sweepable, T: Ttl, N> askama::filters::ValidFilterInvocation for cachesweeper<R, T, N> {}

impl<R: Sweepable, T: Ttl, N> cachesweeper<R, T, N> {
    /// Serves the fragment from the cache, or renders `body` and stores it. Only a named block
    /// can be executed ([`BlockName`]).
    #[doc(hidden)]
    pub fn execute(
        self,
        body: impl fmt::Display,
        values: &dyn askama::Values,
    ) -> askama::Result<Fragment>
    where
        N: BlockName,
    {
        // The template the block is in: the body's Rust type is a closure of the template's own
        // render method, so its name names the template (the same in every process of a build).
        // Every key carries it (see `KeyParts::in_template`).
        let parts = self.parts.in_template(std::any::type_name_of_val(&body));
        with_render(values, |sweeper| {
            let ttl = self.cache.then_some(&self.ttl);
            let rendered = in_render::fragment(sweeper, &self.record, ttl, &parts, || {
                let mut out = String::new();
                write!(out, "{body}").map(|()| out)
            });
            // A body that failed to render left its own error in Askama's filter cell; failing
            // at display time hands control back to the generated code, which reports that
            // error.
            Ok(Fragment(rendered.ok()))
        })
    }
}

/// The output of the `cachesweeper` filter: the fragment's HTML, already escaped by the body
/// that produced it.
#[derive(Debug)]
pub struct Fragment(Option<Html>);

impl fmt::Display for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref().ok_or(fmt::Error)?.as_str())
    }
}

impl HtmlSafe for Fragment {}

/// The `hole` filter: a part of a cached block rendered for each request and never stored (see
/// [`Holes`](crate::Holes)).
///
/// ```text
/// {% filter cachesweeper(comment, 500, "comment") %}
///   <p>{{ comment.body }}</p>
///   {{ "like"|cachesweeper::filters::hole(comment.id) }}
/// {% endfilter %}
/// ```
///
/// The input is the hole's name; the arguments (up to eight, each written out with `Display`)
/// are what the page's [`Holes::fill`](crate::Holes::fill) is given. They are stored with the
/// block, so they are the block's data: [`TemplateDigest`](crate::TemplateDigest) checks them
/// like every read of the block. The page fills the hole when the render ends, from anything
/// it holds (the viewer, a CSRF token), every time, hit or miss.
#[must_use]
#[derive(Debug, Default)]
pub struct hole {
    args: Vec<String>,
}

macro_rules! hole_args {
    ($($setter:ident),*) => {
        impl hole {$(
            /// An argument of the hole.
            #[doc(hidden)]
            pub fn $setter(mut self, arg: impl fmt::Display) -> Self {
                self.args.push(arg.to_string());
                self
            }
        )*}
    };
}

hole_args!(
    with_0, with_1, with_2, with_3, with_4, with_5, with_6, with_7
);

macro_rules! hole_arg_indices {
    ($($idx:literal),*) => {$(
        impl askama::filters::ValidArgIdx<$idx> for hole {}
    )*};
}

hole_arg_indices!(0, 1, 2, 3, 4, 5, 6, 7);

impl askama::filters::ValidFilterInvocation for hole {}

impl hole {
    /// Registers the hole with the page's render and writes its marker.
    #[doc(hidden)]
    pub fn execute(
        self,
        name: impl fmt::Display,
        values: &dyn askama::Values,
    ) -> askama::Result<HoleMark> {
        let hole = crate::Hole::new(name.to_string(), self.args);
        with_render(values, |sweeper| {
            let Some(table) = &sweeper.holes else {
                return Err(hole.error(
                    "holes are filled by a page: render it with `Scope::render` (or \
                     `render_async`); `Scope::fragment` has no page to fill them",
                ));
            };
            let mut mark = String::new();
            table.mark(std::sync::Arc::new(hole), &mut mark);
            Ok(HoleMark(mark))
        })
    }
}

/// The output of the [`hole`] filter: a marker that the page's render replaces with the hole's
/// fill when it ends.
#[derive(Debug)]
pub struct HoleMark(String);

impl fmt::Display for HoleMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl HtmlSafe for HoleMark {}
