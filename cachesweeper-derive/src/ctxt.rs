//! Where the stages put their errors, so that one build reports every mistake of an input.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::Span;

/// The errors found so far in one derive input.
///
/// The stages take `&Ctxt` rather than returning early: a user who misspells two options and
/// forgets the key should learn all three in one build, not one per build.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `span`.
    pub fn error(&self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records an error that underlines all of `tokens`.
    pub fn error_spanned_by(&self, tokens: impl quote::ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error from syn (a syntax error in an attribute).
    pub fn push(&self, error: syn::Error) {
        self.errors.borrow_mut().push(error);
    }

    /// All errors combined into one, or `Ok` if there were none.
    pub fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}
