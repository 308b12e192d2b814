// The crate's documentation is the README: one place for the user's guide (its examples run as
// doctests here).
#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
pub mod backend;
mod by_fragment;
mod cached;
pub mod changes;
mod clock;
mod conditional;
mod debug;
mod digest;
mod error;
pub mod filters;
mod flight;
mod frames;
mod holes;
pub mod http_cache;
mod in_render;
mod io;
mod key_part;
mod keys;
mod l1;
mod lazy;
mod meter;
mod purge;
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
pub use conditional::Conditional;
pub use digest::TemplateDigest;
pub use error::{Error, Result};
pub use holes::{Hole, Holes};
pub use key_part::KeyPart;
pub use keys::{KeyParts, Version};
pub use lazy::Lazy;
pub use scope::Scope;
pub use stats::StatsSnapshot;
pub use sweepable::{ModelRef, ParentKey, Sweepable, Touchable, VersionField};
pub use sweeper::{Sweeper, SweeperBuilder};
pub use ttl::Ttl;

/// `#[derive(Sweepable)]`: see [`Sweepable`](trait@Sweepable) for its attributes.
#[cfg(feature = "derive")]
pub use cachesweeper_derive::Sweepable;

/// `#[derive(TemplateDigest)]`: see [`TemplateDigest`](trait@TemplateDigest).
#[cfg(feature = "derive")]
pub use cachesweeper_derive::TemplateDigest;

/// A mutex's guard, also after a thread panicked holding it: every state behind one is
/// written whole or not at all.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `#[derive(Sweepable)]` generates code against; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use std::borrow::Cow;
    pub use std::option::Option;
    pub use std::string::String;
    pub use std::vec::Vec;

    pub use crate::changes::{Parent, Registered, Table, Tracked};
    pub use crate::{
        Holes, KeyPart, ModelRef, ParentKey, Sweepable, TemplateDigest, Touchable, VersionField,
    };
    pub use inventory;

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
        use std::sync::{Mutex, OnceLock};
        static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
        let mut names = crate::lock(NAMES.get_or_init(Mutex::default));
        names.entry(type_name).or_insert_with(|| {
            let arguments = type_name.find('<').map_or("", |at| &type_name[at..]);
            // One string per instantiation of a generic model, for the life of the process.
            Box::leak(format!("{base}{arguments}").into_boxed_str())
        })
    }
}
