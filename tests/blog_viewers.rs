//! Two visitors in one real browser (headless Chromium, each in a context of its own, so each
//! with its own cookie), signed in as ann and bob, taking turns on the same articles of the
//! blog on memcached (issue 23): a page never shows one of them the other's name, token or
//! controls; each one's likes, edits and deletes go through with their own token, and a forged
//! or missing token gets 403 and changes nothing; the article page stays what it was for the
//! cache, two hits when warm, whoever looks (or none, when the browser revalidates a page that
//! has not changed and is answered 304).

mod common;

use std::collections::HashSet;

use cachesweeper_suite::memcached::MemcachedProcess;
use common::blog::{Chromium, Client, Server, Stats};
use common::browser::{Browser, Tab};
use serde_json::Value;

/// How many turns each viewer takes: two page views a turn, one of each article.
const TURNS: usize = 75;

/// One viewer: their tab, name and token.
struct Viewer {
    tab: Tab,
    name: &'static str,
    csrf: String,
}

/// What a viewer's page shows that differs between viewers.
#[derive(Debug)]
struct Seen {
    html: String,
    signed_in_as: Value,
    /// The value of every CSRF input of the page.
    tokens: Vec<String>,
    /// The authors of the comments shown with edit and delete controls.
    controlled: Vec<String>,
    /// The authors of every comment.
    authors: Vec<String>,
}

