use cachesweeper::Sweepable;

#[derive(Sweepable)]
#[sweeper(name = "blog::Comment")]
struct Comment {
    id: i64,
}

mod legacy {
    #[derive(cachesweeper::Sweepable)]
    pub struct Comment {
        pub id: i64,
    }
}

fn main() {
    assert_eq!(Comment::MODEL, "blog::Comment");
    assert_eq!(
        legacy::Comment::MODEL,
        concat!(module_path!(), "::legacy::Comment")
    );
    let _ = (Comment { id: 1 }, legacy::Comment { id: 1 });
}
