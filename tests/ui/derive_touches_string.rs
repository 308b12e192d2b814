use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = "Article")]
    article_id: i64,
}

fn main() {}