fn seen(browser: &mut Browser, tab: &Tab) -> Seen {
    let value = browser.eval(
        tab,
        r#"({
            html: document.documentElement.outerHTML,
            signedInAs: document.querySelector('.signed-in')?.textContent ?? null,
            tokens: [...document.querySelectorAll('input[name=csrf]')].map(i => i.value),
            controlled: [...document.querySelectorAll('.comment')]
                .filter(c => c.querySelector('.own'))
                .map(c => c.querySelector('.meta strong').textContent),
            authors: [...document.querySelectorAll('.comment .meta strong')].map(s => s.textContent),
        })"#,
    );
    let strings = |key: &str| -> Vec<String> {
        value[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {value}"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    };
    Seen {
        html: value["html"].as_str().expect("the page").to_owned(),
        signed_in_as: value["signedInAs"].clone(),
        tokens: strings("tokens"),
        controlled: strings("controlled"),
        authors: strings("authors"),
    }
}

/// Checks that `page` is `me`'s own, with nothing of `other`'s.
fn assert_own(page: &Seen, me: &Viewer, other: &Viewer, at: &str) {
    assert_eq!(page.signed_in_as, Value::from(me.name), "{at}");
    assert!(!page.tokens.is_empty(), "{at}: no form");
    assert!(
        page.tokens.iter().all(|t| *t == me.csrf),
        "{at}: a form of {}'s page carries another token",
        me.name
    );
    assert!(
        !page.html.contains(&other.csrf),
        "{at}: {}'s token",
        other.name
    );
    assert!(
        !page.html.contains(&format!(
            "Signed in as <strong class=\"signed-in\">{}",
            other.name
        )),
        "{at}: {} is shown as {}",
        me.name,
        other.name
    );
    let mine = page.authors.iter().filter(|a| *a == me.name).count();
    assert!(
        page.controlled.iter().all(|a| a == me.name) && page.controlled.len() == mine,
        "{at}: {} sees controls on {:?}, and wrote {mine} comments",
        me.name,
        page.controlled
    );
}

/// The likes a comment shows on the page in `tab`.
fn likes(browser: &mut Browser, tab: &Tab, comment: i64) -> i64 {
    let value = browser.eval(
        tab,
        &format!("Number(document.querySelector('#comment-{comment}').dataset.likes)"),
    );
    value
        .as_i64()
        .unwrap_or_else(|| panic!("likes of {comment}: {value}"))
}

/// The ids of the comments on the page in `tab`, and their authors.
fn comments(browser: &mut Browser, tab: &Tab) -> Vec<(i64, String)> {
    let value = browser.eval(
        tab,
        "[...document.querySelectorAll('.comment')].map(c => \
         [Number(c.id.slice(8)), c.querySelector('.meta strong').textContent])",
    );
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_i64().unwrap(),
                pair[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The page's `<h1>`.
fn heading(browser: &mut Browser, tab: &Tab) -> String {
    let value = browser.eval(tab, "document.querySelector('h1').textContent");
    value.as_str().unwrap_or_default().to_owned()
}

#[test]
fn two_viewers_never_see_each_others_page() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let Some(memcached) = MemcachedProcess::start() else {
        return;
    };
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--articles",
        "2",
        "--comments",
        "20",
        "--memcache",
        &memcached.url(),
    ]);
    let stats = Client::new(&server);
    let url = |path: &str| format!("{}{path}", server.url);
    let mut browser = Browser::start(&chromium);

    // Each signs in from the header of an article page, and writes a comment on each article.
    let mut viewers = Vec::new();
    for name in ["ann", "bob"] {
        let tab = browser.visitor();
        if name == "ann" {
            // Her browser keeps no copy of a page: each view is a whole render, whose hits
            // are counted; bob's browser revalidates what it has.
            browser.disable_cache(&tab);
        }
        // Signing in is a page of its own: the article page of a visitor without a cookie is
        // everyone's, with a link to it.
        browser.goto(&tab, &url("/signin?next=/articles/1"));
        browser.navigate_by(
            &tab,
            &format!(
                "const f = document.querySelector('form[action=\"/signin\"]'); \
                 f.elements.name.value = '{name}'; f.requestSubmit()"
            ),
        );
        let csrf = browser.eval(
            &tab,
            "document.querySelector('form[action=\"/signout\"]').elements.csrf.value",
        );
        let viewer = Viewer {
            tab,
            name,
            csrf: csrf.as_str().expect("signed in").to_owned(),
        };
        for article in [1, 2] {
            browser.goto(&viewer.tab, &url(&format!("/articles/{article}")));
            browser.navigate_by(
                &viewer.tab,
                &format!(
                    "const f = document.querySelector('form.new-comment'); \
                     f.elements.body.value = 'Written by {name}, *their own*.'; f.requestSubmit()"
                ),
            );
        }
        viewers.push(viewer);
    }
    assert_ne!(viewers[0].csrf, viewers[1].csrf);

    // Turns: each views both articles; every few turns one of them likes a comment.
    let mut views = 0;
    let mut warm_views = 0;
    let mut revalidated = 0;
    let mut likes_made = 0;
    // The articles written to since their last view: their next view misses.
    let mut written: HashSet<i64> = [1, 2].into();
    for turn in 0..TURNS {
        for who in [0, 1] {
            let (me, other) = (&viewers[who], &viewers[1 - who]);
            for article in [1, 2] {
                let before = stats.stats();
                browser.goto(&me.tab, &url(&format!("/articles/{article}")));
                let delta: Stats = stats.stats().since(&before);
                views += 1;
                let at = format!("turn {turn}, {} on article {article}", me.name);
                assert_own(&seen(&mut browser, &me.tab), me, other, &at);
                if !written.remove(&article) {
                    // Warm: two hits, as before holes; or, when the page has not changed since
                    // this viewer's last view of it, the browser's revalidation answered 304
                    // (conditional GET) with no fragment looked at.
                    match (delta.hits, delta.misses) {
                        (2, 0) => warm_views += 1,
                        (0, 0) => revalidated += 1,
                        figures => panic!("{at}: a warm page cost {figures:?}"),
                    }
                }
                if turn % 5 == who * 2 + article as usize - 1 {
                    let list = comments(&mut browser, &me.tab);
                    let (comment, _) = list[turn % list.len()];
                    let before = likes(&mut browser, &me.tab, comment);
                    browser.navigate_by(
                        &me.tab,
                        &format!(
                            "document.querySelector('#comment-{comment} form[action$=\"/like\"] button').click()"
                        ),
                    );
                    assert_eq!(likes(&mut browser, &me.tab, comment), before + 1, "{at}");
                    assert_own(&seen(&mut browser, &me.tab), me, other, &at);
                    likes_made += 1;
                    written.insert(article);
                }
            }
        }
    }

    // A forged token (the other viewer's, as a page of another site would hold it) and a
    // missing one: 403, and nothing changes.
    let (ann, bob) = (&viewers[0], &viewers[1]);
    browser.goto(&ann.tab, &url("/articles/1"));
    let (target, _) = comments(&mut browser, &ann.tab)[0];
    let before = likes(&mut browser, &ann.tab, target);
    let like_form = format!("document.querySelector('#comment-{target} form[action$=\"/like\"]')");
    for (tamper, what) in [
        (format!("f.elements.csrf.value = '{}'", bob.csrf), "forged"),
        ("f.elements.csrf.remove()".to_owned(), "missing"),
        ("f.elements.csrf.value = ''".to_owned(), "empty"),
    ] {
        browser.goto(&ann.tab, &url("/articles/1"));
        browser.navigate_by(
            &ann.tab,
            &format!("const f = {like_form}; {tamper}; f.submit()"),
        );
        assert_eq!(heading(&mut browser, &ann.tab), "Forbidden", "{what} token");
        browser.goto(&ann.tab, &url("/articles/1"));
        assert_eq!(
            likes(&mut browser, &ann.tab, target),
            before,
            "{what} token"
        );
    }

    // Edit and delete: one's own comment only, whatever the form says.
    let own = |browser: &mut Browser, viewer: &Viewer| {
        browser.goto(&viewer.tab, &url("/articles/1"));
        let list = comments(browser, &viewer.tab);
        list.into_iter()
            .find(|(_, author)| author == viewer.name)
            .map(|(id, _)| id)
            .expect("their comment")
    };
    let anns = own(&mut browser, ann);
    browser.navigate_by(
        &ann.tab,
        &format!("document.querySelector('#comment-{anns} .own a').click()"),
    );
    browser.navigate_by(
        &ann.tab,
        "const f = document.querySelector('form.new-comment'); \
         f.elements.body.value = 'Edited by ann.'; f.requestSubmit()",
    );
    browser.goto(&bob.tab, &url("/articles/1"));
    let page = seen(&mut browser, &bob.tab);
    assert!(page.html.contains("Edited by ann."), "bob sees the edit");
    assert_own(&page, bob, ann, "after ann's edit");
    // Bob, with a valid token of his own, posts the delete form at ann's comment.
    for action in ["delete", "edit"] {
        browser.navigate_by(
            &bob.tab,
            &format!(
                "const f = document.createElement('form'); f.method = 'post'; \
                 f.action = '/articles/1/comments/{anns}/{action}'; \
                 f.innerHTML = '<input name=csrf value={}><input name=body value=mine>'; \
                 document.body.append(f); f.submit()",
                bob.csrf
            ),
        );
        assert_eq!(
            heading(&mut browser, &bob.tab),
            "Forbidden",
            "bob's {action}"
        );
    }
    browser.goto(&bob.tab, &url("/articles/1"));
    assert!(seen(&mut browser, &bob.tab).html.contains("Edited by ann."));
    let bobs = own(&mut browser, bob);
    browser.navigate_by(
        &bob.tab,
        &format!("document.querySelector('#comment-{bobs} .own button').click()"),
    );
    let left = comments(&mut browser, &bob.tab);
    assert!(
        left.iter().all(|(id, _)| *id != bobs),
        "bob's comment is gone"
    );
    assert!(left.iter().any(|(id, _)| *id == anns), "ann's is not");

    eprintln!(
        "{views} page views by two viewers: {warm_views} warm (two hits each), {revalidated} \
         revalidated by the browser (304, nothing looked at), {likes_made} likes; no page \
         showed the other viewer's name, token or controls"
    );
    assert!(views >= 300, "{views} views");
    // ann's browser keeps no cache: her views are warm pages; bob's revalidates them.
    assert!(
        warm_views >= views / 4 && revalidated >= views / 4,
        "{views} views, {warm_views} warm, {revalidated} revalidated"
    );
}

