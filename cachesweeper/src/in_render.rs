//! How the blocks of a template find the render they belong to, and what a block does with it:
//! the render hands its handle to Askama as a runtime value under a key of its own, and a block
//! rendered without one (by Askama's own `render()`) is an error, never a cache of its own.

use std::any::Any;

use crate::keys::Version;
use crate::store::thread_leases;
use crate::sweeper::Mode;
use crate::value::Html;
use crate::{Error, KeyParts, Sweepable, Sweeper, session};

/// The runtime-value key of a render's handle. Private: only [`Scope::render`](crate::Scope)
/// puts a handle there, so a template rendered any other way finds none.
const KEY: &str = "cachesweeper render";

/// A render's runtime values: the handle of the render (see [`with_render`]), and the caller's
/// other values (those of the page around a cached sub-template, whose own handle, with its
/// digest, replaces the page's).
pub(crate) struct InRender<'a> {
    pub(crate) handle: &'a Sweeper,
    pub(crate) rest: &'a dyn askama::Values,
}

impl<'a> InRender<'a> {
    /// A page's values: its handle alone.
    pub(crate) fn page(handle: &'a Sweeper) -> Self {
        InRender {
            handle,
            rest: askama::NO_VALUES,
        }
    }
}

impl askama::Values for InRender<'_> {
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
    f(askama::get_value(values, KEY).map_err(|_| askama::Error::custom(Error::NoSweeper))?)
}

/// A fragment kept with holes (stored, or fit to be), written out with this render's markers
/// where its holes are (see [`crate::holes`]); any other as it is.
fn with_holes(handle: &Sweeper, html: Html) -> Html {
    match (&html, &handle.holes) {
        (Html::Hit(stored) | Html::Rendered(stored), Some(table)) if !stored.holes.is_empty() => {
            Html::from(table.reinsert(&stored.html, &stored.holes))
        }
        _ => html,
    }
}

/// What a block does with its render's handle: the fragment of `record` identified by `parts`
/// (see [`Scope::fragment`](crate::Scope)), keyed with the template's digest, from the page's
/// session or on its own, marked on a debug scope; the HTML left where the cache holds it (the
/// filter writes it out from there).
pub(crate) fn fragment<R, E>(
    handle: &Sweeper,
    record: &R,
    ttl: impl crate::Ttl,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    let ttl = match handle.mode {
        Mode::Uncached => None,
        Mode::Cached | Mode::Debug => ttl.ttl(),
    };
    let Some(ttl) = ttl else {
        // Not cached: rendered on every pass (a record pass looks inside it for the blocks
        // it holds), and counted as a miss once, in the pass that writes the page.
        if !handle.session.as_ref().is_some_and(|s| s.recording()) {
            handle.meter().count(|s| &s.misses);
        }
        return render().map(Html::from);
    };
    let with_digest;
    let parts = if parts.wants_digest() && !handle.digest.is_empty() {
        with_digest = parts.clone().template_digest(handle.digest);
        &with_digest
    } else {
        parts
    };
    let html = match &handle.session {
        Some(session) => session::fragment(handle, session, record, ttl, parts, render),
        None => session::lone(handle, thread_leases(), record, ttl, parts, render),
    }?;
    let hit = html.is_hit();
    let html = with_holes(handle, html);
    if handle.mode != Mode::Debug {
        return Ok(html);
    }
    let model = R::sweeper_model();
    // The version the lookup used: a page render knows it; a lone fragment reads it again (a
    // debug page may cost a round trip more).
    let counter = if !R::COUNTER {
        None
    } else if let Some(session) = &handle.session {
        session.version(&handle.counter_key(record))
    } else {
        handle.version(record).ok().and_then(|v| v.counter)
    };
    let version = Version {
        field: record.sweeper_version_field(),
        counter,
    };
    let key = handle.key_at(record, &version, parts);
    Ok(crate::debug::mark(
        &html,
        &crate::debug::Mark {
            hit,
            name: parts.name().unwrap_or(model),
            model,
            record_key: &record.sweeper_key(),
            key: &key,
        },
    ))
}
