//! One page render in a constant number of round trips: record passes that note what they
//! need, a batch of versions and one of fragments after each, the final pass, the writes in one
//! batch (ARCHITECTURE.md, "A page render"). Bodies that missed and hold no unknown fragment are
//! rendered once and remembered. Every fragment, in a page or on its own ([`lone`]), takes the
//! same hit and miss path, [`fragment`].

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use foldhash::{HashMap, HashSet};

use crate::conditional::{self, Conditional};
use crate::holes::HoleTable;
use crate::http_cache::{Audience, Caching};
use crate::in_render::InRender;
use crate::io::{self, Blocking, Io};
use crate::keys::{KeySpace, Version};
use crate::store::{FragmentStore, Hints, Leases, Miss, Own, ReadFrom, VersionMap, Write};
use crate::sweeper::Mode;
use crate::value::{Dep, Html, Stored};
use crate::{KeyParts, Sweepable, Sweeper, TemplateDigest, frames};

/// What a render knows of one fragment key.
#[derive(Debug)]
enum Slot {
    /// Fetched, found and current; `counted` once the hit is in the stats.
    Cached { stored: Arc<Stored>, counted: bool },
    /// Fetched and not found (or outdated): render the body. With the fragment's hint key and
    /// the hints it had, to update them once it is rendered.
    Missed { hint_key: u64, hints: Option<Hints> },
    /// Rendered in this session (its miss is counted); final.
    Rendered { stored: Arc<Stored>, storable: bool },
}

/// A fragment a record pass met but could not place yet.
#[derive(Debug)]
struct Wanted {
    model: &'static str,
    record_key: String,
    counter_key: Option<String>,
    field: Option<String>,
    parts: KeyParts,
    hint_key: u64,
    /// Met outside every fragment's body: the page shows it itself (see [`State::shown`]).
    shown: bool,
}

/// Which pass of the page is rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Record {
        /// Fragments met that could not be placed yet: another pass is needed.
        unresolved: usize,
        /// Missed bodies rendering right now: outside them, the pass's output is thrown away,
        /// so known fragments need not be copied into it.
        in_bodies: usize,
    },
    /// The pass that writes the page.
    Final,
}

impl Default for Pass {
    fn default() -> Self {
        Pass::Record {
            unresolved: 0,
            in_bodies: 0,
        }
    }
}

impl Pass {
    fn recording(self) -> bool {
        matches!(self, Pass::Record { .. })
    }

    /// Whether what is written now is thrown away (a record pass, outside any missed body).
    fn discards(self) -> bool {
        matches!(self, Pass::Record { in_bodies: 0, .. })
    }

    fn unresolved(self) -> usize {
        match self {
            Pass::Record { unresolved, .. } => unresolved,
            Pass::Final => 0,
        }
    }

    fn note_unresolved(&mut self) {
        if let Pass::Record { unresolved, .. } = self {
            *unresolved += 1;
        }
    }

    /// A record pass enters (`+1`) or leaves (`-1`) a missed body.
    fn body(&mut self, step: isize) {
        if let Pass::Record { in_bodies, .. } = self {
            *in_bodies = in_bodies.saturating_add_signed(step);
        }
    }
}

/// What a session renders, which decides how it may wait for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A page rendered blocking: it may wait for another render's fragment, and looks up on
    /// its own a fragment its final pass meets that no record pass announced.
    BlockingPage,
    /// A page rendered async, whose passes run on a runtime thread: whatever the cache must
    /// answer is fetched between them, and what a pass meets unannounced is rendered without
    /// the cache.
    AsyncPage,
    /// One fragment on its own ([`lone`]), fetched before its only pass: it may wait; nothing
    /// is unannounced but a fragment whose key changed between its two calls, rendered without
    /// the cache rather than looked up again.
    Lone,
}

impl Caller {
    /// Whether a missed fragment may wait for another render of this process to finish it.
    fn may_wait(self) -> bool {
        self != Caller::AsyncPage
    }
}

