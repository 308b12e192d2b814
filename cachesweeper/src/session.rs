//! One page render in a constant number of round trips (see [`Sweeper::render`]).
//!
//! A page is rendered in *record* passes, then once for real. A record pass renders the
//! template but, for each fragment whose version or stored value is not known yet, writes
//! nothing and notes what it needs instead. Between passes the sweeper fetches everything noted,
//! all at once: one batch for the versions, one for the fragments. Fragments nested in a
//! fragment that missed are discovered by the next pass, so each level of nesting costs one
//! more pair of batches, whatever the number of fragments. Bodies that missed and hold no
//! unknown fragment are rendered once and remembered; the final pass writes the page from what
//! is known, and every fragment rendered is stored in one batch at the end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::flight::Claim;
use crate::fragments::{self, Write};
use crate::keys::Version;
use crate::value::{Dep, Stored};
use crate::{KeyParts, Sweepable, Sweeper, TemplateDigest, clock};

/// What a render knows of one fragment key.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Fetched, found and current; `counted` once the hit is in the stats.
    Cached { stored: Arc<Stored>, counted: bool },
    /// Fetched and not found (or outdated): render the body.
    Missed,
    /// Rendered in this session (its miss is counted); final.
    Rendered { stored: Arc<Stored>, storable: bool },
}

/// A fragment a record pass met but could not place yet.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub(crate) model: &'static str,
    pub(crate) record_key: String,
    pub(crate) counter_key: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) parts: KeyParts,
    pub(crate) hint_key: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) recording: bool,
    /// Counter values by counter key: each version is looked up once per render.
    pub(crate) versions: HashMap<String, u64>,
    /// Counters whose lookup failed: their fragments are rendered and not stored.
    pub(crate) failed_counters: HashSet<String>,
    pub(crate) slots: HashMap<String, Slot>,
    pub(crate) wanted: Vec<Wanted>,
    /// Fragments met in this pass that could not be written out yet.
    pub(crate) unresolved: usize,
    /// How many missed bodies are being rendered right now: outside them, a record pass
    /// discards its output, so known fragments need not be copied into it.
    pub(crate) body_depth: usize,
    pub(crate) writes: Vec<Write>,
    /// Keys whose lease this render took and will not store: released in one batch at the end.
    pub(crate) releases: Vec<String>,
}

/// The state of one page render, shared by the clones of its sweeper handle.
#[derive(Debug)]
pub(crate) struct Session {
    state: Mutex<State>,
    /// When the page's data began to be read.
    began: u64,
}

