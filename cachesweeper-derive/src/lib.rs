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
