//! `#[derive(TemplateDigest)]`: a digest of an Askama template and of every template it
//! includes, extends or imports, computed at compile time.
//!
//! The stages, one module each: `attr` reads `#[template(...)]` (Askama's attribute) and
//! `#[sweeper(crate = ...)]`, `ast` models the input, `valid` checks it; then `config` reads
//! askama.toml, `deps` finds the templates a template names, `digest` finds them where Askama
//! does and hashes them, `blocks` checks the `cachesweeper` blocks of the whole family (each has
//! a record, a time to live and a literal name, and no two share a key), `reads` checks what
//! each block reads (only its record, its key and what is declared the same for everyone), and
//! `expand` generates
//! the impl. `deps` and `blocks` read templates with askama_parser, Askama's own parser, through
//! `syntax` (the delimiters of askama.toml, and a walk over every node of a parsed template).

mod ast;
mod attr;
mod blocks;
mod config;
mod deps;
mod digest;
mod expand;
mod reads;
mod syntax;
mod valid;

use std::path::PathBuf;

use proc_macro2::TokenStream;
use syn::{DeriveInput, LitStr};

use self::attr::Source;
use self::config::Config;
use self::digest::Root;
use crate::ctxt::Ctxt;

/// The `TemplateDigest` impl of `input`, or its errors beside a stub impl.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let cont = ast::Container::from_ast(&cx, input);
    valid::check(&cx, &cont);
    let digest = digest_of(&cx, &cont);
    match (cx.check(), digest) {
        (Ok(()), Some((digest, holes))) => expand::expand(&cont, &digest.hex, &digest.files, holes),
        (Err(errors), _) => {
            let mut out = errors.to_compile_error();
            out.extend(expand::stub(&cont));
            out
        }
        (Ok(()), None) => unreachable!("an input without a digest has errors"),
    }
}

/// The digest of the input's template, if it names one, and whether its family uses holes;
/// every file error is recorded in `cx`,
/// at the string that names the template.
fn digest_of(cx: &Ctxt, cont: &ast::Container) -> Option<(digest::Digest, bool)> {
    let template = cont.template.as_ref()?;
    if template.in_doc.is_some() || cont.union_token.is_some() {
        return None;
    }
    let source = template.source.as_ref()?;

    let config_path = template.config.as_ref().map(LitStr::value);
    let syntax = template.syntax.as_ref().map(LitStr::value);
    let config = match Config::load(&manifest_dir(), config_path.as_deref(), syntax.as_deref()) {
        Ok(config) => config,
        Err(config::Error::File(message)) => {
            match &template.config {
                Some(lit) => cx.error(lit.span(), message),
                None => cx.error_spanned_by(&template.attr, message),
            }
            return None;
        }
        Err(config::Error::Syntax(message)) => {
            let lit = template
                .syntax
                .as_ref()
                .expect("a syntax error names a syntax");
            cx.error(lit.span(), message);
            return None;
        }
    };

    let options = template.digest_options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let value = source.lit().value();
    let root = match source {
        Source::Path(_) => Root::Path(&value),
        Source::Inline(_) => Root::Source(&value),
    };
    match digest::digest(&config, root, &options) {
        Ok(digest) => {
            let reads = reads::check(&config.syntax, &digest.templates, &cont.declared);
            for error in blocks::check(&config.syntax, &digest.templates)
                .into_iter()
                .chain(reads.errors)
            {
                cx.error(source.lit().span(), error);
            }
            Some((digest, reads.holes))
        }
        Err(errors) => {
            for error in errors {
                cx.error(source.lit().span(), error);
            }
            None
        }
    }
}

/// The crate being compiled, where Askama looks for askama.toml and `templates/`
/// (askama_derive's `manifest_root`, config.rs:414-416).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from)
}
