// Bounds are inferred for the type parameters the impl uses, and only those.
use cachesweeper::{ModelRef, Sweepable, Touchable};

#[derive(Sweepable)]
struct Owner {
    id: u32,
}

#[derive(Sweepable)]
struct Entry<'a, K, V, P, X> {
    id: K,
    #[sweeper(version)]
    revision: V,
    #[sweeper(touches = Owner)]
    owner: Option<P>,
    payload: &'a [X],
}

fn main() {
    // `X` is neither a key part nor a version: it needs no bound.
    struct NotAKey;
    let entry = Entry {
        id: "e1",
        revision: 3_u64,
        owner: Some(7_u32),
        payload: &[NotAKey],
    };
    assert_eq!(entry.sweeper_key(), "e1");
    assert!(!<Entry<'_, &str, u64, u32, NotAKey>>::COUNTER);
    let mut parents = Vec::new();
    entry.sweeper_parents(&mut parents);
    assert_eq!(parents, [ModelRef::of::<Owner>(&7)]);
    let _ = entry.payload.len();
    fn touchable<T: Touchable>() {}
    touchable::<Owner>();
}
