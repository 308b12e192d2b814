//! The original's headline example, end to end through real Askama templates
//! (`templates/article.html` including `templates/comment.html`): a vote on one comment
//! re-renders that comment and the article fragments around it, and nothing else.

use crate::common;

use std::collections::BTreeMap;

use askama::Template;
use cachesweeper::backend::Null;
use common::{Article, Comment, Renders, article, cases, comment, known};

mod filters {
    pub use cachesweeper::filters::cachesweeper;
}

#[derive(Template, cachesweeper::TemplateDigest)]
#[template(path = "article.html")]
struct ArticlePage<'a> {
    article: &'a Article,
    #[sweeper(belongs_to = article)]
    comments: &'a [Comment],
    #[sweeper(same_for_everyone)]
    renders: &'a Renders,
}

fn counts(list: &[(&'static str, u32)]) -> BTreeMap<&'static str, u32> {
    list.iter().copied().collect()
}

#[test]
fn a_vote_sweeps_its_comment_and_the_article_page_only() {
    for case in cases() {
        let s = &case.sweeper;
        let article = article(1);
        let mut comments: Vec<Comment> = (1..=20).map(|id| comment(id, 1)).collect();
        known(s, [&article]);
        known(s, &comments);
        let renders = Renders::default();
        let page = |comments: &[Comment]| {
            s.scope()
                .render(&ArticlePage {
                    article: &article,
                    comments,
                    renders: &renders,
                })
                .unwrap()
        };

        let cold = page(&comments);
        // The list's body twice: once to find the 20 comments inside it (fetched in one batch),
        // once with them. Each comment's body once.
        assert_eq!(
            renders.take(),
            counts(&[("article", 1), ("comment", 20), ("list", 2)]),
            "{}",
            case.name
        );
        let warm = page(&comments);
        assert_eq!(
            renders.take(),
            counts(&[]),
            "{}: warm page renders nothing",
            case.name
        );
        assert_eq!(warm, cold, "{}", case.name);

        // A like on comment 7: saved, then invalidated (which touches article 1).
        comments[6].likes += 1;
        s.invalidate(&comments[6]).unwrap();
        let after = page(&comments);
        // (The list's body twice again: once to find the comments, once with them.)
        assert_eq!(
            renders.take(),
            counts(&[("article", 1), ("comment", 1), ("list", 2)]),
            "{}: only comment 7 and the fragments keyed on its article re-render",
            case.name
        );
        assert!(
            after.contains(r#"<li id="comment-7" data-likes="1">"#),
            "{}",
            case.name
        );
        assert!(
            after.contains(r#"<li id="comment-8" data-likes="0">"#),
            "{}",
            case.name
        );

        // Byte for byte what an uncached render of the same data gives.
        let uncached = cachesweeper::Sweeper::builder()
            .backend(Null)
            .build()
            .unwrap();
        let reference = uncached
            .scope()
            .render(&ArticlePage {
                article: &article,
                comments: &comments,
                renders: &renders,
            })
            .unwrap();
        renders.take();
        assert_eq!(after, reference, "{}", case.name);
    }
}

#[test]
fn another_article_is_not_swept() {
    for case in cases() {
        let s = &case.sweeper;
        let (one, two) = (article(1), article(2));
        let comments_one: Vec<Comment> = (1..=3).map(|id| comment(id, 1)).collect();
        let comments_two: Vec<Comment> = (4..=6).map(|id| comment(id, 2)).collect();
        known(s, [&one, &two]);
        known(s, comments_one.iter().chain(&comments_two));
        let renders = Renders::default();
        let render = |article: &Article, comments: &[Comment]| {
            s.scope()
                .render(&ArticlePage {
                    article,
                    comments,
                    renders: &renders,
                })
                .unwrap()
        };
        render(&one, &comments_one);
        render(&two, &comments_two);
        renders.take();
        s.invalidate(&comments_one[0]).unwrap();
        render(&two, &comments_two);
        assert_eq!(renders.take(), counts(&[]), "{}", case.name);
    }
}
