//! `#[derive(Sweepable)]` for [cachesweeper](https://docs.rs/cachesweeper).
//!
//! Use it through `cachesweeper::Sweepable` (feature `derive`, on by default); the attribute
//! reference is in cachesweeper's "Models" documentation.
//!
//! The derive works in stages, one module each: `ast` models the input, `attr` parses
//! `#[sweeper(...)]`, `valid` checks the whole, and `expand` generates the impls. Every
//! mistake of an input is collected and reported at once, each at the token at fault, next to
//! a stub impl that keeps the rest of the user's crate from failing because of it.

#![deny(missing_docs)]

mod ast;
mod attr;
mod ctxt;
mod expand;
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
