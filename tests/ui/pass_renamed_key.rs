use cachesweeper::Sweepable;

#[derive(Sweepable)]
struct Page {
    // An `id` field does not get in the way of a marked key.
    id: i64,
    #[sweeper(key)]
    slug: String,
}

#[derive(Sweepable)]
struct Keyword {
    r#id: String,
}

fn main() {
    let page = Page {
        id: 1,
        slug: "about".into(),
    };
    assert_eq!(page.sweeper_key(), "about");
    let _ = page.id;
    assert_eq!(Keyword { r#id: "k".into() }.sweeper_key(), "k");
}
