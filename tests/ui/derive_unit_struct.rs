use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Settings;

fn main() {}
