//! What both benchmarks share: the blog's comments and its comment fragment, cached and not.
//!
//! The comment model and the Markdown renderer are the blog example's own (`#[path]` modules in
//! each bench crate's root, because `templates/blog/comment.html` calls
//! `crate::markdown::to_html`), and so is the template: the benchmarks render exactly what the
//! blog renders.

#![allow(dead_code)] // each bench uses part of this

use std::time::Duration;

use askama::Template;
use chrono::DateTime;

use crate::models::Comment;

/// Short criterion settings: a 2-core machine, and the whole `cargo bench` in a few minutes.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .without_plots()
        .configure_from_args()
}

/// A realistic comment: a few paragraphs with a link, emphasis, a list and code spans
/// (about 650 bytes of Markdown).
pub fn comment_body(id: i64) -> String {
    format!(
        "Thanks for the write-up, this matches what we saw in production (comment #{id}).\n\
         \n\
         The part about **version keys** was new to me: we used to delete fragments by hand and \
         *always* forgot one of them after a deploy. A few things that helped us since:\n\
         \n\
         - keep the TTL short for anything that is personalised\n\
         - bump the parent when a child changes, as [the original docs](https://github.com/ericflo/django-cache-sweeper) explain\n\
         - compare `hits` and `misses` from `stats()` before and after a release\n\
         \n\
         One question: does `invalidate` also work from a background job, or only inside a \
         request? We run our vote counting in a _separate worker_ and would rather not route \
         it through the web process.\n"
    )
}

/// A comment of the blog, with a body as above.
pub fn comment(id: i64) -> Comment {
    Comment {
        id,
        article_id: 1,
        author: format!("reader{id}"),
        body: comment_body(id),
        likes: id % 7,
        dislikes: id % 3,
        created_at: DateTime::from_timestamp(1_700_000_000 + id * 60, 0).expect("valid time"),
    }
}

/// `n` comments, ids `first..first + n`.
pub fn comments(first: i64, n: usize) -> Vec<Comment> {
    (first..first + n as i64).map(comment).collect()
}

/// The CSRF token the benchmarks' viewer has (the blog's are 64 hex digits).
pub const TOKEN: &str = "9f51de2c1c136aedf86fb57a948e42bd32de397b9b3990a89f5245005ca0949f";

/// What the blog's article page fills a comment's holes with for an anonymous viewer, the
/// common case: the token in each vote form, and no controls (it wrote no comment).
fn blog_hole(name: &str, out: &mut String) {
    if name == "csrf" {
        out.push_str(TOKEN);
    }
}

/// The blog's cached fragments: its templates' short filter name resolves to cachesweeper's.
pub mod cached {
    use cachesweeper::{Hole, Holes};

    use super::*;

    mod filters {
        pub use ::cachesweeper::filters::{cachesweeper, hole};
    }

    /// One comment: `templates/blog/comment.html`, a cachesweeper fragment with three holes.
    #[derive(Template, cachesweeper::TemplateDigest)]
    #[template(path = "blog/comment.html")]
    pub struct CommentFragment<'a> {
        pub comment: &'a Comment,
    }

    impl Holes for CommentFragment<'_> {
        fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
            blog_hole(hole.name(), out);
            Ok(())
        }
    }

    /// A page of comments, each one the blog's cached comment fragment (as in the blog's
    /// article page, without the enclosing article fragments).
    #[derive(Template, cachesweeper::TemplateDigest)]
    #[template(
        ext = "html",
        source = "{% for comment in comments %}{% include \"blog/comment.html\" %}{% endfor %}"
    )]
    pub struct CommentsPage<'a> {
        pub comments: &'a [Comment],
    }

    impl Holes for CommentsPage<'_> {
        fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
            blog_hole(hole.name(), out);
            Ok(())
        }
    }

    /// The same page with the blog's comment fragment as it was before holes: the baseline of
    /// what holes cost.
    #[derive(Template, cachesweeper::TemplateDigest)]
    #[template(
        ext = "html",
        source = "{% for comment in comments %}{% include \"bench/comment_without_holes.html\" %}{% endfor %}"
    )]
    pub struct CommentsPageWithoutHoles<'a> {
        pub comments: &'a [Comment],
    }
}

/// The same template with caching compiled out: here the short filter name resolves to a
/// pass-through that writes the body as it is, so rendering it costs exactly the fragment's
/// body and nothing of the cache.
pub mod plain {
    use super::*;

    mod filters {
        use std::fmt::Display;

        use askama::filters::Safe;

        /// `{% filter cachesweeper(record, ttl, parts...) %}` that ignores its arguments.
        #[allow(non_camel_case_types)]
        #[derive(Default)]
        pub struct cachesweeper;

        impl cachesweeper {
            pub fn with_0<T>(self, _: T) -> Self {
                self
            }
            pub fn with_1<T>(self, _: T) -> Self {
                self
            }
            pub fn with_2<T>(self, _: T) -> Self {
                self
            }
            /// The body, rendered to a string as a miss would (it is already escaped).
            pub fn execute(
                self,
                body: impl Display,
                _: &dyn askama::Values,
            ) -> askama::Result<Safe<String>> {
                Ok(Safe(body.to_string()))
            }
        }

        impl askama::filters::ValidArgIdx<0> for cachesweeper {}
        impl askama::filters::ValidArgIdx<1> for cachesweeper {}
        impl askama::filters::ValidArgIdx<2> for cachesweeper {}
        impl askama::filters::ValidFilterInvocation for cachesweeper {}

        /// `{{ "name"|hole(args...) }}` that writes what the page's fill writes, right away.
        #[allow(non_camel_case_types)]
        #[derive(Default)]
        pub struct hole;

        impl hole {
            pub fn with_0<T>(self, _: T) -> Self {
                self
            }
            pub fn with_1<T>(self, _: T) -> Self {
                self
            }
            pub fn with_2<T>(self, _: T) -> Self {
                self
            }
            pub fn execute(
                self,
                name: &str,
                _: &dyn askama::Values,
            ) -> askama::Result<Safe<String>> {
                let mut out = String::new();
                super::super::blog_hole(name, &mut out);
                Ok(Safe(out))
            }
        }

        impl askama::filters::ValidArgIdx<0> for hole {}
        impl askama::filters::ValidArgIdx<1> for hole {}
        impl askama::filters::ValidArgIdx<2> for hole {}
        impl askama::filters::ValidFilterInvocation for hole {}
    }

    /// One comment, `templates/blog/comment.html`, rendered without any cache (and its holes
    /// filled as it is rendered).
    #[derive(Template)]
    #[template(path = "blog/comment.html")]
    pub struct CommentFragment<'a> {
        pub comment: &'a Comment,
    }
}
