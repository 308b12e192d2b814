//! Checks of the input as a whole, once every attribute is parsed.
//!
//! What only the type checker can know (whether a key type has a key form, whether a parent can
//! be touched) is left to the trait bounds in the generated code, spanned at the user's tokens.

use crate::ast::Container;
use crate::ctxt::Ctxt;

/// Records every semantic mistake of `cont` in `cx`.
pub fn check(cx: &Ctxt, cont: &Container) {
    if cont.fields.is_some() {
        check_key(cx, cont);
        check_version(cx, cont);
    }
    check_database(cx, cont);
}

fn check_database(cx: &Ctxt, cont: &Container) {
    if let (Some(database), None) = (&cont.attrs.database, &cont.attrs.table) {
        cx.error(
            database.span(),
            "`database` says which database the model's table is in: add `table = \"...\"` too",
        );
    }
}

fn check_key(cx: &Ctxt, cont: &Container) {
    let mut marked = cont
        .fields()
        .iter()
        .filter(|field| field.attrs.key.is_some());
    let first = marked.next();
    for second in marked {
        cx.error(
            second.attrs.key.expect("marked"),
            format_args!(
                "a record has one key field, and `{}` is already marked `#[sweeper(key)]`; \
                 remove one of the two (for a composite key, implement `KeyPart` for a type that holds both parts)",
                first.expect("marked before").ident,
            ),
        );
    }
    if cont.key_field().is_none() {
        let ident = cont.ident;
        cx.error(
            ident.span(),
            format_args!(
                "`{ident}` has no key field: name the primary key field `id`, \
                 or mark it with `#[sweeper(key)]`"
            ),
        );
    }
}

fn check_version(cx: &Ctxt, cont: &Container) {
    let mut marked = cont
        .fields()
        .iter()
        .filter(|field| field.attrs.version.is_some());
    let first = marked.next();
    for second in marked {
        cx.error(
            second.attrs.version.expect("marked"),
            format_args!(
                "a record has one version field, and `{}` is already marked `#[sweeper(version)]`; \
                 keep the one that changes whenever the record changes (e.g. `updated_at`)",
                first.expect("marked before").ident,
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
    fn a_valid_record() {
        let errors = errors(parse_quote! {
            #[sweeper(name = "blog::Comment", counter)]
            struct Comment<'a, T> {
                #[sweeper(key, version)]
                slug: &'a str,
                id: T,
                #[sweeper(touches = Article)]
                article_id: i64,
                #[sweeper(touches = User)]
                author_id: Option<i64>,
            }
        });
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn the_key_defaults_to_id_and_yields_to_a_marked_field() {
        let input: DeriveInput = parse_quote!(
            struct A {
                id: i64,
                #[sweeper(key)]
                slug: String,
            }
        );
        let cx = Ctxt::new();
        let cont = Container::from_ast(&cx, &input);
        assert_eq!(cont.key_field().unwrap().ident, "slug");
        let input: DeriveInput = parse_quote!(
            struct A {
                r#id: i64,
            }
        );
        assert_eq!(
            Container::from_ast(&cx, &input).key_field().unwrap().ident,
            "r#id"
        );
    }

    #[test]
    fn no_key() {
        assert_eq!(
            errors(parse_quote!(
                struct Tag {
                    name: String,
                }
            )),
            [
                "`Tag` has no key field: name the primary key field `id`, or mark it with `#[sweeper(key)]`"
            ]
        );
    }

    #[test]
    fn every_mistake_at_once() {
        let errors = errors(parse_quote! {
            #[sweeper(name = "", bogus)]
            struct A {
                #[sweeper(key, version)]
                a: i64,
                #[sweeper(key, version)]
                b: i64,
            }
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("the model name must not be empty"));
        assert!(errors[1].starts_with("unknown sweeper option `bogus`"));
        assert!(errors[2].starts_with("a record has one key field, and `a`"));
        assert!(errors[3].starts_with("a record has one version field, and `a`"));
    }

    #[test]
    fn shapes() {
        for input in [
            parse_quote!(
                enum E {
                    A,
                }
            ),
            parse_quote!(
                union U {
                    a: u8,
                }
            ),
            parse_quote!(
                struct T(i64);
            ),
            parse_quote!(
                struct U;
            ),
        ] {
            let errors = errors(input);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with("`#[derive(Sweepable)]`"),
                "{errors:?}"
            );
        }
    }
}
