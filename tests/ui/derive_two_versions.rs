use cachesweeper::Sweepable;
use chrono::{DateTime, Utc};

#[derive(Sweepable)]
struct Article {
    id: i64,
    #[sweeper(version)]
    updated_at: DateTime<Utc>,
    #[sweeper(version)]
    revision: u64,
}

fn main() {}
