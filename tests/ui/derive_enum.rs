use cachesweeper::Sweepable;

#[derive(Sweepable)]
enum Record {
    Article { id: i64 },
    Comment { id: i64 },
}

fn main() {}
