use cachesweeper::Sweepable;
use chrono::NaiveDateTime;

#[derive(Sweepable)]
struct Article {
    id: i64,
    #[sweeper(version)]
    updated_at: Option<NaiveDateTime>,
}

fn main() {}
