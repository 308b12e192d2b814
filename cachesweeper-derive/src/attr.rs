//! `#[sweeper(...)]` attributes, parsed into plain structs.
//!
//! Parsing only records what was written, with spans; whether it makes sense as a whole (one
//! key, one version field) is `valid.rs`'s business.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Path, Token, Type};

use crate::ctxt::Ctxt;

/// The helper attribute's name.
pub const SWEEPER: &str = "sweeper";
/// Struct option: the model name in keys.
pub const NAME: &str = "name";
/// Struct option: keep a counter even with a version field.
pub const COUNTER: &str = "counter";
/// Struct option: the path of the `cachesweeper` crate.
pub const CRATE: &str = "crate";
/// Struct option: the database table the records live in.
pub const TABLE: &str = "table";
/// Struct option: which database that table is in.
pub const DATABASE: &str = "database";
/// Field option: the record's key.
pub const KEY: &str = "key";
/// Field option: the version token comes from this field.
pub const VERSION: &str = "version";
/// Field option: the field holds a parent's key.
pub const TOUCHES: &str = "touches";

const STRUCT_OPTIONS: &str =
    "`name = \"...\"`, `table = \"...\"`, `database = \"...\"`, `counter` and `crate = path`";
const FIELD_OPTIONS: &str = "`key`, `version` and `touches = Type`";

/// The struct's `#[sweeper(...)]` options.
#[derive(Default)]
pub struct Container {
    /// `name = "..."`, not empty.
    pub name: Option<LitStr>,
    /// `counter`.
    pub counter: bool,
    /// `crate = path`.
    pub crate_path: Option<Path>,
    /// `table = "..."`, not empty.
    pub table: Option<LitStr>,
    /// `database = "..."`, not empty.
    pub database: Option<LitStr>,
}

/// A field's `#[sweeper(...)]` options.
#[derive(Default)]
pub struct Field {
    /// `key`, with the span of the word for "second key field" errors.
    pub key: Option<Span>,
    /// `version`, with the span of the word.
    pub version: Option<Span>,
    /// `touches = Type`: the parent's type, as written (its span is where a parent that cannot
    /// be touched is reported).
    pub touches: Option<Type>,
}

/// Tracks which options were already given, so that a repeat is reported where it repeats.
struct Seen<'a> {
    cx: &'a Ctxt,
    names: Vec<&'static str>,
}

impl<'a> Seen<'a> {
    fn new(cx: &'a Ctxt) -> Self {
        Seen {
            cx,
            names: Vec::new(),
        }
    }

    /// Whether `name` is new; reports a duplicate at `span` otherwise.
    fn first(&mut self, name: &'static str, span: Span) -> bool {
        if self.names.contains(&name) {
            self.cx.error(
                span,
                format_args!("duplicate sweeper option `{name}`; remove this one"),
            );
            false
        } else {
            self.names.push(name);
            true
        }
    }
}

