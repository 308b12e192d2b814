use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Tag {
    id: i64,
}

#[derive(Sweepable)]
struct Article {
    id: i64,
    #[sweeper(touches = Tag)]
    tag_ids: Vec<i64>,
}

fn main() {}
