//! Conditional GET on the blog (issue 24): each page's `ETag` is its validator, and a request
//! whose `If-None-Match` names the current one gets 304 without a fragment rendered, for one
//! round trip to memcached (the L1 holds the fragments). A like changes its article's `ETag`
//! and no other's; another visitor's page (another name, another token) has its own.

mod common;

use cachesweeper_suite::memcached::MemcachedProcess;
use common::blog::{Client, Server, comment_ids};

#[test]
fn revalidations_are_answered_without_rendering() {
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--articles",
        "3",
        "--comments",
        "20",
        "--memcache",
        &memcached.url(),
    ]);
    let blog = Client::new(&server);
    let ann = blog.signed_in("ann");

    // Cold, then warm: one ETag, the same on both.
    let cold = blog.get("/articles/1");
    let warm = blog.get("/articles/1");
    let etag = warm.etag.clone().expect("an ETag");
    assert_eq!(
        cold.etag.as_deref(),
        Some(etag.as_str()),
        "cold and warm pages differ"
    );
    assert_eq!(warm.cache(), (2, 0));
    let other = blog.get("/articles/2");
    let other = blog
        .get("/articles/2")
        .etag
        .or(other.etag)
        .expect("an ETag");

    // Revalidated: 304, no fragment looked at or rendered, one round trip, one query.
    for _ in 0..3 {
        let before = blog.stats();
        let page = blog.get_if_none_match("/articles/1", &etag);
        let cost = blog.stats().since(&before);
        assert_eq!(page.status, 304);
        assert_eq!(page.etag.as_deref(), Some(etag.as_str()));
        assert!(page.body.is_empty());
        assert_eq!((cost.hits, cost.misses), (0, 0), "{cost:?}");
        assert_eq!(cost.round_trips, 1, "{cost:?}");
        assert_eq!(
            cost.db_queries, 1,
            "the article row, which the page's versions need"
        );
    }

    // Another visitor's page is another page.
    let anns = ann.get("/articles/1").etag.expect("an ETag");
    assert_ne!(anns, etag);
    assert_eq!(ann.get_if_none_match("/articles/1", &etag).status, 200);
    assert_eq!(ann.get_if_none_match("/articles/1", &anns).status, 304);

    // A like: the article's ETag changes, and the page shows the like; the other's stays.
    let liked = comment_ids(&warm.body)[4];
    assert_eq!(
        blog.post(&format!("/articles/1/comments/{liked}/like"), None)
            .status,
        303
    );
    let after = blog.get_if_none_match("/articles/1", &etag);
    assert_eq!(after.status, 200);
    let new = after.etag.clone().expect("an ETag");
    assert_ne!(new, etag);
    assert!(
        after
            .body
            .contains(&format!("comment-{liked}\" data-likes=\""))
    );
    assert_eq!(blog.get_if_none_match("/articles/2", &other).status, 304);
    // Stable from then on, and the old one never comes back.
    let mut revalidated = 0;
    for _ in 0..5 {
        let page = blog.get_if_none_match("/articles/1", &new);
        match page.status {
            304 => revalidated += 1,
            // The first render after the like may not store (its versions are too fresh to
            // prove its data newer): its ETag is the same all the same.
            200 => assert_eq!(page.etag.as_deref(), Some(new.as_str())),
            status => panic!("status {status}"),
        }
        assert_eq!(blog.get_if_none_match("/articles/1", &etag).status, 200);
    }
    assert!(
        revalidated >= 4,
        "{revalidated} of 5 revalidations answered 304"
    );
}
