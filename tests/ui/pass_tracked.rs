use cachesweeper::Sweepable;
use cachesweeper::changes::Tracked;

#[derive(Sweepable)]
#[sweeper(table = "articles")]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
#[sweeper(table = "comments")]
struct Comment {
    #[sweeper(key)]
    r#ref: i64,
    #[sweeper(touches = Article)]
    article_id: Option<i64>,
}

fn main() {
    let table = <Comment as Tracked>::TABLE;
    assert_eq!(table.name, "comments");
    assert_eq!(table.key_column, "ref");
    assert_eq!(table.parents.len(), 1);
    assert_eq!(table.parents[0].column, "article_id");
    assert_eq!((table.parents[0].model)(), <Article as Sweepable>::MODEL);
    assert_eq!((table.model)(), <Comment as Sweepable>::MODEL);
}
