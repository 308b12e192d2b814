use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(key)]
struct Comment {
    #[sweeper(counter = true)]
    id: i64,
}

fn main() {}
