//! Lazy, model-versioned fragment caching for [Askama](https://askama.rs) templates.
//!
//! Every cache key carries the current *version* of the record it belongs to. Changing a record
//! bumps its version, so its old fragments are simply never asked for again and age out by
//! themselves: nothing deletes keys, and nothing can forget to.
//!
//! - [Models](#models): `#[derive(Sweepable)]`
//! - [Templates](#templates): the `cachesweeper` filter block and [`cached`]
//! - [Pages](#pages): [`Scope::render`](crate::Scope::render), a page in a constant number of round trips
//! - [Invalidation](#invalidation): [`Sweeper::invalidate`]
//! - [Backends](#backends): [`backend::Embedded`], [`backend::Memcached`] and `backend::Redis`
//! - [Counters](#counters): [`Sweeper::stats`]
//!
//! # Models
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use cachesweeper::Sweepable;
//!
//! #[derive(Sweepable)]
//! #[sweeper(counter)] // versioned by `updated_at`, and touchable by its comments
//! struct Article {
//!     id: i64,
//!     #[sweeper(version)]
//!     updated_at: DateTime<Utc>,
//! }
//!
//! #[derive(Sweepable)]
//! struct Comment {
//!     id: i64,
//!     #[sweeper(touches = Article)] // invalidating a comment invalidates its article too
//!     article_id: i64,
//!     likes: u32,
//! }
//! ```
//!
//! | attribute | where | meaning |
//! |---|---|---|
//! | `#[sweeper(key)]` | field | the record's key (default: the field named `id`) |
//! | `#[sweeper(version)]` | field | the version comes from this field (`DateTime`, `NaiveDateTime`, integer, string): no round trip to learn it |
//! | `#[sweeper(touches = T)]` | field holding a parent's key (or `Option` of it) | invalidating this record also invalidates that parent; repeat for several parents |
//! | `#[sweeper(name = "...")]` | struct | the model name in keys (default: module path and type name) |
//! | `#[sweeper(counter)]` | struct | keep a counter even with a version field, so children can touch it |
//! | `#[sweeper(crate = path)]` | struct | where the `cachesweeper` crate is, if renamed |
//!
//! Mistakes are compile errors that point at the token at fault: no key field, two key
//! fields, an unknown or repeated option, an enum, union or tuple struct, a version field that
//! cannot be a token, a `touches` target that is not Sweepable or cannot be touched.
//!
//! # Templates
//!
//! The filter block, as in django-cache-sweeper's `{% cachesweeper %}` tag: the record, the
//! time to live in seconds (or a `Duration`), the block's name, then any extra key parts. The
//! name is required: it keeps two blocks on one record from sharing a cache entry, and
//! [`TemplateDigest`] checks at compile time that no two blocks of a page share one (see
//! [`filters`]).
//!
//! ```
//! # use cachesweeper::Sweepable;
//! # #[derive(Sweepable)] struct Comment { id: i64, author: String, body: String }
//! use askama::Template;
//!
//! #[derive(Template, cachesweeper::TemplateDigest)]
//! #[template(ext = "html", source = r#"
//! {%- for comment in comments -%}
//! {% filter cachesweeper::filters::cachesweeper(comment, 500, "comment.html") -%}
//!   <p><strong>{{ comment.author }}</strong> said {{ comment.body }}</p>
//! {%- endfilter %}
//! {% endfor -%}
//! "#)]
//! struct Comments<'a> {
//!     comments: &'a [Comment],
//! }
//!
//! let sweeper = cachesweeper::Sweeper::embedded();
//! let comments = vec![Comment { id: 1, author: "ann".into(), body: "<3".into() }];
//! let html = sweeper.scope().render(&Comments { comments: &comments })?;
//! assert_eq!(html.trim(), "<p><strong>ann</strong> said &#60;3</p>");
//! # Ok::<(), askama::Error>(())
//! ```
//!
//! With `mod filters { pub use cachesweeper::filters::cachesweeper; }` in the module of the
//! template struct, the short form `{% filter cachesweeper(comment, 500, "comment") %}` works
//! too. On a hit the body is not rendered. A whole sub-template can be cached with [`cached`].
//!
//! # Pages
//!
//! A page is rendered through the cache in one way: take a [`Scope`] from the [`Sweeper`] when
//! the request arrives, **before** reading its data, then render with [`Scope::render`] (or
//! `Scope::render_async` in an async handler, feature `tokio`). Cheap passes note what the
//! page needs, one batch fetches the versions and one the fragments (per level of nesting that
//! misses), and what missed is stored in one batch: a constant number of round trips however many
//! fragments. With memcached a process-local L1 also holds fragments
//! ([`SweeperBuilder::l1`]), so a warm page costs one round trip. Every fragment key carries
//! the page's [`TemplateDigest`] (computed at compile time over the template and what it
//! includes, extends or imports): a build with an edited template misses, a build without
//! template changes keeps hitting.
//!
//! There is no process-wide sweeper: keep the [`Sweeper`] in your application's state and pass
//! it. With the `axum` feature, a handler takes a [`Scope`] as an argument (an extractor that
//! takes it from the state's sweeper when the request arrives). Askama's own `template.render()` on a page with blocks fails with [`Error::NoSweeper`],
//! which says how to render it; it never caches somewhere of its own.
//!
//! # Invalidation
//!
//! ```
//! # use cachesweeper::Sweepable;
//! # #[derive(Sweepable)] struct Article { id: i64 }
//! # #[derive(Sweepable)] struct Comment { id: i64, #[sweeper(touches = Article)] article_id: i64 }
//! let sweeper = cachesweeper::Sweeper::embedded();
//! let comment = Comment { id: 7, article_id: 1 };
//! // after the vote is committed to the database:
//! sweeper.invalidate(&comment)?; // raises comment 7 and article 1, in one batch
//! # Ok::<(), cachesweeper::Error>(())
//! ```
//!
//! **Never stale.** Once `invalidate` has returned `Ok` (called after the commit), no page
//! rendered from then on, in any process, shows the record as it was before: a counter holds
//! the time of the record's last invalidation, a render stores only fragments its data is known
//! to be newer than (its [`Scope`] is taken *before* reading the data), and a fragment is
//! served only while the records rendered inside it, at any depth, are at the versions it was
//! rendered with. [`Sweeper::invalidate`] states the guarantee precisely, with what it needs of
//! the application and what happens when clocks or the network misbehave. A counter lost with
//! a restarted server or evicted comes back at a new time, never at a version an older
//! fragment's key carries.
//!
//! # Backends
//!
//! [`backend::Embedded`] (moka, bounded by bytes) is the default. [`backend::Memcached`] (feature
//! `memcache`, on by default) talks to one or more memcached servers with millisecond timeouts.
//! `backend::Redis` (feature `redis`, off by default; `redis-tls` adds `rediss://`) talks to a
//! Redis or Valkey server or a Redis Cluster, with the same semantics and timeouts.
//! Both implement [`backend::Backend`] and pass its conformance suite (`backend::conformance`,
//! feature `conformance`), which is also how to test a backend of your own:
//! `cachesweeper::backend::conformance::run_all(&my_backend)`.
//!
//! # Counters
//!
//! [`Sweeper::stats`] counts hits, misses, errors, bytes read and written, backend round
//! trips, fragments not stored because a record in them changed during the render
//! (`unstored`) and fragments found but outdated by a record inside them (`outdated`);
//! [`Scope::stats`] counts one request's. Each hit
//! and miss is also a `tracing` event at debug level.
//!
//! # Failing open
//!
//! A cache that errors or times out never fails a page: the fragment is rendered as on a miss,
//! the error is counted and logged (at most once a second).

