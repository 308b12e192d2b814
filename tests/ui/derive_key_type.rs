use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Reading {
    #[sweeper(key)]
    value: f64,
}

fn main() {}
