use cachesweeper::{ModelRef, Sweepable};

#[derive(Sweepable)]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
struct User {
    id: u64,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
    #[sweeper(touches = User)]
    author_id: u64,
    #[sweeper(touches = User)]
    editor_id: Option<u64>,
}

fn main() {
    let comment = Comment {
        id: 1,
        article_id: 2,
        author_id: 3,
        editor_id: Some(4),
    };
    let mut parents = Vec::new();
    comment.sweeper_parents(&mut parents);
    assert_eq!(
        parents,
        [
            ModelRef::of::<Article>(&2),
            ModelRef::of::<User>(&3),
            ModelRef::of::<User>(&4),
        ]
    );
}
