//! What the blog shows of its cache (`examples/blog`, the real binary over HTTP): `GET /metrics`
//! for a Prometheus scraper, `GET /stats`'s figures by fragment, and `?cache_debug=1`, whose
//! marks the page's script draws as outlines, checked in the HTML and in a real browser.
//!
//! The article page's fragments (`templates/blog/article.html` and `comment.html`): the body and
//! the comment list, keyed on the article, and inside the list one fragment per comment. A vote
//! invalidates its comment and, through it, the article: the next render misses the body, the
//! list and that comment, and takes every other comment from the cache.

mod common;

use std::collections::BTreeMap;

use common::blog::{Chromium, Client, Server, comment_ids, metric};

const COMMENTS: u64 = 20;

/// The block names of the article page (the filter's third argument).
const BODY: &str = "blog/article.html#body";
const LIST: &str = "blog/article.html#comments";
const COMMENT: &str = "blog/comment.html";

/// The blog on the embedded cache and an in-memory database.
fn blog() -> (Server, Client) {
    let comments = COMMENTS.to_string();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--articles",
        "2",
        "--comments",
        &comments,
    ]);
    let client = Client::new(&server);
    (server, client)
}

/// Reads article 1 cold then warm, and likes one of its comments (the fourth): the id of the
/// comment voted on.
fn read_then_vote(blog: &Client) -> i64 {
    let cold = blog.get("/articles/1");
    assert_eq!(cold.cache(), (0, 2 + COMMENTS), "cold page");
    assert_eq!(blog.get("/articles/1").cache(), (2, 0), "warm page");
    let voted = comment_ids(&cold.body)[3];
    let vote = blog.post(&format!("/articles/1/comments/{voted}/like"), None);
    assert_eq!(vote.status, 303);
    voted
}

