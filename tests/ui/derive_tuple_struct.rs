use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Comment(i64, String);

fn main() {}
