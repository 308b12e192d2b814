//! What `#[derive(Sweepable)]` generates, observed through the trait: model names, counters,
//! key forms, version tokens and parents.

use std::borrow::Cow;

use cachesweeper::{ModelRef, Sweepable, Touchable};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Sweepable)]
struct Article {
    id: i64,
}

#[derive(Sweepable)]
#[sweeper(name = "blog::Author")]
struct Author {
    id: u32,
}

#[derive(Sweepable)]
struct Comment {
    id: i64,
    #[sweeper(touches = Article)]
    article_id: i64,
    #[sweeper(touches = Author)]
    author_id: Option<u32>,
    #[allow(dead_code)]
    body: String,
}

#[derive(Sweepable)]
struct Page {
    #[sweeper(key)]
    slug: String,
    #[sweeper(version)]
    updated_at: DateTime<Utc>,
}

#[derive(Sweepable)]
#[sweeper(counter)]
struct Forum {
    id: i64,
    #[sweeper(version)]
    revision: u64,
}

#[derive(Sweepable)]
struct Post {
    #[sweeper(key, version)]
    etag: &'static str,
    #[sweeper(touches = Forum)]
    forum_id: i64,
}

#[derive(Sweepable)]
struct Versioned<K, V> {
    id: K,
    #[sweeper(version)]
    version: V,
}

#[derive(Sweepable)]
struct Day {
    #[sweeper(key)]
    date: NaiveDate,
}

mod renamed {
    // The derive must work where `cachesweeper` is only reachable under another path.
    pub mod sweeping {
        pub use cachesweeper::*;
    }

    #[derive(super::Sweepable)]
    #[sweeper(crate = crate::derive::renamed::sweeping)]
    pub struct Item {
        pub id: i64,
    }
}

fn parents(record: &impl Sweepable) -> Vec<ModelRef> {
    let mut parents = Vec::new();
    record.sweeper_parents(&mut parents);
    parents
}

fn assert_touchable<T: Touchable>() {}

#[test]
fn model_names_default_to_the_module_path() {
    assert_eq!(Article::MODEL, "api::derive::Article");
    assert_eq!(Versioned::<i64, u8>::MODEL, "api::derive::Versioned");
    assert_eq!(renamed::Item::MODEL, "api::derive::renamed::Item");
}

#[test]
fn model_name_override() {
    assert_eq!(Author::MODEL, "blog::Author");
}

#[test]
fn counters() {
    // A version field alone needs no counter; `#[sweeper(counter)]` keeps one anyway.
    assert_eq!(
        [
            Article::COUNTER,
            Comment::COUNTER,
            Page::COUNTER,
            Forum::COUNTER,
            Post::COUNTER,
        ],
        [true, true, false, true, false]
    );
    assert_touchable::<Article>();
    assert_touchable::<Forum>();
    assert_touchable::<renamed::Item>();
}

#[test]
fn key_forms() {
    assert_eq!(Article { id: -3 }.sweeper_key(), "-3");
    let page = Page {
        slug: "about-us".into(),
        updated_at: DateTime::UNIX_EPOCH,
    };
    assert!(matches!(page.sweeper_key(), Cow::Borrowed("about-us")));
    let day = Day {
        date: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
    };
    assert_eq!(day.sweeper_key(), "2024-02-29");
    let versioned = Versioned {
        id: "k".to_string(),
        version: 9_u8,
    };
    assert_eq!(versioned.sweeper_key(), "k");
    assert_eq!(renamed::Item { id: 5 }.sweeper_key(), "5");
}

#[test]
fn version_tokens() {
    assert_eq!(Article { id: 1 }.sweeper_version_field(), None);
    let page = Page {
        slug: "a".into(),
        updated_at: DateTime::from_timestamp(1, 5).unwrap(),
    };
    assert_eq!(page.sweeper_version_field().as_deref(), Some("1000000005"));
    let forum = Forum {
        id: 1,
        revision: 42,
    };
    assert_eq!(forum.sweeper_version_field().as_deref(), Some("42"));
    let post = Post {
        etag: "W/\"abc\"",
        forum_id: 1,
    };
    assert_eq!(post.sweeper_key(), "W/\"abc\"");
    assert_eq!(post.sweeper_version_field().as_deref(), Some("W/\"abc\""));
}

#[test]
fn parents_in_field_order_and_optional_ones_only_when_present() {
    let mut comment = Comment {
        id: 7,
        article_id: 1,
        author_id: None,
        body: String::new(),
    };
    assert_eq!(
        parents(&comment),
        [ModelRef {
            model: "api::derive::Article",
            key: "1".into()
        }]
    );
    comment.author_id = Some(12);
    assert_eq!(
        parents(&comment),
        [
            ModelRef::of::<Article>(&1),
            ModelRef {
                model: "blog::Author",
                key: "12".into()
            },
        ]
    );
    assert_eq!(
        parents(&Post {
            etag: "e",
            forum_id: 3
        }),
        [ModelRef::of::<Forum>(&3)]
    );
    assert!(parents(&Article { id: 1 }).is_empty());
}

#[test]
fn through_references() {
    let article = Article { id: 2 };
    assert_eq!(<&Article>::MODEL, Article::MODEL);
    assert_eq!(<&Article as Sweepable>::sweeper_key(&&article), "2");
}