#[test]
fn metrics_count_what_the_pages_did() {
    let (_server, blog) = blog();
    let scrape = || {
        let page = blog.get("/metrics");
        assert_eq!(page.status, 200);
        assert_eq!(
            page.content_type.as_deref(),
            Some("text/plain; version=0.0.4")
        );
        page.body
    };
    let hits = |text: &str| metric(text, "cachesweeper_hits_total", &[]);
    let misses = |text: &str| metric(text, "cachesweeper_misses_total", &[]);

    let before = scrape();
    let cold = blog.get("/articles/1");
    let after_cold = scrape();
    let warm = blog.get("/articles/1");
    let after_warm = scrape();

    // Each read moved the counters by what its X-Fragment-Cache header says it did.
    assert_eq!(cold.cache(), (0, 2 + COMMENTS));
    assert_eq!(
        (
            hits(&after_cold) - hits(&before),
            misses(&after_cold) - misses(&before)
        ),
        (0.0, (2 + COMMENTS) as f64),
        "after a cold page:\n{after_cold}"
    );
    assert_eq!(warm.cache(), (2, 0));
    assert_eq!(
        (
            hits(&after_warm) - hits(&after_cold),
            misses(&after_warm) - misses(&after_cold)
        ),
        (2.0, 0.0),
        "after a warm page:\n{after_warm}"
    );

    // Labelled by backend and by block name.
    let embedded = r#"backend="embedded""#;
    let comment = format!(r#"fragment="{COMMENT}""#);
    let list = format!(r#"fragment="{LIST}""#);
    assert_eq!(
        metric(
            &after_warm,
            "cachesweeper_misses_total",
            &[embedded, &comment]
        ),
        COMMENTS as f64
    );
    assert_eq!(
        metric(&after_warm, "cachesweeper_hits_total", &[embedded, &list]),
        1.0
    );
    // The rest of the library's metrics are there, and counted.
    for name in [
        "cachesweeper_round_trips_total",
        "cachesweeper_round_trip_seconds_count",
        "cachesweeper_read_bytes_total",
        "cachesweeper_written_bytes_total",
    ] {
        assert!(
            metric(&after_warm, name, &[embedded]) > metric(&before, name, &[embedded]),
            "{name} did not move:\n{after_warm}"
        );
    }
    // Seeding invalidated every record it wrote, before the first scrape.
    assert!(metric(&before, "cachesweeper_invalidations_total", &[embedded]) > 0.0);
    assert_eq!(metric(&after_warm, "cachesweeper_errors_total", &[]), 0.0);
}

#[test]
fn stats_show_hit_rates_by_fragment() {
    let (_server, blog) = blog();
    read_then_vote(&blog);
    assert_eq!(blog.get("/articles/1").cache(), (COMMENTS - 1, 3));

    let fragments: BTreeMap<String, _> = blog
        .fragment_stats()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    let figures = |name: &str| {
        let f = fragments
            .get(name)
            .unwrap_or_else(|| panic!("/stats has no fragment {name:?}: {fragments:?}"));
        (f.hits, f.misses)
    };
    // Body and list: missed cold, hit warm, missed after the vote. Comments: all missed cold,
    // all but the voted one hit after it.
    assert_eq!(figures(BODY), (1, 2));
    assert_eq!(figures(LIST), (1, 2));
    assert_eq!(figures(COMMENT), (COMMENTS - 1, COMMENTS + 1));
    assert_eq!(fragments.len(), 3, "{fragments:?}");
    for f in fragments.values() {
        let expected = f.hits as f64 / (f.hits + f.misses) as f64;
        assert!(
            (f.hit_rate - expected).abs() < 1e-9,
            "{}: hit_rate {} for {} hits and {} misses",
            f.name,
            f.hit_rate,
            f.hits,
            f.misses
        );
    }
    // The same lookups as the sweeper's own counters.
    let stats = blog.stats();
    let (hits, misses) = fragments
        .values()
        .fold((0, 0), |(h, m), f| (h + f.hits, m + f.misses));
    assert_eq!((hits, misses), (stats.hits, stats.misses));
}

/// One debug mark: whether it hit, its name and its record.
#[derive(Debug)]
struct Mark {
    hit: bool,
    name: String,
    record: String,
}

/// The opening marks of a page rendered with `?cache_debug=1`, in order, after checking that
/// each is closed and that they nest.
fn marks(html: &str) -> Vec<Mark> {
    const OPEN: &str = "<!--cachesweeper ";
    const CLOSE: &str = "<!--/cachesweeper-->";
    let mut marks = Vec::new();
    let mut depth = 0usize;
    let mut rest = html;
    loop {
        let open = rest.find(OPEN);
        let close = rest.find(CLOSE);
        match (open, close) {
            (Some(open), close) if close.is_none_or(|close| open < close) => {
                let end = rest[open..].find("-->").expect("a closed comment") + open;
                let text = &rest[open + OPEN.len()..end];
                let attribute = |name: &str| {
                    text.split(&format!(r#" {name}=""#))
                        .nth(1)
                        .and_then(|value| value.split('"').next())
                        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
                        .to_owned()
                };
                marks.push(Mark {
                    hit: text.starts_with("hit "),
                    name: attribute("name"),
                    record: attribute("record"),
                });
                assert!(
                    text.starts_with("hit ") || text.starts_with("miss "),
                    "{text:?}"
                );
                assert!(attribute("key").starts_with("cs|f|"), "{text:?}");
                depth += 1;
                rest = &rest[end..];
            }
            (_, Some(close)) => {
                depth = depth
                    .checked_sub(1)
                    .expect("a mark closed but never opened");
                rest = &rest[close + CLOSE.len()..];
            }
            (_, None) => break,
        }
    }
    assert_eq!(depth, 0, "a mark left open");
    marks
}

/// How many marks (or overlays) of each `(hit, name)`.
fn tally<'a>(marks: impl IntoIterator<Item = (bool, &'a str)>) -> BTreeMap<(bool, String), u64> {
    let mut counts = BTreeMap::new();
    for (hit, name) in marks {
        *counts.entry((hit, name.to_owned())).or_default() += 1;
    }
    counts
}

/// What a page after a vote must show: the body, the list and the voted comment missed,
/// every other comment hit.
fn after_a_vote() -> BTreeMap<(bool, String), u64> {
    BTreeMap::from([
        ((false, BODY.to_owned()), 1),
        ((false, LIST.to_owned()), 1),
        ((false, COMMENT.to_owned()), 1),
        ((true, COMMENT.to_owned()), COMMENTS - 1),
    ])
}

#[test]
fn cache_debug_marks_every_fragment_as_hit_or_miss() {
    let (_server, blog) = blog();
    let voted = read_then_vote(&blog);

    let debug = blog.get("/articles/1?cache_debug=1");
    assert_eq!(debug.status, 200);
    assert_eq!(debug.cache(), (COMMENTS - 1, 3));
    let found = marks(&debug.body);
    assert_eq!(
        tally(found.iter().map(|m| (m.hit, m.name.as_str()))),
        after_a_vote(),
        "{found:#?}"
    );
    // The one comment that missed is the one voted on.
    let missed: Vec<&Mark> = found
        .iter()
        .filter(|m| !m.hit && m.name == COMMENT)
        .collect();
    assert!(
        missed[0].record.ends_with(&format!("Comment/{voted}")),
        "{missed:?}"
    );
    // With the script that draws them.
    assert!(debug.body.contains(".cs-debug-box"));

    // A debug page stores nothing: the next plain page misses the same fragments, and stores
    // them; its HTML is the debug page's without the marks and the script.
    let plain = blog.get("/articles/1");
    assert_eq!(
        plain.cache(),
        (COMMENTS - 1, 3),
        "the debug page stored something"
    );
    assert!(!plain.body.contains("<!--cachesweeper"));
    assert!(!plain.body.contains("cs-debug"));
    let unmarked = strip_marks(&debug.body);
    let main = |html: &str| html[..html.find("<footer").expect("a footer")].to_owned();
    assert_eq!(main(&unmarked), main(&plain.body));
    assert_eq!(blog.get("/articles/1").cache(), (2, 0));

    // Warm, the list hits: what is inside it is its HTML, with no marks of its own.
    let warm = marks(&blog.get("/articles/1?cache_debug=1").body);
    assert_eq!(
        tally(warm.iter().map(|m| (m.hit, m.name.as_str()))),
        BTreeMap::from([((true, BODY.to_owned()), 1), ((true, LIST.to_owned()), 1)])
    );

    // Any page: the front page's rows, and an error page (which has no fragments).
    let index = blog.get("/?cache_debug=1");
    assert_eq!(index.status, 200);
    assert_eq!(marks(&index.body).len(), 2, "one per article");
    let missing = blog.get("/nowhere?cache_debug=1");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("cs-debug"));
}

/// `html` without the debug marks.
fn strip_marks(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!--") {
        let end = rest[start..].find("-->").expect("a closed comment") + start + 3;
        let comment = &rest[start..end];
        out.push_str(&rest[..start]);
        if !comment.starts_with("<!--cachesweeper ") && comment != "<!--/cachesweeper-->" {
            out.push_str(comment);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One overlay box the page's script drew, as the browser's DOM has it.
#[derive(Debug)]
struct Overlay {
    hit: bool,
    name: String,
    /// left, top, width, height, in CSS pixels of the document.
    rect: [f64; 4],
    shown: bool,
}

/// The overlays in a DOM dumped by Chromium: every `<div class="cs-debug-box ...">`.
fn overlays(dom: &str) -> Vec<Overlay> {
    dom.split(r#"<div class="cs-debug-box cs-debug-"#)
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').expect("a closed tag")];
            let attribute = |name: &str| {
                tag.split(&format!(r#"{name}=""#))
                    .nth(1)
                    .and_then(|value| value.split('"').next())
                    .unwrap_or_else(|| panic!("no {name} in {tag:?}"))
            };
            let style = attribute("style");
            let px = |property: &str| -> f64 {
                style
                    .split(&format!("{property}: "))
                    .nth(1)
                    .and_then(|value| value.split("px").next())
                    .and_then(|value| value.parse().ok())
                    .unwrap_or_else(|| panic!("no {property} in {style:?}"))
            };
            Overlay {
                hit: tag.starts_with("hit\""),
                name: attribute("data-cs-name").to_owned(),
                rect: [px("left"), px("top"), px("width"), px("height")],
                shown: !style.contains("display: none"),
            }
        })
        .collect()
}

/// The number the legend shows after `class`.
fn legend_figure(dom: &str, class: &str) -> u64 {
    // The legend itself, not the script's text that makes it.
    let legend = &dom[dom
        .find(r#"<div class="cs-debug-legend">"#)
        .expect("a legend")..];
    let marker = format!(r#"<span class="{class}">"#);
    let start = legend.find(&marker).unwrap_or_else(|| panic!("no {class}")) + marker.len();
    legend[start..start + legend[start..].find('<').expect("a closing tag")]
        .parse()
        .expect("a number")
}

#[test]
fn a_browser_draws_one_outline_per_fragment() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let (server, blog) = blog();
    read_then_vote(&blog);

    let dom = chromium.dump_dom(&format!("{}/articles/1?cache_debug=1", server.url));
    let drawn = overlays(&dom);
    assert_eq!(
        tally(drawn.iter().map(|o| (o.hit, o.name.as_str()))),
        after_a_vote(),
        "{drawn:#?}"
    );
    assert_eq!(legend_figure(&dom, "cs-debug-hits"), COMMENTS - 1);
    assert_eq!(legend_figure(&dom, "cs-debug-misses"), 3);

    // Every fragment has something to outline, and the list's outline holds each comment's:
    // the miss around the hits shows as well as they do.
    for overlay in &drawn {
        assert!(overlay.shown, "{overlay:?}");
        assert!(
            overlay.rect[2] > 100.0 && overlay.rect[3] > 20.0,
            "{overlay:?}"
        );
    }
    let list = drawn.iter().find(|o| o.name == LIST).expect("the list");
    let body = drawn.iter().find(|o| o.name == BODY).expect("the body");
    let [lx, ly, lw, lh] = list.rect;
    let mut previous_top = ly;
    for comment in drawn.iter().filter(|o| o.name == COMMENT) {
        let [x, y, w, h] = comment.rect;
        assert!(
            lx < x && ly < y && x + w < lx + lw && y + h < ly + lh,
            "the list {:?} does not strictly hold {comment:?}",
            list.rect
        );
        // In page order, one below the other (where one ends the next begins, give or take a
        // rounding).
        assert!(y + 0.5 >= previous_top, "{comment:?}");
        previous_top = y + h;
    }
    // The body is above the list, apart from it.
    assert!(body.rect[1] + body.rect[3] <= ly, "{body:?} {list:?}");

    // Without `?cache_debug=1`, nothing is drawn.
    let plain = chromium.dump_dom(&format!("{}/articles/1", server.url));
    assert!(!plain.contains("cs-debug"));
    assert!(plain.contains(r#"class="comment""#));
}
