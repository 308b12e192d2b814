// Every mistake of one input is reported in one build.
use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(name = "", countr)]
struct Comment {
    #[sweeper(key)]
    id: i64,
    #[sweeper(key, version = updated_at)]
    slug: String,
}

fn main() {}