#[derive(Debug, Default)]
struct State {
    pass: Pass,
    /// Counter values by counter key: each version is looked up once per render.
    versions: VersionMap,
    /// Counters whose lookup failed: their fragments are rendered and not stored.
    failed_counters: HashSet<String>,
    slots: HashMap<String, Slot>,
    wanted: Vec<Wanted>,
    /// Counters of records versioned by a field alone, met inside a fragment that is being
    /// rendered: that fragment remembers them.
    wanted_counters: Vec<String>,
    writes: Vec<Write>,
    /// Keys whose lease this render took and will not store: released in one batch at the end.
    releases: Vec<String>,
    /// Whether the final pass met a fragment no record pass announced (rendered outside the
    /// session's slots, so the page's validator cannot cover it).
    unannounced: bool,
    /// The fragments the page shows itself, for its validator.
    shown: Shown,
}

/// The keys of the fragments a page shows itself, outside every other fragment, in page order
/// and as often as it shows each: the first record pass's (which meets them all, since nothing
/// is known yet). What the page's validator covers, with what is inside each; a warm page
/// meets no other. Kept only for a render that wants a validator: a plain render copies no key.
#[derive(Debug, Default)]
enum Shown {
    /// No validator was asked for.
    #[default]
    Unwanted,
    /// Wanted, and the first batch has not been fetched yet.
    Pending,
    /// The first batch's.
    Recorded(Vec<ShownFragment>),
}

/// A fragment the page shows itself.
#[derive(Debug)]
struct ShownFragment {
    key: String,
    /// Its record's counter key (which a record versioned by a field alone has too): what
    /// names the record to an HTTP cache.
    record: String,
}

/// The state of one page render, shared by the clones of its sweeper handle.
#[derive(Debug)]
pub(crate) struct Session {
    state: Mutex<State>,
    /// When the page's data began to be read.
    began: ReadFrom,
    /// The leases this render holds (see [`Leases`]).
    leases: Arc<Leases>,
    caller: Caller,
}

impl Session {
    fn new(began: ReadFrom, leases: Arc<Leases>, caller: Caller) -> Session {
        Session {
            state: Mutex::default(),
            began,
            leases,
            caller,
        }
    }

    /// Whether a record pass is under way (its output is thrown away).
    pub(crate) fn recording(&self) -> bool {
        self.state().pass.recording()
    }

    /// The value this render learnt for the counter `counter_key`, if any.
    pub(crate) fn version(&self, counter_key: &str) -> Option<u64> {
        self.state().versions.get(counter_key).copied()
    }

    /// What the record pass noted: the fragments it wants, and the counters of records inside
    /// fragments.
    fn take_wanted(&self) -> (Vec<Wanted>, Vec<String>) {
        let mut state = self.state();
        (
            std::mem::take(&mut state.wanted),
            std::mem::take(&mut state.wanted_counters),
        )
    }

