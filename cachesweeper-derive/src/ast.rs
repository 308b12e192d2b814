//! A model of the derive input: the struct and its named fields, each with its parsed
//! `#[sweeper(...)]` options and the syn nodes that errors point at.

use quote::quote;
use syn::ext::IdentExt as _;
use syn::{Data, DeriveInput, Fields, Generics, Ident, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// The struct being derived.
pub struct Container<'a> {
    /// The struct's name.
    pub ident: &'a Ident,
    /// Its generics, for `split_for_impl`.
    pub generics: &'a Generics,
    /// The struct's `#[sweeper(...)]` options.
    pub attrs: attr::Container,
    /// The named fields; `None` when the input is not a struct with named fields (already
    /// reported).
    pub fields: Option<Vec<Field<'a>>>,
}

/// A named field.
pub struct Field<'a> {
    /// The field's name.
    pub ident: &'a Ident,
    /// The field's type: where a key or version type that does not fit is reported.
    pub ty: &'a Type,
    /// The field's `#[sweeper(...)]` options.
    pub attrs: attr::Field,
}

impl<'a> Container<'a> {
    /// Models `input`, recording any attribute or shape error in `cx`.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = attr::Container::from_attrs(cx, &input.attrs);
        let ident = &input.ident;
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => Some(
                    named
                        .named
                        .iter()
                        .map(|field| Field {
                            ident: field.ident.as_ref().expect("named field"),
                            ty: &field.ty,
                            attrs: attr::Field::from_attrs(cx, &field.attrs),
                        })
                        .collect(),
                ),
                Fields::Unnamed(_) => {
                    let struct_token = data.struct_token;
                    cx.error_spanned_by(
                        quote!(#struct_token #ident),
                        format_args!(
                            "`#[derive(Sweepable)]` needs named fields, but `{ident}` is a tuple struct; \
                             name its fields, e.g. `struct {ident} {{ id: i64 }}`"
                        ),
                    );
                    None
                }
                Fields::Unit => {
                    let struct_token = data.struct_token;
                    cx.error_spanned_by(
                        quote!(#struct_token #ident),
                        format_args!(
                            "`#[derive(Sweepable)]` needs a struct with a key field, but `{ident}` is a unit struct; \
                             give it one, e.g. `struct {ident} {{ id: i64 }}`"
                        ),
                    );
                    None
                }
            },
            Data::Enum(data) => {
                let enum_token = data.enum_token;
                cx.error_spanned_by(
                    quote!(#enum_token #ident),
                    "`#[derive(Sweepable)]` supports only structs with named fields, not enums; \
                     derive it on the struct of each record type, or implement `Sweepable` by hand",
                );
                None
            }
            Data::Union(data) => {
                let union_token = data.union_token;
                cx.error_spanned_by(
                    quote!(#union_token #ident),
                    "`#[derive(Sweepable)]` supports only structs with named fields, not unions",
                );
                None
            }
        };
        Container {
            ident,
            generics: &input.generics,
            attrs,
            fields,
        }
    }

    /// The named fields, or none for an input that is not such a struct.
    pub fn fields(&self) -> &[Field<'a>] {
        self.fields.as_deref().unwrap_or_default()
    }

    /// The key field: the first one marked `#[sweeper(key)]`, else the one named `id`.
    pub fn key_field(&self) -> Option<&Field<'a>> {
        let fields = self.fields();
        fields
            .iter()
            .find(|field| field.attrs.key.is_some())
            .or_else(|| fields.iter().find(|field| field.ident.unraw() == "id"))
    }

    /// The first field marked `#[sweeper(version)]`.
    pub fn version_field(&self) -> Option<&Field<'a>> {
        self.fields()
            .iter()
            .find(|field| field.attrs.version.is_some())
    }

    /// The fields marked `#[sweeper(touches = T)]`, with `T`.
    pub fn parent_fields(&self) -> impl Iterator<Item = (&Field<'a>, &Type)> {
        self.fields()
            .iter()
            .filter_map(|field| Some((field, field.attrs.touches.as_ref()?)))
    }

    /// Whether the version includes a backend counter (`Sweepable::COUNTER`).
    pub fn has_counter(&self) -> bool {
        self.version_field().is_none() || self.attrs.counter
    }
}
