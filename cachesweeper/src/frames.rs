//! Dependency frames: while a fragment's body renders, the fragments met inside it (at any
//! depth) report their records' versions and whether they may be stored, so that the outer
//! fragment is stored with the versions it contains and only if everything in it may be.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::value::Dep;

/// The records met while one fragment's body renders.
#[derive(Debug)]
struct Frame {
    deps: HashMap<Arc<str>, u64>,
    storable: bool,
}

thread_local! {
    /// The fragments whose bodies are rendering on this thread, innermost last. Askama renders
    /// a body synchronously, on the caller's thread, inside the filter's call, so a stack per
    /// thread sees exactly the fragments nested in it.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Pops the frame it pushed, even if the body panics.
struct FrameGuard;

impl Drop for FrameGuard {
    fn drop(&mut self) {
        FRAMES.with(|frames| frames.borrow_mut().pop());
    }
}

/// Runs a fragment's `body` in a frame of its own. Returns what it returned, the versions of the
/// records rendered inside it, and whether everything inside it may be stored.
pub(crate) fn within<T>(body: impl FnOnce() -> T) -> (T, Arc<[Dep]>, bool) {
    FRAMES.with(|frames| {
        frames.borrow_mut().push(Frame {
            deps: HashMap::new(),
            storable: true,
        });
    });
    let guard = FrameGuard;
    let out = body();
    let frame = FRAMES.with(|frames| frames.borrow_mut().pop());
    std::mem::forget(guard);
    let frame = frame.expect("the frame pushed above");
    let mut deps: Vec<Dep> = frame
        .deps
        .into_iter()
        .map(|(counter_key, version)| Dep {
            counter_key,
            version,
        })
        .collect();
    deps.sort_by(|a, b| a.counter_key.cmp(&b.counter_key));
    (out, deps.into(), frame.storable)
}

/// Whether a fragment's body is rendering on this thread: a fragment met now is inside it.
pub(crate) fn inside() -> bool {
    FRAMES.with(|frames| !frames.borrow().is_empty())
}

/// Tells the fragment being rendered around this one, if any, that this one is part of it:
/// its record's version (`own`), the versions it contains, and whether it may be stored.
pub(crate) fn note(own: Option<&Dep>, deps: &[Dep], storable: bool) {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let Some(frame) = frames.last_mut() else {
            return;
        };
        frame.storable &= storable;
        for dep in own.into_iter().chain(deps) {
            // One record at two versions in one fragment: part of it predates the other.
            let seen = *frame
                .deps
                .entry(Arc::clone(&dep.counter_key))
                .or_insert(dep.version);
            frame.storable &= seen == dep.version;
        }
    });
}

/// Renders the body of a fragment that will not be stored (its version could not be learnt):
/// in a frame of its own, and the fragment around it, if any, is told it may not be stored
/// either.
pub(crate) fn render_unstorable<T>(body: impl FnOnce() -> T) -> T {
    let (out, ..) = within(body);
    note(None, &[], false);
    out
}
