//! A whole sub-template cached as one fragment.

use std::fmt;

use askama::filters::HtmlSafe;
use askama::{FastWritable, Template, Values};

use crate::{KeyPart, KeyParts, Sweepable, Ttl, default::default_sweeper, default::sweeper_for};

/// A sub-template rendered only on a cache miss, cached under its record's version.
///
/// Build it with [`cached`] and write it in a template like any value:
///
/// ```
/// use askama::Template;
/// use cachesweeper::Sweepable;
///
/// #[derive(Sweepable)]
/// struct Comment { id: i64, body: String }
///
/// #[derive(Template)]
/// #[template(source = "<p>{{ comment.body }}</p>", ext = "html")]
/// struct CommentView<'a> { comment: &'a Comment }
///
/// #[derive(Template)]
/// #[template(
///     source = "{% for c in comments %}{{ cachesweeper::cached(c, 500, self.view(c)) }}{% endfor %}",
///     ext = "html"
/// )]
/// struct Page<'a> { comments: &'a [Comment] }
///
/// impl<'a> Page<'a> {
///     fn view(&self, comment: &'a Comment) -> CommentView<'a> { CommentView { comment } }
/// }
///
/// let comments = [Comment { id: 1, body: "<b>hi</b>".into() }];
/// let html = Page { comments: &comments }.render()?;
/// assert_eq!(html, "<p>&#60;b&#62;hi&#60;/b&#62;</p>");
/// # Ok::<(), askama::Error>(())
/// ```
#[must_use]
pub struct Cached<R, L, T> {
    record: R,
    ttl: L,
    template: T,
    parts: KeyParts,
}

/// Caches `template` as a fragment of `record` for `ttl`; see [`Cached`].
pub fn cached<R: Sweepable, L: Ttl, T: Template>(
    record: R,
    ttl: L,
    template: T,
) -> Cached<R, L, T> {
    Cached {
        record,
        ttl,
        template,
        parts: KeyParts::new(),
    }
}

impl<R: Sweepable, L: Ttl, T: Template> Cached<R, L, T> {
    /// Adds an extra key part (e.g. the viewer's language).
    pub fn part(mut self, part: impl KeyPart) -> Self {
        self.parts.push(&part);
        self
    }

    fn render(&self, sweeper: &crate::Sweeper, values: &dyn Values) -> askama::Result<String> {
        sweeper.fragment(&self.record, &self.ttl, &self.parts, || {
            self.template.render_with_values(values)
        })
    }
}

impl<R: Sweepable, L: Ttl, T: Template> FastWritable for Cached<R, L, T> {
    fn write_into(&self, dest: &mut dyn fmt::Write, values: &dyn Values) -> askama::Result<()> {
        let html = self.render(&sweeper_for(values), values)?;
        dest.write_str(&html)?;
        Ok(())
    }
}

impl<R: Sweepable, L: Ttl, T: Template> fmt::Display for Cached<R, L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let html = self
            .render(&default_sweeper(), askama::NO_VALUES)
            .map_err(|_| fmt::Error)?;
        f.write_str(&html)
    }
}

impl<R: Sweepable, L: Ttl, T: Template> HtmlSafe for Cached<R, L, T> {}
