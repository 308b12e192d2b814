//! Template digests: a fragment's key names the templates it was rendered from.

/// A template whose sources (and those of the templates it includes, extends or imports) are
/// digested at compile time by `#[derive(TemplateDigest)]`.
///
/// [`Sweeper::render`](crate::Sweeper::render) puts the page's digest into every fragment key of
/// the page, and [`cached`](crate::cached()) the sub-template's: deploy a changed template and
/// its fragments are simply not found any more, with no key to bump by hand; deploy without
/// template changes and the fragments of the previous build keep hitting. The digest is a
/// constant: nothing is hashed at render time.
///
/// ```
/// use askama::Template;
/// use cachesweeper::TemplateDigest;
///
/// #[derive(Template, TemplateDigest)]
/// #[template(source = "<p>{{ name }}</p>", ext = "html")]
/// struct Hello<'a> { name: &'a str }
///
/// assert_eq!(Hello::TEMPLATE_DIGEST.len(), 16);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no template digest",
    label = "pages rendered by cachesweeper need a digest of their templates",
    note = "add `cachesweeper::TemplateDigest` to the derives: `#[derive(askama::Template, cachesweeper::TemplateDigest)]`"
)]
pub trait TemplateDigest {
    /// 16 hex characters naming the template sources, computed at compile time.
    const TEMPLATE_DIGEST: &'static str;
}

impl<T: TemplateDigest + ?Sized> TemplateDigest for &T {
    const TEMPLATE_DIGEST: &'static str = T::TEMPLATE_DIGEST;
}
