use cachesweeper::Sweepable;
use chrono::{DateTime, Utc};

#[derive(Sweepable)]
struct Article {
    id: i64,
    #[sweeper(version)]
    updated_at: DateTime<Utc>,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

fn main() {}