#![deny(missing_docs)]

mod alone;
#[cfg(feature = "axum")]
mod axum;
pub mod backend;
mod by_fragment;
mod cached;
mod clock;
mod debug;
mod digest;
mod error;
pub mod filters;
mod flight;
mod frames;
mod in_render;
mod io;
mod key_part;
mod keys;
mod l1;
mod lazy;
mod meter;
mod retry;
mod scope;
#[cfg(test)]
mod scripted;
mod session;
mod stats;
mod store;
mod sweepable;
mod sweeper;
mod ttl;
mod value;
mod versions;

pub use by_fragment::FragmentStats;
pub use cached::{Cached, cached};
pub use digest::TemplateDigest;
pub use error::{Error, Result};
pub use key_part::KeyPart;
pub use keys::{KeyParts, Version};
pub use lazy::Lazy;
pub use scope::Scope;
pub use stats::StatsSnapshot;
pub use sweepable::{ModelRef, ParentKey, Sweepable, Touchable, VersionField};
pub use sweeper::{Sweeper, SweeperBuilder};
pub use ttl::Ttl;

/// `#[derive(Sweepable)]`: see [Models](crate#models).
#[cfg(feature = "derive")]
pub use cachesweeper_derive::Sweepable;

/// `#[derive(TemplateDigest)]`: see [`TemplateDigest`](trait@TemplateDigest).
#[cfg(feature = "derive")]
pub use cachesweeper_derive::TemplateDigest;

/// What `#[derive(Sweepable)]` generates code against; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use std::borrow::Cow;
    pub use std::option::Option;
    pub use std::string::String;
    pub use std::vec::Vec;

    pub use crate::{
        KeyPart, ModelRef, ParentKey, Sweepable, TemplateDigest, Touchable, VersionField,
    };

    /// Adds the parent of model `P` under `key` (if any) to `parents`.
    pub fn touch<P: Touchable + ?Sized>(
        parents: &mut Vec<ModelRef>,
        key: &(impl ParentKey + ?Sized),
    ) {
        if let Some(key) = key.parent_key() {
            parents.push(ModelRef {
                model: P::sweeper_model(),
                key: key.into_owned(),
            });
        }
    }

    /// The model name of a generic model: `base` followed by the type arguments of
    /// `type_name` (`std::any::type_name::<Self>()`), made once per instantiation.
    pub fn generic_model(base: &'static str, type_name: &'static str) -> &'static str {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock, PoisonError};
        static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        names.entry(type_name).or_insert_with(|| {
            let arguments = type_name.find('<').map_or("", |at| &type_name[at..]);
            // One string per instantiation of a generic model, for the life of the process.
            Box::leak(format!("{base}{arguments}").into_boxed_str())
        })
    }

    /// Fails to compile unless `T` is a key part (for the key field's span).
    pub fn assert_key_part<T: KeyPart + ?Sized>(_: &T) {}

    /// Fails to compile unless `T` can be a version token (for the version field's span).
    pub fn assert_version_field<T: VersionField + ?Sized>(_: &T) {}
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
