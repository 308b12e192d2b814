// A rejected input still implements the traits, so its uses add no errors of their own.
use cachesweeper::{Sweepable, Touchable};

#[derive(Sweepable)]
struct Article {
    slug: String,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
}

fn needs_touchable<T: Touchable>(_: &T) {}

fn use_it(article: &Article) {
    needs_touchable(article);
    let _ = article.sweeper_key();
}

fn main() {}
