//! Template digests: a fragment's key names the templates it was rendered from.

/// A template whose sources (and those of the templates it includes, extends or imports) are
/// digested at compile time by `#[derive(TemplateDigest)]`.
///
/// [`Scope::render`](crate::Scope::render) puts the page's digest into every fragment key of
/// the page, and [`cached`](crate::cached()) the sub-template's: deploy a changed template and
/// its fragments are simply not found any more, with no key to bump by hand; deploy without
/// template changes and the fragments of the previous build keep hitting. The digest is a
/// constant: nothing is hashed at render time.
///
/// # The blocks of a page are checked
///
/// Every `cachesweeper` block has a name, the argument after the time to live, because a
/// fragment's key is its record's version plus its key parts: two blocks on one record with the
/// same key parts share one cache entry, and the second shows the first one's HTML (see
/// [`filters`](crate::filters)). The filter itself rejects a block without a name on any page,
/// but it sees one block at a time. The derive reads the page's template and every template it
/// includes, extends or imports, so it also rejects, at compile time and naming `file:line`:
///
/// - two blocks with the same record expression and the same key parts (name included), in one
///   template or across the family; a partial included twice is one block, not two;
/// - a block without a record or without a name, and a name that is not a string literal (a
///   name from a variable could repeat another one, which no check could see);
/// - a literal time to live that is not whole seconds (`1.5`, `"300"`, `-1`), and a float
///   literal as a key part. A variable or a `Duration` is left to the compiler.
///
/// A page rendered with plain `page.render()` without this derive gets the first check only
/// (the name is required), not the uniqueness of names: derive it on every page.
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

    /// The page as the filler of its holes: the derive returns it for a page whose templates
    /// use the [`hole`](crate::filters::hole) filter (which then must implement
    /// [`Holes`](crate::Holes)), and `None` for any other.
    fn holes(&self) -> Option<&dyn crate::Holes> {
        None
    }
}

impl<T: TemplateDigest + ?Sized> TemplateDigest for &T {
    const TEMPLATE_DIGEST: &'static str = T::TEMPLATE_DIGEST;

    fn holes(&self) -> Option<&dyn crate::Holes> {
        (**self).holes()
    }
}