impl Session {
    /// The state. Never held while a template body renders (bodies re-enter the session).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How deep fragments may nest before the final pass looks the rest up one by one.
const MAX_RECORD_PASSES: usize = 16;

impl Sweeper {
    /// One fragment of a page being rendered by [`render`](Self::render).
    pub(crate) fn fragment_in_session<R, E>(
        &self,
        session: &Session,
        record: &R,
        ttl: Duration,
        parts: &KeyParts,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E>
    where
        R: Sweepable + ?Sized,
    {
        let field = record.sweeper_version_field();
        let counter_key = R::COUNTER.then(|| self.counter_key(record));
        let mut state = session.state();
        let recording = state.recording;
        // A record pass outside any missed body: its output is thrown away.
        let discarded = recording && state.body_depth == 0;
        let wanted = |counter_key: Option<String>, field: Option<String>| {
            let record_key = record.sweeper_key().into_owned();
            Wanted {
                model: R::sweeper_model(),
                hint_key: self.hint_key(R::sweeper_model(), &record_key, parts),
                record_key,
                counter_key,
                field,
                parts: parts.clone(),
            }
        };
        let own = match counter_key {
            None => None,
            Some(k) if state.failed_counters.contains(&k) => {
                // The version cannot be known: render, and store nothing, nor anything around
                // it. A record pass still renders the body, to find the fragments nested in it
                // and fetch them in a batch; the miss is counted once, in the final pass.
                if recording {
                    state.body_depth += 1;
                }
                drop(state);
                if !recording {
                    self.count_miss(R::sweeper_model(), None);
                }
                let (rendered, ..) = fragments::within(render);
                fragments::note(None, &[], false);
                if recording {
                    session.state().body_depth -= 1;
                }
                return rendered;
            }
            Some(k) => match state.versions.get(&k) {
                Some(&version) => Some(Dep {
                    counter_key: k.into(),
                    version,
                }),
                None if recording => {
                    let w = wanted(Some(k), field);
                    state.wanted.push(w);
                    state.unresolved += 1;
                    return Ok(String::new());
                }
                None => {
                    // The final pass met a fragment no record pass saw (a template whose
                    // output changes between passes): look it up on its own.
                    drop(state);
                    return self.fragment_alone(record, ttl, parts, render);
                }
            },
        };
        let version = Version {
            field,
            counter: own.as_ref().map(|d| d.version),
        };
        let key = self.key_at(record, &version, parts);
        let output = |html: &str| {
            if discarded {
                String::new()
            } else {
                html.to_owned()
            }
        };
        match state.slots.get_mut(&key) {
            Some(Slot::Cached { stored, counted }) => {
                if !*counted {
                    *counted = true;
                    self.count_hit(&key, &stored.html);
                }
                fragments::note(own.as_ref(), &stored.deps, true);
                Ok(output(&stored.html))
            }
            Some(Slot::Rendered { stored, storable }) => {
                fragments::note(own.as_ref(), &stored.deps, *storable);
                Ok(output(&stored.html))
            }
            None if recording => {
                let w = wanted(own.map(|d| d.counter_key.to_string()), version.field);
                state.wanted.push(w);
                state.unresolved += 1;
                Ok(String::new())
            }
            None => {
                drop(state);
                self.fragment_alone(record, ttl, parts, render)
            }
            Some(Slot::Missed) => {
                let unresolved_before = state.unresolved;
                state.body_depth += 1;
                drop(state);
                let leader = match self.inner.flights.claim(&key) {
                    Claim::Done(stored) => {
                        // Another render of this process just rendered (and stores) it: take
                        // it if what it contains is still current.
                        let mut handed = [Some(stored)];
                        let mut versions = std::mem::take(&mut session.state().versions);
                        self.verify(&mut handed, &mut versions);
                        let mut state = session.state();
                        state.versions = versions;
                        if let [Some(stored)] = handed {
                            state.body_depth -= 1;
                            self.count_coalesced(&key, &stored.html);
                            fragments::note(own.as_ref(), &stored.deps, true);
                            let html = stored.html.clone();
                            state.slots.insert(
                                key,
                                Slot::Rendered {
                                    stored,
                                    storable: true,
                                },
                            );
                            return Ok(html);
                        }
                        None
                    }
                    Claim::Leader(leader) => Some(leader),
                    Claim::Alone => None,
                };
                let (rendered, deps, inner) = fragments::within(render);
                let mut state = session.state();
                state.body_depth -= 1;
                let html = match rendered {
                    Ok(html) => html,
                    Err(error) => {
                        state.releases.push(key);
                        drop(state);
                        fragments::note(None, &[], false);
                        return Err(error);
                    }
                };
                if state.unresolved > unresolved_before {
                    // Fragments inside are not known yet: the next pass renders this again
                    // (and the leader, dropped here, releases anyone waiting on it).
                    return Ok(html);
                }
                drop(state);
                self.count_miss(R::sweeper_model(), Some(&key));
                let hint_key = self.hint_key(R::sweeper_model(), &record.sweeper_key(), parts);
                let known = self.inner.dep_hints.get(&hint_key);
                self.remember_hints(hint_key, known.as_ref(), &deps);
                let finished = self.finish_fragment(
                    &key,
                    html,
                    ttl,
                    own.as_ref(),
                    (deps, inner),
                    session.began,
                    leader,
                );
                let html = finished.stored.html.clone();
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

    /// Renders a page with every fragment lookup batched: the page costs a constant number of
    /// round trips however many fragments it holds (two per level of nesting that misses, none
    /// for what the L1 holds), versions are looked up once per record, and everything rendered
    /// is stored in one batch.
    ///
    /// The template is rendered more than once (cheap passes that skip fragment bodies, then
    /// the real one), so its non-fragment parts should not have side effects; each fragment body
    /// is rendered at most once.
    ///
    /// ```
    /// use askama::Template;
    /// use cachesweeper::{Sweepable, Sweeper};
    ///
    /// #[derive(Sweepable)]
    /// struct Comment { id: i64, body: String }
    ///
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% for c in comments %}\
    ///     {% filter cachesweeper::filters::cachesweeper(c, 60, \"comment\") %}<p>{{ c.body }}</p>{% endfilter %}\
    ///     {% endfor %}")]
    /// struct Page { comments: Vec<Comment> }
    ///
    /// let sweeper = Sweeper::embedded();
    /// let page = Page { comments: (0..100).map(|id| Comment { id, body: "hi".into() }).collect() };
    /// sweeper.render(&page)?;
    /// let before = sweeper.stats();
    /// assert_eq!(sweeper.render(&page)?.matches("<p>hi</p>").count(), 100);
    /// let warm = sweeper.stats() - before;
    /// assert_eq!((warm.hits, warm.round_trips), (100, 2)); // one batch of versions, one of fragments
    /// # Ok::<(), askama::Error>(())
    /// ```
    pub fn render<T>(&self, page: &T) -> askama::Result<String>
    where
        T: askama::Template + TemplateDigest + ?Sized,
    {
        let began = self.began.unwrap_or_else(clock::now);
        let run = Sweeper {
            inner: Arc::clone(&self.inner),
            scope: self.scope.clone(),
            session: Some(Arc::new(Session {
                state: Mutex::default(),
                began,
            })),
            digest: T::TEMPLATE_DIGEST,
            began: Some(began),
        };
        let session = run.session.as_deref().expect("just set");
        let html = run.render_passes(session, page);
        let (writes, releases, slots) = {
            let mut state = session.state();
            (
                std::mem::take(&mut state.writes),
                std::mem::take(&mut state.releases),
                std::mem::take(&mut state.slots),
            )
        };
        run.store(writes);
        run.release(&releases.iter().map(String::as_str).collect::<Vec<_>>());
        // Whatever lease is left (a fragment another render of this process handed over, or
        // one the final pass never met) is that render's, or expires: not this thread's.
        fragments::let_go(slots.keys().map(String::as_str));
        html
    }

    /// The record passes, then the final one.
    fn render_passes<T>(&self, session: &Session, page: &T) -> askama::Result<String>
    where
        T: askama::Template + ?Sized,
    {
        for _ in 0..MAX_RECORD_PASSES {
            {
                let mut state = session.state();
                state.recording = true;
                state.unresolved = 0;
            }
            page.render_with_values(self)?;
            let wanted = std::mem::take(&mut session.state().wanted);
            if wanted.is_empty() || !self.prefetch(session, wanted) {
                // Nothing new, or nothing missed: no body to look inside for more fragments.
                break;
            }
        }
        session.state().recording = false;
        page.render_with_values(self)
    }

    /// [`render`](Self::render) on tokio's blocking pool, for async handlers (feature `tokio`):
    /// rendering makes blocking cache round trips, which must not stall a runtime worker.
    ///
    /// ```no_run
    /// # use askama::Template;
    /// # #[derive(Template, cachesweeper::TemplateDigest)] #[template(source = "", ext = "html")] struct Page;
    /// async fn handler(sweeper: cachesweeper::Sweeper) -> String {
    ///     sweeper.scope().render_async(Page).await.unwrap_or_default()
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn render_async<T>(&self, page: T) -> askama::Result<String>
    where
        T: askama::Template + TemplateDigest + Send + 'static,
    {
        let sweeper = self.clone();
        tokio::task::spawn_blocking(move || sweeper.render(&page))
            .await
            .map_err(askama::Error::custom)?
    }

    /// Fetches what a record pass wanted: the unknown versions in one batch (with those of
    /// the records the wanted fragments contained last time), then the unknown fragments in
    /// one batch, then the versions their contents need that are still unknown, if any.
    /// Returns whether any fragment missed, that is whether another record pass may find
    /// fragments nested in its body.
    fn prefetch(&self, session: &Session, wanted: Vec<Wanted>) -> bool {
        let hints: Vec<Option<crate::sweeper::Hints>>;
        let counters: Vec<String> = {
            let state = session.state();
            let mut seen = HashSet::new();
            hints = wanted
                .iter()
                .map(|w| self.inner.dep_hints.get(&w.hint_key))
                .collect();
            wanted
                .iter()
                .filter_map(|w| w.counter_key.as_deref())
                .chain(hints.iter().flatten().flat_map(|h| h.iter()).map(|k| &**k))
                .filter(|k| !state.versions.contains_key(*k) && seen.insert(*k))
                .map(str::to_owned)
                .collect()
        };
        if !counters.is_empty() {
            let refs: Vec<&str> = counters.iter().map(String::as_str).collect();
            let fetched = self.read_versions(&refs);
            let mut state = session.state();
            for (key, value) in counters.into_iter().zip(fetched) {
                match value {
                    Ok(value) => {
                        state.versions.insert(key, value);
                    }
                    Err(_) => {
                        state.failed_counters.insert(key);
                    }
                }
            }
        }
        // A fragment whose version could not be learnt is rendered like a miss: another pass
        // looks inside it for nested fragments.
        let mut missed = !session.state().failed_counters.is_empty();
        let (keys, hint_keys): (Vec<String>, Vec<_>) = {
            let state = session.state();
            let mut seen = HashSet::new();
            wanted
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
                        self.inner
                            .keys
                            .fragment_key(w.model, &w.record_key, &version, &w.parts);
                    Some((key, (w.hint_key, hints)))
                })
                .filter(|(k, _)| !state.slots.contains_key(k) && seen.insert(k.clone()))
                .unzip()
        };
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut found = self.fetch_fragments(&refs);
        let mut versions = std::mem::take(&mut session.state().versions);
        self.verify(&mut found, &mut versions);
        let mut state = session.state();
        state.versions = versions;
        for ((key, (hint_key, hints)), stored) in keys.into_iter().zip(hint_keys).zip(found) {
            let slot = match stored {
                Some(stored) => {
                    self.remember_hints(hint_key, hints.as_ref(), &stored.deps);
                    Slot::Cached {
                        stored,
                        counted: false,
                    }
                }
                None => {
                    missed = true;
                    Slot::Missed
                }
            };
            state.slots.insert(key, slot);
        }
        missed
    }
}
