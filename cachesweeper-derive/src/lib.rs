//! `#[derive(Sweepable)]` and `#[derive(TemplateDigest)]` for
//! [cachesweeper](https://docs.rs/cachesweeper).
//!
//! Use them through `cachesweeper::Sweepable` and `cachesweeper::TemplateDigest` (feature
//! `derive`, on by default); the attribute reference is in cachesweeper's "Models"
//! documentation.
//!
//! Each derive works in stages, one module each: `ast` models the input, `attr` parses its
//! attributes, `valid` checks the whole, and `expand` generates the impls (`template/` holds
//! those of `TemplateDigest`, with the stages that read templates). Every mistake of an input
//! is collected and reported at once, each at the token at fault, next to a stub impl that
//! keeps the rest of the user's crate from failing because of it.

#![deny(missing_docs)]

mod ast;
mod attr;
mod ctxt;
mod expand;
mod template;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `cachesweeper::Sweepable` for a struct with named fields, and
/// `cachesweeper::Touchable` when its version includes a counter.
///
/// See cachesweeper's crate documentation ("Models") for the `#[sweeper(...)]` attributes.
#[proc_macro_derive(Sweepable, attributes(sweeper))]
pub fn derive_sweepable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive(&input).into()
}

/// Implements `cachesweeper::TemplateDigest` for an Askama template type: a digest of its
/// template and of every template that one includes, extends or imports, computed at compile
/// time from the files Askama reads.
///
/// Put it next to Askama's derive, which owns the `#[template(...)]` attribute:
///
/// ```text
/// #[derive(askama::Template, cachesweeper::TemplateDigest)]
/// #[template(path = "blog/article.html")]
/// struct ArticlePage<'a> { article: &'a Article }
/// ```
///
/// Templates are found where Askama finds them: in the template directories (`templates/`
/// beside Cargo.toml, or the `dirs` of askama.toml), and for an included, extended or imported
/// template first beside the template that names it. The digest depends on the files' contents
/// and their paths relative to their template directory, on askama.toml and on the
/// `#[template]` options that change the output (`ext`, `escape`, `block`, `syntax`,
/// `whitespace`), and on nothing of the machine it is built on. `#[sweeper(crate = path)]`
/// names the `cachesweeper` crate if it is renamed. Templates on enum variants and
/// `in_doc` templates are not supported.
///
/// It also checks the `cachesweeper` filter blocks of the whole template family (issue 10):
/// each has a record, a time to live and a name given as a string literal, a literal time to
/// live is whole seconds, and no two blocks cache the same record expression under the same
/// key parts (the name and what follows), in one template or across an include, extends or
/// import. Each mistake is a compile error at the `#[template]` path or source that names the
/// block's `file:line`. The blocks are found with askama_parser, Askama's own parser. Without
/// this derive, the filter still requires the name, but two blocks with the same name go
/// unnoticed.
///
/// And it checks what each block reads (issue 23): a block's HTML is served to every request
/// with its key, so everything the block and what it includes read must be the same for all
/// of them. A block may read its record's variable (and what is reached through it), its key
/// parts after the name (`viewer.id` lets it read `viewer.id`, not `viewer.name`), names bound
/// inside it, and the fields declared on the template struct:
///
/// ```text
/// #[derive(askama::Template, cachesweeper::TemplateDigest)]
/// #[template(path = "blog/article.html")]
/// #[sweeper(same_for_everyone(site_name))]      // a method (or field) of the template
/// struct ArticlePage<'a> {
///     article: &'a Article,
///     #[sweeper(belongs_to = article)]          // data of the article: in its blocks
///     comments: Lazy<'a, Vec<Comment>>,
///     #[sweeper(same_for_everyone)]             // site settings: in any block
///     site: &'a Site,
///     viewer: &'a Viewer,                       // in no block, unless a block keys on it
/// }
/// ```
///
/// A block that reads anything else (the viewer, a CSRF token, an `is_admin` flag, a variable
/// bound outside it) is a compile error naming the block's `file:line`, the value, and the
/// fixes. A nested block's reads count for every block around it, whose HTML contains it.
/// `belongs_to` chains: a field that belongs to a field that belongs to the record may be
/// read. Reads inside a Rust macro call (`format!("{x}")`) are found by name; macro bodies
/// (`{% macro %}`) are not looked into.
///
/// Every file read is `include_bytes!`'d, so cargo rebuilds (and the digest is computed again)
/// when one changes. Like Askama, a build does not notice a *new* file that would now be found
/// first (a template added beside the one that includes it, shadowing one in the template
/// directories) until something else triggers a rebuild.
#[proc_macro_derive(TemplateDigest, attributes(template, sweeper))]
pub fn derive_template_digest(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    template::derive(&input).into()
}

fn derive(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::new();
    let cont = ast::Container::from_ast(&cx, input);
    valid::check(&cx, &cont);
    match cx.check() {
        Ok(()) => expand::expand(&cont),
        Err(errors) => {
            let mut out = errors.to_compile_error();
            out.extend(expand::stub(&cont));
            out
        }
    }
}
