use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Comment {
    #[sweeper(primary_key)]
    id: i64,
}

fn main() {}
