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
use crate::keys::Version;
use crate::sweeper::counter_seed;
use crate::{KeyParts, Sweepable, Sweeper, TemplateDigest};

/// What a render knows of one fragment key.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Fetched and found; `counted` once the hit is in the stats.
    Cached { html: String, counted: bool },
    /// Fetched and not found: render the body.
    Missed,
    /// Rendered in this session (its miss is counted); final.
    Rendered(String),
}

/// A fragment a record pass met but could not place yet.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub(crate) model: &'static str,
    pub(crate) record_key: String,
    pub(crate) counter_key: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) parts: KeyParts,
}

/// A fragment to store when the render ends.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl: Duration,
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
}

/// The state of one page render, shared by the clones of its sweeper handle.
#[derive(Debug, Default)]
pub(crate) struct Session {
    state: Mutex<State>,
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
        let counter = match &counter_key {
            None => None,
            Some(k) if state.failed_counters.contains(k) => {
                // The version cannot be known: render, and store nothing. A record pass still
                // renders the body, to find the fragments nested in it and fetch them in a
                // batch; the miss is counted once, in the final pass.
                if recording {
                    state.body_depth += 1;
                    drop(state);
                    let rendered = render();
                    session.state().body_depth -= 1;
                    return rendered;
                }
                drop(state);
                self.count_miss::<R>(None);
                return render();
            }
            Some(k) => match state.versions.get(k) {
                Some(&value) => Some(value),
                None if recording => {
                    state.wanted.push(Wanted {
                        model: R::MODEL,
                        record_key: record.sweeper_key().into_owned(),
                        counter_key,
                        field,
                        parts: parts.clone(),
                    });
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
        let version = Version { field, counter };
        let key = self.key_at(record, &version, parts);
        match state.slots.get_mut(&key) {
            Some(Slot::Cached { html, counted }) => {
                if !*counted {
                    *counted = true;
                    self.count_hit(&key, html);
                }
                Ok(if discarded {
                    String::new()
                } else {
                    html.clone()
                })
            }
            Some(Slot::Rendered(html)) => Ok(if discarded {
                String::new()
            } else {
                html.clone()
            }),
            None if recording => {
                state.wanted.push(Wanted {
                    model: R::MODEL,
                    record_key: record.sweeper_key().into_owned(),
                    counter_key: None,
                    field: version.field,
                    parts: parts.clone(),
                });
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
                    Claim::Done(html) => {
                        // Another render of this process just rendered (and stores) it.
                        self.count_coalesced(&key, &html);
                        let mut state = session.state();
                        state.body_depth -= 1;
                        state.slots.insert(key, Slot::Rendered(html.clone()));
                        return Ok(html);
                    }
                    Claim::Leader(leader) => Some(leader),
                    Claim::Alone => None,
                };
                let rendered = render();
                let mut state = session.state();
                state.body_depth -= 1;
                let html = rendered?;
                if state.unresolved > unresolved_before {
                    // Fragments inside are not known yet: the next pass renders this again
                    // (and the leader, dropped here, releases anyone waiting on it).
                    return Ok(html);
                }
                if let Some(leader) = leader {
                    leader.publish(&html);
                }
                self.count_miss::<R>(Some(&key));
                let write = self.prepare_write(key.clone(), &html, ttl);
                let unstored = write.is_none().then(|| key.clone());
                state.writes.extend(write);
                state.slots.insert(key, Slot::Rendered(html.clone()));
                drop(state);
                if let Some(key) = unstored {
                    // A round trip: not under the session's lock.
                    self.release(&key);
                }
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
    ///     {% filter cachesweeper::filters::cachesweeper(c, 60) %}<p>{{ c.body }}</p>{% endfilter %}\
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
        let run = Sweeper {
            inner: Arc::clone(&self.inner),
            scope: self.scope.clone(),
            session: Some(Arc::new(Session::default())),
            digest: T::TEMPLATE_DIGEST,
        };
        let session = run.session.as_deref().expect("just set");
        for _ in 0..MAX_RECORD_PASSES {
            {
                let mut state = session.state();
                state.recording = true;
                state.unresolved = 0;
            }
            page.render_with_values(&run)?;
            let wanted = std::mem::take(&mut session.state().wanted);
            if wanted.is_empty() || !run.prefetch(session, wanted) {
                // Nothing new, or nothing missed: no body to look inside for more fragments.
                break;
            }
        }
        session.state().recording = false;
        let html = page.render_with_values(&run)?;
        let writes = std::mem::take(&mut session.state().writes);
        run.store(writes);
        Ok(html)
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

    /// Fetches what a record pass wanted: the unknown versions in one batch, then the unknown
    /// fragments in one batch. Returns whether any fragment missed, that is whether another
    /// record pass may find fragments nested in its body.
    fn prefetch(&self, session: &Session, wanted: Vec<Wanted>) -> bool {
        let counters: Vec<&str> = {
            let state = session.state();
            let mut seen = std::collections::HashSet::new();
            wanted
                .iter()
                .filter_map(|w| w.counter_key.as_deref())
                .filter(|k| !state.versions.contains_key(*k) && seen.insert(*k))
                .collect()
        };
        if !counters.is_empty() {
            let fetched = self.call_each(|b| b.incr_each(&counters, 0, counter_seed()));
            let mut state = session.state();
            for (key, value) in counters.iter().zip(fetched) {
                match value {
                    Ok(value) => state.versions.insert((*key).to_owned(), value).map(drop),
                    Err(_) => state
                        .failed_counters
                        .insert((*key).to_owned())
                        .then_some(()),
                };
            }
        }
        // A fragment whose version could not be learnt is rendered like a miss: another pass
        // looks inside it for nested fragments.
        let mut missed = !session.state().failed_counters.is_empty();
        let keys: Vec<String> = {
            let state = session.state();
            let mut seen = std::collections::HashSet::new();
            wanted
                .into_iter()
                .filter_map(|w| {
                    let counter = match &w.counter_key {
                        Some(k) => Some(*state.versions.get(k)?),
                        None => None,
                    };
                    let version = Version {
                        field: w.field,
                        counter,
                    };
                    Some(
                        self.inner
                            .keys
                            .fragment_key(w.model, &w.record_key, &version, &w.parts),
                    )
                })
                .filter(|k| !state.slots.contains_key(k) && seen.insert(k.clone()))
                .collect()
        };
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = self.fetch_fragments(&refs);
        let mut state = session.state();
        for (key, html) in keys.into_iter().zip(found) {
            let slot = match html {
                Some(html) => Slot::Cached {
                    html,
                    counted: false,
                },
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