/// The README's picture: ann and bob on the same article of a small blog, side by side, each
/// signed in, each with the edit and delete controls on their own comment and their own token
/// in every form, the comments served from the cache. Written to `target/two-viewers.png`, and
/// to the path in `BLOG_VIEWERS_SCREENSHOT` if set (`docs/two-viewers.png`).
#[test]
fn a_picture_of_two_viewers() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--articles",
        "1",
        "--comments",
        "2",
    ]);
    let url = |path: &str| format!("{}{path}", server.url);
    let mut browser = Browser::start(&chromium);
    let mut viewers = Vec::new();
    for name in ["ann", "bob"] {
        let tab = browser.visitor();
        browser.set_viewport(&tab, 620, 1060);
        // Signing in is a page of its own: the article page of a visitor without a cookie is
        // everyone's, with a link to it.
        browser.goto(&tab, &url("/signin?next=/articles/1"));
        browser.navigate_by(
            &tab,
            &format!(
                "const f = document.querySelector('form[action=\"/signin\"]'); \
                 f.elements.name.value = '{name}'; f.requestSubmit()"
            ),
        );
        browser.navigate_by(
            &tab,
            &format!(
                "const f = document.querySelector('form.new-comment'); \
                 f.elements.body.value = 'Hello from {name}.'; f.requestSubmit()"
            ),
        );
        viewers.push((tab, name));
    }
    let mut shots = Vec::new();
    for (tab, name) in &viewers {
        // Twice: the second view is all hits, as the picture should be.
        browser.goto(tab, &url("/articles/1"));
        browser.goto(tab, &url("/articles/1"));
        let page = seen(&mut browser, tab);
        assert_eq!(page.signed_in_as, Value::from(*name));
        assert_eq!(page.controlled, [name.to_string()]);
        // The header, and the page from the comment before theirs to the comment form.
        let bounds = browser.eval(
            tab,
            "const y = e => document.querySelector(e).getBoundingClientRect().top + scrollY; \
             [document.querySelector('header.site').getBoundingClientRect().bottom + scrollY + 8, \
              y('.comment:nth-last-child(3)') - 8, y('form.new-comment') - 4]",
        );
        let at = |i: usize| bounds[i].as_f64().expect("a number");
        shots.push((
            name,
            browser.screenshot(tab, 0.0, at(0)),
            browser.screenshot(tab, at(1), at(2)),
        ));
    }
    let figures: String = shots
        .iter()
        .map(|(name, header, comments)| {
            format!(
                "<figure><img src=\"data:image/png;base64,{header}\"><div>⋮</div>\
                 <img src=\"data:image/png;base64,{comments}\"><figcaption>{name}'s \
                 browser</figcaption></figure>"
            )
        })
        .collect();
    let page = common::blog::TempFile::new("html");
    std::fs::write(
        page.path(),
        format!(
            "<!DOCTYPE html><style>body{{margin:0;display:flex;gap:16px;padding:16px;\
             background:#e8ecee;font:15px system-ui}}figure{{margin:0;background:#fbfcfc;\
             border:1px solid #b9c2c7}}img{{display:block}}figure div{{text-align:center;\
             color:#667279}}figcaption{{text-align:center;padding:6px;background:#e8ecee}}</style>\
             {figures}"
        ),
    )
    .expect("write the page");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("two-viewers.png");
    let status = std::process::Command::new(chromium.binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1290,765",
            &format!("--screenshot={}", target.display()),
            &format!("file://{}", page.arg()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run chromium");
    assert!(
        status.success() && target.exists(),
        "chromium --screenshot: {status}"
    );
    if let Some(docs) = std::env::var_os("BLOG_VIEWERS_SCREENSHOT") {
        std::fs::copy(&target, docs).expect("copy the picture");
    }
}
