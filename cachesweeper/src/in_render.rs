//! How the blocks of a template find the render they belong to: the render hands its handle
//! to Askama as a runtime value under a key of its own, and a block rendered without one (by
//! Askama's own `render()`) is an error, never a cache of its own.

use std::any::Any;

use crate::{Error, Sweeper};

/// The runtime-value key of a render's handle. Private: only [`Scope::render`](crate::Scope)
/// puts a handle there, so a template rendered any other way finds none.
const KEY: &str = "cachesweeper render";

/// A render's runtime values: the handle of the render (see [`with_render`]).
pub(crate) struct InRender<'a>(pub(crate) &'a Sweeper);

impl askama::Values for InRender<'_> {
    fn get_value<'b>(&'b self, key: &str) -> Option<&'b dyn Any> {
        (key == KEY).then_some(self.0 as &dyn Any)
    }
}

/// A render's runtime values with the handle replaced (a cached sub-template's, whose digest
/// keys the blocks inside it), and the caller's other values kept.
pub(crate) struct WithHandle<'a> {
    pub(crate) handle: &'a Sweeper,
    pub(crate) rest: &'a dyn askama::Values,
}

impl askama::Values for WithHandle<'_> {
    fn get_value<'b>(&'b self, key: &str) -> Option<&'b dyn Any> {
        if key == KEY {
            Some(self.handle as &dyn Any)
        } else {
            self.rest.get_value(key)
        }
    }
}

/// Runs `f` with the handle of the render `values` belong to; without one, the error that
/// says how to render the page.
pub(crate) fn with_render<T>(
    values: &dyn askama::Values,
    f: impl FnOnce(&Sweeper) -> askama::Result<T>,
) -> askama::Result<T> {
    match askama::get_value::<Sweeper>(values, KEY) {
        Ok(handle) => f(handle),
        Err(_) => Err(askama::Error::custom(Error::NoSweeper)),
    }
}
