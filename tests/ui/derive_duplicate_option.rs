use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(counter)]
#[sweeper(name = "blog::Article", counter)]
struct Article {
    #[sweeper(key, key)]
    id: i64,
    #[sweeper(version)]
    revision: u64,
}

fn main() {}