    /// The state. Never held while a template body renders (bodies re-enter the session).
    fn state(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

/// How deep fragments may nest before the final pass looks the rest up one by one.
const MAX_RECORD_PASSES: usize = 16;

/// [`Scope::render`](crate::Scope::render) (under [`io::block_on`] with [`Blocking`]) and
/// `render_async` (with `io::Async`).
pub(crate) async fn render<I: Io, T>(
    io: &I,
    sweeper: &Sweeper,
    page: &T,
    began: ReadFrom,
) -> askama::Result<String>
where
    T: askama::Template + TemplateDigest + ?Sized,
{
    match render_conditional(io, sweeper, page, began, None, Audience::Viewer).await? {
        Conditional::Page { html, .. } => Ok(html),
        Conditional::NotModified { .. } => unreachable!("no validator was asked for"),
    }
}

/// [`render`], and the page's validator if `condition` asks for it: with the request's
/// `If-None-Match` (`Some(Some(..))`) a page that has not changed is not rendered at all. Its
/// [`Caching`] says which caches may keep it, the request being `audience`'s.
pub(crate) async fn render_conditional<I: Io, T>(
    io: &I,
    sweeper: &Sweeper,
    page: &T,
    began: ReadFrom,
    condition: Option<Option<&str>>,
    audience: Audience,
) -> askama::Result<Conditional>
where
    T: askama::Template + TemplateDigest + ?Sized,
{
    let holes = Arc::new(HoleTable::new());
    // Whether a shared cache may keep the page, if nothing else forbids it.
    let shareable = audience == Audience::Anyone
        && sweeper.inner.http_caches.is_some()
        && page.holes().is_none_or(|holes| holes.shared());
    let (html, validated) = if sweeper.mode == Mode::Uncached {
        // Nothing to look up or store: one pass, every block rendered as it is met.
        let html =
            page.render_with_values(&InRender::page(&sweeper.with_holes(Arc::clone(&holes))));
        (html, None)
    } else {
        let caller = if I::BLOCKS {
            Caller::BlockingPage
        } else {
            Caller::AsyncPage
        };
        let session = Arc::new(Session::new(began, Arc::default(), caller));
        if condition.is_some() {
            session.state().shown = Shown::Pending;
        }
        let run = sweeper.for_session(
            Arc::clone(&session),
            T::TEMPLATE_DIGEST,
            began,
            Arc::clone(&holes),
        );
        let passes = render_passes(io, &run, &session, page).await;
        store_rendered(&run, &session).await;
        let (outside, html) = passes?;
        let validate = || {
            validated(
                &session,
                T::TEMPLATE_DIGEST,
                &outside,
                &holes,
                page,
                shareable,
            )
        };
        match html {
            FinalPass::Skipped => match condition.and_then(|c| Some((c?, validate()?))) {
                Some((condition, validated))
                    if conditional::matches(condition, &validated.etag) =>
                {
                    let caching = caching(sweeper, began, Some(&validated)).await;
                    return Ok(Conditional::NotModified {
                        etag: validated.etag,
                        caching,
                    });
                }
                // Not the page the request has: render it after all.
                _ => {
                    let html = final_pass(&run, &session, page);
                    store_rendered(&run, &session).await;
                    (html, condition.and_then(|_| validate()))
                }
            },
            FinalPass::Written(html) => (Ok(html), condition.and_then(|_| validate())),
        }
    };
    let html = holes.fill(html?, page.holes(), std::any::type_name::<T>())?;
    let caching = caching(sweeper, began, validated.as_ref()).await;
    Ok(Conditional::Page {
        html,
        etag: validated.map(|v| v.etag),
        caching,
    })
}

/// What a page's validator covers: its `ETag`, and for a page a shared cache may keep, the
/// counter keys of every record on it.
struct Validated {
    etag: String,
    /// `None` unless the page may be shared.
    records: Option<Vec<String>>,
}

/// Which caches may keep a page with `validated`, rendered from data read since `began` (see
/// [`crate::http_cache`]). For a page that may be shared, the counters of its records are
/// read once more (one batch): a record invalidated since the request began may be shown as
/// it was before the write, and the page could reach an HTTP cache after that write's purge.
async fn caching(sweeper: &Sweeper, began: ReadFrom, validated: Option<&Validated>) -> Caching {
    let Some(validated) = validated else {
        return Caching::NoStore;
    };
    let (Some(records), Some(caches)) = (&validated.records, &sweeper.inner.http_caches) else {
        return Caching::Private;
    };
    if records.is_empty() || records.len() > crate::http_cache::MAX_TAGS {
        // No record on it, nothing would ever purge it; too many, no cache would take them.
        return Caching::Private;
    }
    let keys: Vec<&str> = records.iter().map(String::as_str).collect();
    // Before the read: a raise it does not see lands after this.
    let checked = SystemTime::now();
    let now = sweeper.inner.versions.read(&sweeper.meter(), &keys).await;
    let store = &sweeper.inner.store;
    if !now.iter().all(|version| {
        version
            .as_ref()
            .is_ok_and(|&v| store.fresh_enough(v, began))
    }) {
        return Caching::NoStore;
    }
    Caching::Shared {
        tags: records.iter().map(|k| KeySpace::http_tag(k)).collect(),
        header: caches.tag_header,
        max_age: caches.shared_max_age,
        store_by: checked + caches.settle / 2,
    }
}

/// The page's validator from what the session knows (see [`conditional`]), if it covers the
/// whole page: every fragment the page shows is known, with its version. With the records on
/// it if it is `shareable`.
fn validated<T>(
    session: &Session,
    digest: &str,
    outside: &str,
    holes: &HoleTable,
    page: &T,
    shareable: bool,
) -> Option<Validated>
where
    T: TemplateDigest + ?Sized,
{
    let state = session.state();
    if state.unannounced
        || !state.failed_counters.is_empty()
        || session.began == ReadFrom::StoresNothing
    {
        return None;
    }
    let shown = match &state.shown {
        Shown::Recorded(shown) => shown.as_slice(),
        // A page without blocks.
        Shown::Pending => &[],
        Shown::Unwanted => return None,
    };
    let mut fragments = Vec::with_capacity(shown.len());
    let mut records = shareable.then(BTreeSet::new);
    for fragment in shown {
        match state.slots.get(&fragment.key)? {
            Slot::Cached { stored, .. }
            | Slot::Rendered {
                stored,
                storable: true,
            } => {
                if let Some(records) = &mut records {
                    records.insert(fragment.record.as_str());
                    records.extend(stored.deps.iter().map(|dep| &*dep.counter_key));
                }
                fragments.push((fragment.key.as_str(), &**stored));
            }
            // Rendered from data that may be older than the version in its key (the store
            // rule refused it): the next render's page, under the same key, may differ.
            Slot::Rendered {
                storable: false, ..
            }
            | Slot::Missed { .. } => return None,
        }
    }
    let etag = conditional::validator(digest, outside, fragments.into_iter(), holes, page.holes())?;
    Some(Validated {
        etag,
        records: records.map(|records| records.into_iter().map(str::to_owned).collect()),
    })
}

/// Stores what the session rendered, in one batch, and releases the leases it will not store.
/// Whatever lease is left (a fragment another render of this process handed over, or one the
/// final pass never met) is that render's, or expires.
async fn store_rendered(sweeper: &Sweeper, session: &Session) {
    let (writes, releases) = {
        let mut state = session.state();
        (
            std::mem::take(&mut state.writes),
            std::mem::take(&mut state.releases),
        )
    };
    let meter = sweeper.meter();
    let store = &sweeper.inner.store;
    store.write(&meter, &session.leases, writes).await;
    let releases: Vec<&str> = releases.iter().map(String::as_str).collect();
    store.release(&meter, &session.leases, &releases).await;
}

/// One fragment on its own ([`Scope::fragment`](crate::Scope::fragment), or one a blocking
/// page's final pass met unannounced), blocking: a session of one record pass, one fetch and
/// the final pass. `leases` are those of its thread (see [`Leases`]) or of its page.
pub(crate) fn lone<R, E>(
    sweeper: &Sweeper,
    leases: Arc<Leases>,
    record: &R,
    ttl: Duration,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    let session = Session::new(sweeper.stamp(), leases, Caller::Lone);
    // A fresh record pass knows nothing: it notes the fragment and renders no body. (A
    // function, not a closure: a closure's type would differ in each nested `lone`.)
    fragment(sweeper, &session, record, ttl, parts, no_body::<E>)?;
    let (wanted, contained) = session.take_wanted();
    io::block_on(prefetch(&Blocking, sweeper, &session, wanted, contained));
    session.state().pass = Pass::Final;
    let html = fragment(sweeper, &session, record, ttl, parts, render);
    io::block_on(store_rendered(sweeper, &session));
    html
}

/// What the record passes leave of the final one.
enum FinalPass {
    /// Not rendered yet: the last batch found every fragment it looked for, so a revalidation
    /// may not need it (if no body is left to render: see [`validated`]).
    Skipped,
    /// Rendered: the page's HTML (its holes not filled yet).
    Written(String),
}

/// The record passes, then the final one unless every fragment hit (then the caller renders
/// it, or answers that the page has not changed). Returns the first pass's output too, the
/// page outside its blocks.
async fn render_passes<I: Io, T>(
    io: &I,
    run: &Sweeper,
    session: &Session,
    page: &T,
) -> askama::Result<(String, FinalPass)>
where
    T: askama::Template + ?Sized,
{
    let mut first = None;
    let mut missed = false;
    for _ in 0..MAX_RECORD_PASSES {
        {
            let mut state = session.state();
            state.pass = Pass::default();
        }
        let out = page.render_with_values(&InRender::page(run))?;
        first.get_or_insert(out);
        let (wanted, counters) = session.take_wanted();
        if wanted.is_empty() && counters.is_empty() {
            break;
        }
        missed = prefetch(io, run, session, wanted, counters).await;
        if !missed {
            break;
        }
    }
    let first = first.unwrap_or_default();
    if !missed {
        return Ok((first, FinalPass::Skipped));
    }
    Ok((first, FinalPass::Written(final_pass(run, session, page)?)))
}

/// The pass that writes the page.
fn final_pass<T>(run: &Sweeper, session: &Session, page: &T) -> askama::Result<String>
where
    T: askama::Template + ?Sized,
{
    session.state().pass = Pass::Final;
    page.render_with_values(&InRender::page(run))
}

/// The body a record pass does not render.
fn no_body<E>() -> Result<String, E> {
    Ok(String::new())
}

/// A fragment the final pass meets that no record pass announced (a template whose output
/// changes between passes, or nesting deeper than [`MAX_RECORD_PASSES`]): see [`Caller`].
fn unannounced<R, E>(
    sweeper: &Sweeper,
    session: &Session,
    record: &R,
    ttl: Duration,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    session.state().unannounced = true;
    if session.caller == Caller::BlockingPage {
        lone(
            sweeper,
            Arc::clone(&session.leases),
            record,
            ttl,
            parts,
            render,
        )
    } else {
        sweeper
            .meter()
            .miss(parts.name().unwrap_or(R::sweeper_model()), None);
        frames::render_unstorable(render).map(Html::from)
    }
}

/// One fragment of a page being rendered by [`render`].
pub(crate) fn fragment<R, E>(
    sweeper: &Sweeper,
    session: &Session,
    record: &R,
    ttl: Duration,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    let meter = sweeper.meter();
    let model = R::sweeper_model();
    let fragment = parts.name().unwrap_or(model);
    let field = record.sweeper_version_field();
    let counter_key = R::COUNTER.then(|| sweeper.counter_key(record));
    // See `Own::FieldInside`.
    let inside = frames::inside();
    let contained_key = (!R::COUNTER && inside).then(|| sweeper.counter_key(record));
    let mut state = session.state();
    let recording = state.pass.recording();
    let discarded = state.pass.discards();
    let wanted = |counter_key: Option<String>, field: Option<String>| {
        let record_key = record.sweeper_key().into_owned();
        Wanted {
            model,
            hint_key: sweeper.inner.keys.hint_key(model, &record_key, parts),
            record_key,
            counter_key,
            field,
            parts: parts.clone(),
            shown: !inside,
        }
    };
    let own = match counter_key {
        None => match contained_key {
            None => Own::Field,
            Some(k) if state.failed_counters.contains(&k) => Own::FieldInsideUnknown,
            Some(k) => match state.versions.get(&k) {
                Some(&version) => Own::FieldInside(Dep {
                    counter_key: k.into(),
                    version,
                }),
                None => {
                    if recording {
                        // The fragment around this one is rendered again once it is known.
                        state.wanted_counters.push(k);
                        state.pass.note_unresolved();
                    }
                    Own::FieldInsideUnknown
                }
            },
        },
        Some(k) if state.failed_counters.contains(&k) => {
            // The version cannot be known: render, and store nothing, nor anything around it.
            // A record pass still renders the body, to find the fragments nested in it and
            // fetch them in a batch; the miss is counted once, in the final pass.
            state.pass.body(1);
            drop(state);
            if !recording {
                meter.miss(fragment, None);
            }
            let rendered = frames::render_unstorable(render);
            session.state().pass.body(-1);
            return rendered.map(Html::from);
        }
        Some(k) => match state.versions.get(&k) {
            Some(&version) => Own::Counter(Dep {
                counter_key: k.into(),
                version,
            }),
            None if recording => {
                let w = wanted(Some(k), field);
                state.wanted.push(w);
                state.pass.note_unresolved();
                return Ok(Html::from(String::new()));
            }
            None => {
                drop(state);
                return unannounced(sweeper, session, record, ttl, parts, render);
            }
        },
    };
    let version = Version {
        field,
        counter: own.keyed().map(|d| d.version),
    };
    let key = sweeper.key_at(record, &version, parts);
    let output = |html: fn(Arc<Stored>) -> Html, stored: &Arc<Stored>| {
        if discarded {
            Html::from(String::new())
        } else {
            html(Arc::clone(stored))
        }
    };
    match state.slots.get_mut(&key) {
        Some(Slot::Cached { stored, counted }) => {
            if !*counted {
                *counted = true;
                meter.hit(fragment, &key, &stored.html);
            }
            sweeper
                .inner
                .store
                .report(&own, &stored.deps, true, session.began);
            Ok(output(Html::Hit, stored))
        }
        Some(Slot::Rendered { stored, storable }) => {
            sweeper
                .inner
                .store
                .report(&own, &stored.deps, *storable, session.began);
            Ok(output(Html::Rendered, stored))
        }
        None if recording => {
            let w = wanted(
                own.keyed().map(|d| d.counter_key.to_string()),
                version.field,
            );
            state.wanted.push(w);
            state.pass.note_unresolved();
            Ok(Html::from(String::new()))
        }
        None => {
            drop(state);
            unannounced(sweeper, session, record, ttl, parts, render)
        }
        Some(Slot::Missed { hint_key, hints }) => {
            let (hint_key, hints) = (*hint_key, hints.clone());
            let unresolved_before = state.pass.unresolved();
            state.pass.body(1);
            drop(state);
            let store = &sweeper.inner.store;
            let current = |stored| {
                // Checked against the versions this render knows (the state is not locked
                // here): it learnt those of the records inside while it looked for the
                // fragments nested in this one. One it does not know means a render.
                let mut handed = [Some(stored)];
                FragmentStore::drop_outdated(&meter, &mut handed, &session.state().versions);
                let [handed] = handed;
                handed
            };
            let missed = store.render_miss(
                &key,
                &session.leases,
                session.caller.may_wait(),
                current,
                render,
            );
            let mut state = session.state();
            state.pass.body(-1);
            let (html, deps, storable, leader) = match missed {
                Miss::Handed(stored) => {
                    // Another render of this process just rendered (and stores) it.
                    meter.coalesced(fragment, &key, &stored.html);
                    store.report(&own, &stored.deps, true, session.began);
                    let html = Html::Hit(Arc::clone(&stored));
                    let slot = Slot::Rendered {
                        stored,
                        storable: true,
                    };
                    state.slots.insert(key, slot);
                    return Ok(html);
                }
                Miss::Rendered {
                    html: Err(error), ..
                } => {
                    state.releases.push(key);
                    drop(state);
                    meter.miss(fragment, None);
                    frames::note(None, &[], false);
                    return Err(error);
                }
                Miss::Rendered {
                    html: Ok(html),
                    deps,
                    storable,
                    leader,
                } => (html, deps, storable, leader),
            };
            if state.pass.unresolved() > unresolved_before {
                // Fragments inside are not known yet: the next pass renders this again (and
                // the leader, dropped here, releases anyone waiting on it).
                return Ok(Html::from(html));
            }
            drop(state);
            meter.miss(fragment, Some(&key));
            store.remember_hints(hint_key, hints.as_ref(), &deps);
            let finished = store.finish(
                &meter,
                &key,
                sweeper.cut_holes(html),
                ttl,
                &own,
                (deps, storable),
                session.began,
                leader,
            );
            let html = Html::Rendered(Arc::clone(&finished.stored));
            let mut state = session.state();
            match finished.write {
                Some(write) => state.writes.push(write),
                None => state.releases.push(key.clone()),
            }
            state.slots.insert(
                key,
                Slot::Rendered {
                    stored: finished.stored,
                    storable: finished.storable,
                },
            );
            Ok(html)
        }
    }
}

/// Fetches what a record pass wanted: the unknown versions (with the wanted fragments' hints),
/// then the fragments, then the versions their contents need, one batch each. Returns whether
/// any fragment missed, that is whether another record pass may find fragments nested in it.
async fn prefetch<I: Io>(
    io: &I,
    sweeper: &Sweeper,
    session: &Session,
    wanted: Vec<Wanted>,
    contained: Vec<String>,
) -> bool {
    let meter = sweeper.meter();
    let store = &sweeper.inner.store;
    let counters = &sweeper.inner.versions;
    let hints: Vec<Option<Hints>> = wanted.iter().map(|w| store.hints(w.hint_key)).collect();
    let unknown: Vec<&str> = {
        let state = session.state();
        let mut seen = HashSet::default();
        wanted
            .iter()
            .filter_map(|w| w.counter_key.as_deref())
            .chain(hints.iter().flatten().flat_map(|h| h.iter()).map(|k| &**k))
            .chain(contained.iter().map(String::as_str))
            .filter(|k| !state.versions.contains_key(*k) && seen.insert(*k))
            .collect()
    };
    if !unknown.is_empty() {
        let fetched = counters.read(&meter, &unknown).await;
        let mut state = session.state();
        for (key, value) in unknown.into_iter().zip(fetched) {
            match value {
                Ok(value) => {
                    state.versions.insert(key.to_owned(), value);
                }
                Err(_) => {
                    state.failed_counters.insert(key.to_owned());
                }
            }
        }
    }
    // A fragment whose version could not be learnt is rendered like a miss: another pass looks
    // inside it for nested fragments.
    let mut missed = !session.state().failed_counters.is_empty();
    let (keys, hint_keys): (Vec<String>, Vec<_>) = {
        let mut state = session.state();
        let record_shown = matches!(state.shown, Shown::Pending);
        let mut shown = Vec::new();
        let hasher = foldhash::fast::RandomState::default();
        let mut seen = HashSet::default();
        let fetched = wanted
            .into_iter()
            .zip(hints)
            .filter_map(|(w, hints)| {
                let counter = match &w.counter_key {
                    Some(k) => Some(*state.versions.get(k)?),
                    None => None,
                };
                let version = Version {
                    field: w.field,
                    counter,
                };
                let key =
                    sweeper
                        .inner
                        .keys
                        .fragment_key(w.model, &w.record_key, &version, &w.parts);
                if record_shown && w.shown {
                    shown.push(ShownFragment {
                        key: key.clone(),
                        record: w.counter_key.clone().unwrap_or_else(|| {
                            sweeper.inner.keys.counter_key(w.model, &w.record_key)
                        }),
                    });
                }
                Some((key, (w.hint_key, hints)))
            })
            // Duplicates told apart by a hash of the key, not a copy of it: one that collides
            // is not fetched, and the final pass finds it unannounced (never another's value).
            .filter(|(k, _)| !state.slots.contains_key(k) && seen.insert(hasher.hash_one(k)))
            .unzip();
        // The first batch is the first pass's: the page's own fragments in order.
        if record_shown {
            state.shown = Shown::Recorded(shown);
        }
        fetched
    };
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut found = store.fetch(io, &meter, &session.leases, &refs).await;
    let mut versions = std::mem::take(&mut session.state().versions);
    store
        .verify(&meter, counters, &mut found, &mut versions)
        .await;
    if !I::BLOCKS {
        let missed: Vec<&str> = refs
            .iter()
            .zip(&found)
            .filter(|(_, stored)| stored.is_none())
            .map(|(key, _)| *key)
            .collect();
        store.await_flights(io, &missed).await;
    }
    let mut state = session.state();
    state.versions = versions;
    for ((key, (hint_key, hints)), stored) in keys.into_iter().zip(hint_keys).zip(found) {
        let slot = match stored {
            Some(stored) => {
                store.remember_hints(hint_key, hints.as_ref(), &stored.deps);
                Slot::Cached {
                    stored,
                    counted: false,
                }
            }
            None => {
                missed = true;
                Slot::Missed { hint_key, hints }
            }
        };
        state.slots.insert(key, slot);
    }
    missed
}

#[cfg(test)]
mod tests;
