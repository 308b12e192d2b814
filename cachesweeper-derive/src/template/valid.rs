//! Checks of the input as a whole, before any file is read.

use quote::quote;

use super::ast::Container;
use super::attr::{IN_DOC, PATH, SOURCE};
use crate::ctxt::Ctxt;

/// Records every mistake of `cont` in `cx`.
pub fn check(cx: &Ctxt, cont: &Container) {
    let ident = cont.ident;
    if let Some(union_token) = cont.union_token {
        cx.error_spanned_by(
            quote!(#union_token #ident),
            "`#[derive(TemplateDigest)]` supports structs and enums, as Askama does, not unions",
        );
        return;
    }
    for attr in &cont.variant_templates {
        cx.error_spanned_by(
            attr,
            "`#[derive(TemplateDigest)]` digests only the enum's own `#[template(...)]`, not templates \
             of its variants; give the enum one template, or derive it on a struct per variant",
        );
    }
    let Some(template) = &cont.template else {
        if cont.variant_templates.is_empty() {
            cx.error(
                ident.span(),
                format_args!(
                    "`{ident}` has no `#[template(...)]` to digest: put `#[derive(TemplateDigest)]` \
                     next to `#[derive(Template)]` with `#[template(path = \"...\")]`"
                ),
            );
        }
        return;
    };
    if let Some(in_doc) = template.in_doc {
        cx.error(
            in_doc,
            format_args!(
                "`#[derive(TemplateDigest)]` does not read templates from documentation (`{IN_DOC}`); \
                 move the template to a file (`{PATH} = \"...\"`) or to `{SOURCE} = \"...\"`"
            ),
        );
    } else if template.source.is_none() {
        cx.error_spanned_by(
            &template.attr,
            format_args!(
                "`#[template(...)]` names no template to digest: add `{PATH} = \"...\"` (a file in \
                 the template directories) or `{SOURCE} = \"...\"` (the template itself)"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use syn::{DeriveInput, parse_quote};

    use super::*;

    fn errors(input: DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        let cont = Container::from_ast(&cx, &input);
        check(&cx, &cont);
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_inputs() {
        for input in [
            parse_quote!(
                #[template(path = "a.html")]
                struct A<'a, T> {
                    t: &'a T,
                }
            ),
            parse_quote!(
                #[template(source = "{{ self.0 }}", ext = "txt")]
                struct B(i64);
            ),
            parse_quote!(
                #[template(path = "e.html")]
                enum E {
                    A,
                    B(i64),
                }
            ),
        ] {
            assert_eq!(errors(input), Vec::<String>::new());
        }
    }

    #[test]
    fn no_template() {
        assert_eq!(
            errors(parse_quote!(
                struct Page;
            )),
            [
                "`Page` has no `#[template(...)]` to digest: put `#[derive(TemplateDigest)]` next to \
                 `#[derive(Template)]` with `#[template(path = \"...\")]`"
            ]
        );
        let errors = errors(parse_quote!(
            #[template(ext = "html")]
            struct Page;
        ));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("`#[template(...)]` names no template to digest"));
    }

    #[test]
    fn unsupported_shapes() {
        let errors = errors(parse_quote!(
            enum E {
                #[template(path = "a.html")]
                A,
                #[template(path = "b.html")]
                B,
            }
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("`#[derive(TemplateDigest)]` digests only the enum's own"));
        let errors = self::errors(parse_quote!(
            #[template(path = "a.html")]
            union U {
                a: u8,
            }
        ));
        assert_eq!(
            errors,
            ["`#[derive(TemplateDigest)]` supports structs and enums, as Askama does, not unions"]
        );
        let errors = self::errors(parse_quote!(
            #[template(in_doc = true, ext = "html")]
            struct Doc;
        ));
        assert!(errors[0].contains("does not read templates from documentation"));
    }
}
