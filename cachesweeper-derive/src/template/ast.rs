//! A model of the `#[derive(TemplateDigest)]` input: the type, its `#[template(...)]`, and the
//! syn nodes that errors point at.

use syn::{Attribute, Data, DeriveInput, Generics, Ident, Path};

use super::attr::{self, Template};
use super::reads::Declared;
use crate::ctxt::Ctxt;

/// The type being derived.
pub struct Container<'a> {
    /// Its name.
    pub ident: &'a Ident,
    /// Its generics, for `split_for_impl`.
    pub generics: &'a Generics,
    /// Its `#[template(...)]`, if it has one.
    pub template: Option<Template>,
    /// The `#[template(...)]` attributes on enum variants (not supported).
    pub variant_templates: Vec<&'a Attribute>,
    /// `union`, which Askama does not support either.
    pub union_token: Option<syn::token::Union>,
    /// `#[sweeper(crate = path)]`.
    pub crate_path: Option<Path>,
    /// What the fields' `#[sweeper(...)]` declare, for the check of what blocks read.
    pub declared: Declared,
}

impl<'a> Container<'a> {
    /// Models `input`, recording any attribute error in `cx`.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let variant_templates = match &input.data {
            Data::Enum(data) => data
                .variants
                .iter()
                .flat_map(|variant| &variant.attrs)
                .filter(|attr| attr.path().is_ident(attr::TEMPLATE))
                .collect(),
            Data::Struct(_) | Data::Union(_) => Vec::new(),
        };
        Container {
            ident: &input.ident,
            generics: &input.generics,
            template: Template::from_attrs(cx, &input.attrs),
            variant_templates,
            union_token: match &input.data {
                Data::Union(data) => Some(data.union_token),
                Data::Struct(_) | Data::Enum(_) => None,
            },
            crate_path: attr::crate_path(cx, &input.attrs),
            declared: attr::declared(cx, &input.attrs, &input.data),
        }
    }
}
