//! Code generation for a digested input.
//!
//! The generated code names the runtime crate only through `<crate>::__private`, inside
//! `const _: () = { ... };`, so it does not depend on what the user has imported.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::quote;
use syn::Path;

use super::ast::Container;

/// The `TemplateDigest` impl with the digest `hex`, and an `include_bytes!` of each file it
/// covers: the compiler then knows the crate depends on them, and cargo rebuilds it (computing
/// the digest again) when one changes.
pub fn expand(cont: &Container, hex: &str, files: &[PathBuf], holes: bool) -> TokenStream {
    let files = files.iter().filter_map(|file| file.to_str()).map(|file| {
        quote!(
            const _: &[::core::primitive::u8] = ::core::include_bytes!(#file);
        )
    });
    let imp = imp(cont, hex, holes);
    quote! {
        const _: () = {
            #imp
            #(#files)*
        };
    }
}

/// An impl that compiles whatever the input, emitted beside the errors of a rejected input so
/// that its uses (rendering the page) do not add errors of their own.
pub fn stub(cont: &Container) -> TokenStream {
    let imp = imp(cont, "", false);
    quote! {
        const _: () = {
            #imp
        };
    }
}

/// The impl; for a page whose templates use holes, `holes()` returns the page, which then
/// must implement `Holes` (the compiler says so, with the trait's own message).
fn imp(cont: &Container, hex: &str, holes: bool) -> TokenStream {
    let private = private(cont.crate_path.as_ref());
    let ident = cont.ident;
    let (impl_generics, ty_generics, where_clause) = cont.generics.split_for_impl();
    let holes = holes.then(|| {
        quote! {
            fn holes(&self) -> #private::Option<&dyn #private::Holes> {
                #private::Option::Some(self)
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::TemplateDigest for #ident #ty_generics #where_clause {
            const TEMPLATE_DIGEST: &'static ::core::primitive::str = #hex;
            #holes
        }
    }
}

fn private(crate_path: Option<&Path>) -> TokenStream {
    match crate_path {
        Some(path) => quote!(#path::__private),
        None => quote!(::cachesweeper::__private),
    }
}

#[cfg(test)]
mod tests {
    use syn::{DeriveInput, parse_quote};

    use super::*;
    use crate::ctxt::Ctxt;

    #[test]
    fn the_impl_and_the_dependencies() {
        let input: DeriveInput = parse_quote!(
            #[template(path = "a.html")]
            #[sweeper(crate = krate)]
            struct Page<'a, T: Clone>
            where
                T: Send,
            {
                t: &'a T,
            }
        );
        let cx = Ctxt::new();
        let cont = Container::from_ast(&cx, &input);
        let code = expand(
            &cont,
            "0123456789abcdef",
            &[PathBuf::from("/t/a.html")],
            true,
        )
        .to_string();
        assert_eq!(
            code,
            quote! {
                const _: () = {
                    #[automatically_derived]
                    impl<'a, T: Clone> krate::__private::TemplateDigest for Page<'a, T> where T: Send, {
                        const TEMPLATE_DIGEST: &'static ::core::primitive::str = "0123456789abcdef";
                        fn holes(&self) -> krate::__private::Option<&dyn krate::__private::Holes> {
                            krate::__private::Option::Some(self)
                        }
                    }
                    const _: &[::core::primitive::u8] = ::core::include_bytes!("/t/a.html");
                };
            }
            .to_string()
        );
        let stub = stub(&cont).to_string();
        assert!(stub.contains("TEMPLATE_DIGEST : & 'static :: core :: primitive :: str = \"\""));
        assert!(!stub.contains("fn holes"), "a stub fills no holes");
    }
}
