use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(name = blog::Comment)]
struct Comment {
    id: i64,
}

fn main() {}
