use cachesweeper::Sweepable;
use cachesweeper::changes::sqlite::ChangeLog;

#[derive(Sweepable)]
struct Comment {
    id: i64,
}

fn main() {
    let _ = ChangeLog::builder("blog.sqlite").track::<Comment>();
}
