use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Tag {
    name: String,
}

fn main() {}
