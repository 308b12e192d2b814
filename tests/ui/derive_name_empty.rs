use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(name = "")]
struct Comment {
    id: i64,
}

fn main() {}
