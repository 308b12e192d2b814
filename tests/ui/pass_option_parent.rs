use cachesweeper::{ModelRef, Sweepable};

#[derive(Sweepable)]
struct Category {
    id: i64,
    // A tree: the parent category is optional, and of the same model.
    #[sweeper(touches = Self)]
    parent_id: Option<i64>,
}

fn main() {
    let mut parents = Vec::new();
    Category {
        id: 1,
        parent_id: None,
    }
    .sweeper_parents(&mut parents);
    assert!(parents.is_empty());
    Category {
        id: 2,
        parent_id: Some(1),
    }
    .sweeper_parents(&mut parents);
    assert_eq!(parents, [ModelRef::of::<Category>(&1)]);
}