impl Container {
    /// Parses every `#[sweeper(...)]` on the struct.
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Container::default();
        let mut seen = Seen::new(cx);
        for attr in sweeper_attrs(attrs) {
            let result = attr.parse_nested_meta(|meta| {
                let path = &meta.path;
                let span = path.span();
                if path.is_ident(NAME) {
                    let name = model_name(cx, &meta)?;
                    if seen.first(NAME, span)
                        && let Some(name) = name
                    {
                        out.name = Some(name);
                    }
                } else if path.is_ident(TABLE) {
                    let table = table_name(cx, &meta, TABLE, "comments")?;
                    if seen.first(TABLE, span)
                        && let Some(table) = table
                    {
                        out.table = Some(table);
                    }
                } else if path.is_ident(DATABASE) {
                    let database = table_name(cx, &meta, DATABASE, "analytics")?;
                    if seen.first(DATABASE, span)
                        && let Some(database) = database
                    {
                        out.database = Some(database);
                    }
                } else if path.is_ident(COUNTER) {
                    no_value(cx, &meta, COUNTER)?;
                    if seen.first(COUNTER, span) {
                        out.counter = true;
                    }
                } else if path.is_ident(CRATE) {
                    let crate_path = crate_path(&meta)?;
                    if seen.first(CRATE, span) {
                        out.crate_path = Some(crate_path);
                    }
                } else {
                    let option = display(path);
                    if let Some(usage) = usage(path, &[KEY, VERSION, TOUCHES]) {
                        cx.error(
                            span,
                            format_args!(
                                "`{option}` is a field option: put `#[sweeper({usage})]` on the field it describes"
                            ),
                        );
                    } else {
                        cx.error(
                            span,
                            format_args!(
                                "unknown sweeper option `{option}`; the struct options are {STRUCT_OPTIONS}"
                            ),
                        );
                    }
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.push(err);
            }
        }
        out
    }
}

impl Field {
    /// Parses every `#[sweeper(...)]` on a field.
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Field::default();
        let mut seen = Seen::new(cx);
        for attr in sweeper_attrs(attrs) {
            let result = attr.parse_nested_meta(|meta| {
                let path = &meta.path;
                let span = path.span();
                if path.is_ident(KEY) {
                    no_value(cx, &meta, KEY)?;
                    if seen.first(KEY, span) {
                        out.key = Some(span);
                    }
                } else if path.is_ident(VERSION) {
                    no_value(cx, &meta, VERSION)?;
                    if seen.first(VERSION, span) {
                        out.version = Some(span);
                    }
                } else if path.is_ident(TOUCHES) {
                    let parent = parent_type(cx, &meta)?;
                    if seen.first(TOUCHES, span)
                        && let Some(parent) = parent
                    {
                        out.touches = Some(parent);
                    }
                } else {
                    let option = display(path);
                    if let Some(usage) = usage(path, &[NAME, TABLE, DATABASE, COUNTER, CRATE]) {
                        cx.error(
                            span,
                            format_args!(
                                "`{option}` is a struct option: put `#[sweeper({usage})]` on the struct"
                            ),
                        );
                    } else {
                        cx.error(
                            span,
                            format_args!(
                                "unknown sweeper option `{option}`; the field options are {FIELD_OPTIONS}"
                            ),
                        );
                    }
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.push(err);
            }
        }
        out
    }
}

fn sweeper_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident(SWEEPER))
}

/// How option `path` is written, if it is one of `names`.
fn usage(path: &Path, names: &[&str]) -> Option<&'static str> {
    let name = names.iter().find(|name| path.is_ident(name))?;
    Some(match *name {
        NAME => "name = \"...\"",
        TABLE => "table = \"...\"",
        DATABASE => "database = \"...\"",
        CRATE => "crate = path",
        TOUCHES => "touches = Type",
        KEY => KEY,
        VERSION => VERSION,
        _ => COUNTER,
    })
}

fn display(tokens: &impl ToTokens) -> String {
    tokens.to_token_stream().to_string().replace(' ', "")
}

/// A flag such as `key`: a value after it is a mistake worth its own message, then skipped so
/// that the options after it are still read.
fn no_value(cx: &Ctxt, meta: &ParseNestedMeta, name: &str) -> syn::Result<()> {
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        return Ok(());
    }
    let value = skip_value(meta)?;
    cx.error_spanned_by(
        value,
        format_args!("`{name}` takes no value: write `#[sweeper({name})]`"),
    );
    Ok(())
}

/// A string option's value, not empty: `empty` is the error for a blank string, `not_string`
/// for anything but a string literal. `Ok(None)` after a recorded error, so that the options
/// after it are read.
fn string_value(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    empty: &str,
    not_string: &str,
) -> syn::Result<Option<LitStr>> {
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) if lit.value().trim().is_empty() => {
            cx.error(lit.span(), empty);
            Ok(None)
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(Some(lit)),
        other => {
            cx.error_spanned_by(other, not_string);
            Ok(None)
        }
    }
}

