use cachesweeper::Sweepable;

#[derive(Sweepable)]
union Id {
    id: i64,
    bits: u64,
}

fn main() {}
