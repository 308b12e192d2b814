use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(database = "analytics")]
struct Visit {
    id: i64,
}

fn main() {}