/// `name = "..."`.
fn model_name(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<LitStr>> {
    string_value(
        cx,
        meta,
        &format!(
            "the model name must not be empty: it keeps this model's keys apart from other models'; \
             remove `{NAME}` to use the module path and type name"
        ),
        &format!("`{NAME}` must be a string literal, as in `#[sweeper(name = \"blog::Comment\")]`"),
    )
}

/// `table = "comments"` or `database = "analytics"`: a name, not empty.
fn table_name(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    option: &str,
    example: &str,
) -> syn::Result<Option<LitStr>> {
    let what = if option == TABLE {
        "the table the records live in"
    } else {
        "the database the table is in"
    };
    let message =
        format!("`{option}` must name {what}, as in `#[sweeper({option} = \"{example}\")]`");
    string_value(cx, meta, &message, &message)
}

/// `crate = path`, or `crate = "path"` as serde spells it.
pub fn crate_path(meta: &ParseNestedMeta) -> syn::Result<Path> {
    let input = meta.value()?;
    if input.peek(syn::LitStr) {
        let lit: LitStr = input.parse()?;
        return lit.parse_with(Path::parse_mod_style);
    }
    input.call(Path::parse_mod_style).map_err(|err| {
        syn::Error::new(
            err.span(),
            "`crate` must be a path, as in `#[sweeper(crate = ::cachesweeper)]`",
        )
    })
}

/// `touches = Type`. A string (`touches = "Article"`) is reported with its fix, then dropped.
fn parent_type(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Type>> {
    let input = meta.value()?;
    if input.peek(syn::LitStr) {
        let lit: LitStr = input.parse()?;
        cx.error(
            lit.span(),
            format_args!(
                "`touches` takes the parent's type, not a string: write `touches = {}`",
                lit.value()
            ),
        );
        return Ok(None);
    }
    input.parse().map(Some).map_err(|err| {
        syn::Error::new(
            err.span(),
            "`touches` takes the parent's type, as in `#[sweeper(touches = Article)]`",
        )
    })
}

/// Skips whatever follows an option up to the next top-level comma, and returns it.
pub fn skip_value(meta: &ParseNestedMeta) -> syn::Result<TokenStream> {
    meta.input.step(|cursor| {
        let mut skipped = TokenStream::new();
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if let TokenTree::Punct(punct) = &tt
                && punct.as_char() == ','
            {
                break;
            }
            skipped.extend([tt]);
            rest = next;
        }
        Ok((skipped, rest))
    })
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn container(attrs: &[Attribute]) -> (Container, Vec<String>) {
        let cx = Ctxt::new();
        let parsed = Container::from_attrs(&cx, attrs);
        (parsed, messages(cx))
    }

    fn field(attrs: &[Attribute]) -> (Field, Vec<String>) {
        let cx = Ctxt::new();
        let parsed = Field::from_attrs(&cx, attrs);
        (parsed, messages(cx))
    }

    fn messages(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn struct_options() {
        let (c, errors) = container(&[
            parse_quote!(#[sweeper(name = "blog::Comment", counter)]),
            parse_quote!(#[sweeper(crate = my::cachesweeper)]),
            parse_quote!(#[doc = "other attributes are ignored"]),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.name.unwrap().value(), "blog::Comment");
        assert!(c.counter);
        assert_eq!(display(&c.crate_path.unwrap()), "my::cachesweeper");
    }

    #[test]
    fn crate_as_string() {
        let (c, errors) = container(&[parse_quote!(#[sweeper(crate = "::renamed")])]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(display(&c.crate_path.unwrap()), "::renamed");
    }

    #[test]
    fn field_options_combine() {
        let (f, errors) = field(&[parse_quote!(#[sweeper(key, version, touches = a::Parent)])]);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(f.key.is_some() && f.version.is_some());
        assert_eq!(display(&f.touches.unwrap()), "a::Parent");
    }

    #[test]
    fn all_mistakes_of_one_list_are_reported() {
        let (f, errors) = field(&[
            parse_quote!(#[sweeper(kye, key, key, name = "x", version = 1, touches = "Article")]),
        ]);
        assert_eq!(
            errors,
            [
                "unknown sweeper option `kye`; the field options are `key`, `version` and `touches = Type`",
                "duplicate sweeper option `key`; remove this one",
                "`name` is a struct option: put `#[sweeper(name = \"...\")]` on the struct",
                "`version` takes no value: write `#[sweeper(version)]`",
                "`touches` takes the parent's type, not a string: write `touches = Article`",
            ]
        );
        assert!(f.key.is_some());
    }

    #[test]
    fn duplicates_across_attributes() {
        let (_, errors) = container(&[
            parse_quote!(#[sweeper(counter)]),
            parse_quote!(#[sweeper(counter)]),
        ]);
        assert_eq!(
            errors,
            ["duplicate sweeper option `counter`; remove this one"]
        );
    }

    #[test]
    fn name_must_be_a_string() {
        let (c, errors) = container(&[parse_quote!(#[sweeper(name = Comment)])]);
        assert_eq!(
            errors,
            ["`name` must be a string literal, as in `#[sweeper(name = \"blog::Comment\")]`"]
        );
        assert!(c.name.is_none());
    }

    #[test]
    fn name_must_not_be_empty() {
        let (c, errors) = container(&[parse_quote!(#[sweeper(name = " ")])]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("the model name must not be empty"));
        assert!(c.name.is_none());
    }

    #[test]
    fn field_option_on_the_struct() {
        let (_, errors) = container(&[parse_quote!(#[sweeper(touches = Article)])]);
        assert_eq!(
            errors,
            [
                "`touches` is a field option: put `#[sweeper(touches = Type)]` on the field it describes"
            ]
        );
    }
}
