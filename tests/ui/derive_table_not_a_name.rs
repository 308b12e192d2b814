use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(table = comments)]
struct Comment {
    id: i64,
}

#[derive(Sweepable)]
#[sweeper(table = "")]
struct Article {
    id: i64,
}

fn main() {}
