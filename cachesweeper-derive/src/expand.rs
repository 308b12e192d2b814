//! Code generation for a checked input.
//!
//! The generated code names the runtime crate only through `<crate>::__private`, inside
//! `const _: () = { ... };`, so it does not depend on what the user has imported. Each use of a
//! field or parent type is spanned at that type, so that a type that does not fit is reported by
//! its trait's `on_unimplemented` message at the user's token rather than at the derive.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned;
use syn::{Generics, Path, WhereClause, parse_quote};

use crate::ast::Container;

/// The `Sweepable` (and, with a counter, `Touchable`) impls of a checked input.
pub fn expand(cont: &Container) -> TokenStream {
    let private = private(cont.attrs.crate_path.as_ref());
    let ident = cont.ident;
    let generics = with_inferred_bounds(cont, &private);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let model = match &cont.attrs.name {
        Some(name) => name.to_token_stream(),
        None => {
            let type_name = ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #type_name))
        }
    };
    let counter = cont.has_counter();
    // A generic model's instantiations must not share keys: its name in keys carries its type
    // arguments. Lifetimes do not count (they are erased: one type at run time).
    let generic_model = cont
        .generics
        .params
        .iter()
        .any(|param| !matches!(param, syn::GenericParam::Lifetime(_)))
        .then(|| {
            quote! {
                fn sweeper_model() -> &'static ::core::primitive::str {
                    #private::generic_model(
                        <Self as #private::Sweepable>::MODEL,
                        ::core::any::type_name::<Self>(),
                    )
                }
            }
        });

    let key = cont.key_field().expect("checked: a key field");
    let key_form = {
        let field = key.ident;
        quote_spanned!(key.ty.span()=> #private::KeyPart::key_form(&self.#field))
    };

    let version = match cont.version_field() {
        Some(version) => {
            let field = version.ident;
            let token = quote_spanned!(version.ty.span()=>
                #private::VersionField::version_token(&self.#field)
            );
            quote!(#private::Option::Some(#token))
        }
        None => quote!(#private::Option::None),
    };

    let touches: Vec<TokenStream> = cont
        .parent_fields()
        .map(|(field, parent)| {
            // Two spans: a parent that cannot be touched is the `touches = T` path's fault, a
            // field that cannot hold a key is the field type's.
            let touch = quote_spanned!(parent.span()=> #private::touch::<#parent>);
            let name = field.ident;
            let key = quote_spanned!(field.ty.span()=> &self.#name);
            quote!(#touch(parents, #key);)
        })
        .collect();
    let parents_param = if touches.is_empty() {
        quote!(_)
    } else {
        quote!(parents)
    };

    let touchable = counter.then(|| {
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::Touchable for #ident #ty_generics #where_clause {}
        }
    });

    let tracked = cont.attrs.table.as_ref().map(|table| {
        let key_column = key.ident.unraw().to_string();
        let database = cont
            .attrs
            .database
            .as_ref()
            .map_or_else(|| quote!(""), ToTokens::to_token_stream);
        let parents = cont.parent_fields().map(|(field, parent)| {
            let column = field.ident.unraw().to_string();
            quote_spanned!(parent.span()=> #private::Parent {
                column: #column,
                model: <#parent as #private::Sweepable>::sweeper_model,
            })
        });
        // A generic model has no one table entry to register: `ChangeLogBuilder::track` names
        // each instantiation.
        let registered = cont.generics.params.is_empty().then(|| {
            quote! {
                #private::inventory::submit! {
                    #private::Registered(<#ident as #private::Tracked>::TABLE)
                }
            }
        });
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::Tracked for #ident #ty_generics #where_clause {
                const TABLE: #private::Table = #private::Table {
                    database: #database,
                    name: #table,
                    key_column: #key_column,
                    model: <Self as #private::Sweepable>::sweeper_model,
                    parents: &[#(#parents),*],
                };
            }

            #registered
        }
    });

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Sweepable for #ident #ty_generics #where_clause {
                const MODEL: &'static ::core::primitive::str = #model;
                const COUNTER: ::core::primitive::bool = #counter;

                #generic_model

                fn sweeper_key(&self) -> #private::Cow<'_, ::core::primitive::str> {
                    #key_form
                }

                fn sweeper_version_field(&self) -> #private::Option<#private::String> {
                    #version
                }

                fn sweeper_parents(&self, #parents_param: &mut #private::Vec<#private::ModelRef>) {
                    #(#touches)*
                }
            }

            #touchable
            #tracked
        };
    }
}

