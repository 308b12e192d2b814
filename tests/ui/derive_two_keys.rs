use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Page {
    #[sweeper(key)]
    slug: String,
    #[sweeper(key)]
    path: String,
}

fn main() {}
