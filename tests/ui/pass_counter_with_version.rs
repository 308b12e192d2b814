use cachesweeper::Sweepable;
use chrono::{DateTime, Utc};

#[derive(Sweepable)]
#[sweeper(counter)]
struct Article {
    id: i64,
    #[sweeper(version)]
    updated_at: DateTime<Utc>,
}

#[derive(Sweepable)]
struct Comment {
    #[sweeper(key, version)]
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

fn main() {
    assert!(Article::COUNTER);
    assert!(!Comment::COUNTER);
    let article = Article {
        id: 1,
        updated_at: DateTime::UNIX_EPOCH,
    };
    assert_eq!(article.sweeper_version_field().as_deref(), Some("0"));
    assert_eq!(
        Comment {
            id: 5,
            article_id: 1
        }
        .sweeper_version_field()
        .as_deref(),
        Some("5")
    );
}
