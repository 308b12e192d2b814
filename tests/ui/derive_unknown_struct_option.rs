use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(model = "blog::Comment")]
struct Comment {
    id: i64,
}

fn main() {}