/// Impls that compile whatever the input, emitted beside the errors of a rejected input so that
/// its uses (in templates, as a `touches` target) do not add errors of their own.
pub fn stub(cont: &Container) -> TokenStream {
    let private = private(cont.attrs.crate_path.as_ref());
    let ident = cont.ident;
    let (impl_generics, ty_generics, where_clause) = cont.generics.split_for_impl();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Sweepable for #ident #ty_generics #where_clause {
                const MODEL: &'static ::core::primitive::str = "";
                const COUNTER: ::core::primitive::bool = true;

                fn sweeper_key(&self) -> #private::Cow<'_, ::core::primitive::str> {
                    ::core::unreachable!()
                }

                fn sweeper_version_field(&self) -> #private::Option<#private::String> {
                    ::core::unreachable!()
                }

                fn sweeper_parents(&self, _: &mut #private::Vec<#private::ModelRef>) {
                    ::core::unreachable!()
                }
            }

            #[automatically_derived]
            impl #impl_generics #private::Touchable for #ident #ty_generics #where_clause {}
        };
    }
}

fn private(crate_path: Option<&Path>) -> TokenStream {
    match crate_path {
        Some(path) => quote!(#path::__private),
        None => quote!(::cachesweeper::__private),
    }
}

/// The struct's generics plus a bound for each generic type the impl relies on, the way serde
/// infers bounds: `struct Page<K> { id: K }` gets `K: KeyPart`. Only types that mention a type
/// parameter get one; a bound on a concrete type (`f64: KeyPart`) would move the error from the
/// field to the where clause, with a note about an unstable feature.
fn with_inferred_bounds(cont: &Container, private: &TokenStream) -> Generics {
    let mut generics = cont.generics.clone();
    let params: Vec<&Ident> = cont
        .generics
        .type_params()
        .map(|param| &param.ident)
        .collect();
    if params.is_empty() {
        return generics;
    }
    let mentions_param = |ty: &dyn ToTokens| mentions(ty.to_token_stream(), &params);

    let mut bounds: Vec<syn::WherePredicate> = Vec::new();
    if let Some(key) = cont.key_field()
        && mentions_param(key.ty)
    {
        let ty = key.ty;
        bounds.push(parse_quote!(#ty: #private::KeyPart));
    }
    if let Some(version) = cont.version_field()
        && mentions_param(version.ty)
    {
        let ty = version.ty;
        bounds.push(parse_quote!(#ty: #private::VersionField));
    }
    for (field, parent) in cont.parent_fields() {
        if mentions_param(field.ty) {
            let ty = field.ty;
            bounds.push(parse_quote!(#ty: #private::ParentKey));
        }
        if mentions_param(parent) {
            bounds.push(parse_quote!(#parent: #private::Touchable));
        }
    }
    if !bounds.is_empty() {
        let where_clause = generics.where_clause.get_or_insert_with(|| WhereClause {
            where_token: Default::default(),
            predicates: Default::default(),
        });
        where_clause.predicates.extend(bounds);
    }
    generics
}

fn mentions(tokens: TokenStream, params: &[&Ident]) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(ident) => params.contains(&&ident),
        TokenTree::Group(group) => mentions(group.stream(), params),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use syn::DeriveInput;

    use super::*;
    use crate::ctxt::Ctxt;

    fn expanded(input: DeriveInput) -> String {
        let cx = Ctxt::new();
        let cont = Container::from_ast(&cx, &input);
        crate::valid::check(&cx, &cont);
        cx.check().unwrap();
        expand(&cont).to_string()
    }

    #[test]
    fn a_field_versioned_record_has_no_counter_and_is_not_touchable() {
        let code = expanded(parse_quote!(
            struct A {
                id: i64,
                #[sweeper(version)]
                at: u64,
            }
        ));
        assert!(
            code.contains("const COUNTER : :: core :: primitive :: bool = false"),
            "{code}"
        );
        assert!(!code.contains("Touchable"), "{code}");
    }

    #[test]
    fn counter_keeps_it_touchable() {
        let code = expanded(parse_quote!(
            #[sweeper(counter, crate = krate)]
            struct A {
                id: i64,
                #[sweeper(version)]
                at: u64,
            }
        ));
        assert!(
            code.contains("const COUNTER : :: core :: primitive :: bool = true"),
            "{code}"
        );
        assert!(
            code.contains("impl krate :: __private :: Touchable for A"),
            "{code}"
        );
    }

    #[test]
    fn generic_bounds_only_where_a_parameter_is_used() {
        let code = expanded(parse_quote!(
            struct A<K, P, X> {
                id: K,
                #[sweeper(touches = P)]
                parent: Option<i64>,
                other: X,
            }
        ));
        assert!(
            code.contains(
                "where K : :: cachesweeper :: __private :: KeyPart , P : :: cachesweeper :: __private :: Touchable {"
            ),
            "{code}"
        );
    }

    #[test]
    fn raw_type_names_are_unraw_in_the_model_name() {
        let code = expanded(parse_quote!(
            struct r#type {
                id: i64,
            }
        ));
        assert!(
            code.contains(r#"module_path ! () , "::" , "type")"#),
            "{code}"
        );
    }
}
