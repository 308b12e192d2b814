//! One fragment on its own ([`Scope::fragment`](crate::Scope::fragment), or one a blocking page
//! render met that its record passes did not): one batch of versions (the record's, and those of the records it contained last
//! time), a fragment lookup, and on a miss a render and a store.

use std::time::Duration;

use crate::frames;
use crate::io::{self, Blocking};
use crate::keys::Version;
use crate::store::{self, Leases, Miss, Own, VersionMap};
use crate::value::{Dep, Html};
use crate::{KeyParts, Sweepable, Sweeper};

/// The fragment of `record` identified by `parts`, stored for `ttl` on a miss. It runs
/// inside a template's (synchronous) render, so it calls the backend blocking.
pub(crate) fn fragment<R, E>(
    sweeper: &Sweeper,
    record: &R,
    ttl: Duration,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    store::thread_leases(|held| fragment_with(sweeper, held, record, ttl, parts, render))
}

fn fragment_with<R, E>(
    sweeper: &Sweeper,
    held: &Leases,
    record: &R,
    ttl: Duration,
    parts: &KeyParts,
    render: impl FnOnce() -> Result<String, E>,
) -> Result<Html, E>
where
    R: Sweepable + ?Sized,
{
    let counters = &sweeper.inner.versions;
    let meter = sweeper.meter();
    let store = &sweeper.inner.store;
    let began = sweeper.stamp();
    let model = R::sweeper_model();
    let keys = &sweeper.inner.keys;
    let record_key = record.sweeper_key();
    let hint_key = keys.hint_key(model, &record_key, parts);
    let counter_key = R::COUNTER.then(|| keys.counter_key(model, &record_key));
    // A record versioned by a field alone still has a counter, which `invalidate` raises: the
    // fragment around this one remembers it.
    let contained_key =
        (!R::COUNTER && frames::inside()).then(|| keys.counter_key(model, &record_key));
    let hints = store.hints(hint_key);
    let fragment = parts.name().unwrap_or(model);

    let mut versions = VersionMap::default();
    let mut wanted: Vec<&str> = counter_key
        .iter()
        .chain(&contained_key)
        .map(String::as_str)
        .collect();
    wanted.extend(hints.iter().flat_map(|h| h.iter()).map(|k| &**k));
    for (key, value) in wanted
        .iter()
        .zip(io::block_on(counters.read(&meter, &wanted)))
    {
        if let Ok(value) = value {
            versions.insert((*key).to_owned(), value);
        }
    }
    let dep = |key: &String| {
        versions.get(key).map(|&version| Dep {
            counter_key: key.as_str().into(),
            version,
        })
    };
    let own = match (&counter_key, &contained_key) {
        (Some(key), _) => match dep(key) {
            Some(dep) => Own::Counter(dep),
            None => {
                // The version could not be learnt: render, and store nothing.
                meter.miss(fragment, None);
                return frames::render_unstorable(render).map(Html::from);
            }
        },
        (None, Some(key)) => dep(key).map_or(Own::FieldInsideUnknown, Own::FieldInside),
        (None, None) => Own::Field,
    };
    let version = Version {
        field: record.sweeper_version_field(),
        counter: own.keyed().map(|d| d.version),
    };
    let key = keys.fragment_key(model, &record_key, &version, parts);

    let mut found = io::block_on(store.fetch(&Blocking, &meter, held, &[key.as_str()]));
    io::block_on(store.verify(&meter, counters, &mut found, &mut versions));
    if let Some(stored) = found.pop().flatten() {
        store.remember_hints(hint_key, hints.as_ref(), &stored.deps);
        meter.hit(fragment, &key, &stored.html);
        store.report(&own, &stored.deps, true, began);
        return Ok(Html::Hit(stored));
    }

    let current = |stored| {
        let mut handed = [Some(stored)];
        io::block_on(store.verify(&meter, counters, &mut handed, &mut versions));
        let [handed] = handed;
        handed
    };
    match store.render_miss(&key, held, true, current, render) {
        Miss::Handed(stored) => {
            meter.coalesced(fragment, &key, &stored.html);
            store.report(&own, &stored.deps, true, began);
            Ok(Html::Hit(stored))
        }
        Miss::Rendered {
            html: Err(error), ..
        } => {
            meter.miss(fragment, Some(&key));
            frames::note(None, &[], false);
            io::block_on(store.release(&meter, held, &[&key]));
            Err(error)
        }
        Miss::Rendered {
            html: Ok(html),
            deps,
            storable,
            leader,
        } => {
            meter.miss(fragment, Some(&key));
            store.remember_hints(hint_key, hints.as_ref(), &deps);
            let finished = store.finish(
                &meter,
                &key,
                html,
                ttl,
                &own,
                (deps, storable),
                began,
                leader,
            );
            match finished.write {
                Some(write) => io::block_on(store.write(&meter, held, vec![write])),
                None => io::block_on(store.release(&meter, held, &[&key])),
            }
            Ok(Html::Rendered(finished.stored))
        }
    }
}
