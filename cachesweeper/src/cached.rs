//! A whole sub-template cached as one fragment.

use std::fmt;

use askama::filters::HtmlSafe;
use askama::{FastWritable, Template, Values};

use crate::in_render::{self, InRender, with_render};
use crate::{KeyPart, KeyParts, Sweepable, Sweeper, TemplateDigest, Ttl};

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
/// #[derive(Template, cachesweeper::TemplateDigest)]
/// #[template(source = "<p>{{ comment.body }}</p>", ext = "html")]
/// struct CommentView<'a> { comment: &'a Comment }
///
/// #[derive(Template, cachesweeper::TemplateDigest)]
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
/// let sweeper = cachesweeper::Sweeper::embedded();
/// let html = sweeper.scope().render(&Page { comments: &comments })?;
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
pub fn cached<R: Sweepable, L: Ttl, T: Template + TemplateDigest>(
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

impl<R: Sweepable, L: Ttl, T: Template + TemplateDigest> Cached<R, L, T> {
    /// Adds an extra key part (e.g. the viewer's language).
    pub fn part(mut self, part: impl KeyPart) -> Self {
        self.parts.push(&part);
        self
    }

    /// Keeps the key the same across edits of the sub-template (see
    /// [`KeyParts::without_template_digest`]).
    pub fn without_template_digest(mut self) -> Self {
        self.parts = self.parts.without_template_digest();
        self
    }
}

impl<R: Sweepable, L: Ttl, T: Template + TemplateDigest> FastWritable for Cached<R, L, T> {
    fn write_into(&self, dest: &mut dyn fmt::Write, values: &dyn Values) -> askama::Result<()> {
        if self.template.holes().is_some() {
            // Its holes would be filled by the page around it, which knows nothing of them.
            return Err(askama::Error::custom(crate::Error::Hole {
                name: std::any::type_name::<T>().to_owned(),
                problem: "a `cached` sub-template cannot have holes: write its part of the page \
                          in a `cachesweeper` block of the page, whose holes the page fills"
                    .to_owned(),
            }));
        }
        let html = with_render(values, |sweeper| {
            // The sub-template's own digest keys this fragment and the fragments inside it, and
            // its type names it (as the filter names a block's template).
            let handle = Sweeper {
                digest: T::TEMPLATE_DIGEST,
                ..sweeper.clone()
            };
            let parts = self.parts.clone().in_template(std::any::type_name::<T>());
            in_render::fragment(&handle, &self.record, &self.ttl, &parts, || {
                self.template.render_with_values(&InRender {
                    handle: &handle,
                    rest: values,
                })
            })
        })?;
        Ok(dest.write_str(html.as_str())?)
    }
}

/// Written out with no sweeper: only [`Scope::render`](crate::Scope::render) renders a cached
/// sub-template (see [`Error::NoSweeper`](crate::Error::NoSweeper)).
impl<R: Sweepable, L: Ttl, T: Template + TemplateDigest> fmt::Display for Cached<R, L, T> {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Err(fmt::Error)
    }
}

impl<R: Sweepable, L: Ttl, T: Template + TemplateDigest> HtmlSafe for Cached<R, L, T> {}
