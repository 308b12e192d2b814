//! Askama's `#[template(...)]`, parsed into a plain struct, and the `crate` option of
//! `#[sweeper(...)]`.
//!
//! The attribute is Askama's: its derive validates it and reports its mistakes. This parser
//! reads what the digest depends on and says nothing about the rest (`print`, `blocks`,
//! `askama`, options it does not know), so that a mistake Askama reports is not reported twice.
//! Several `#[template]` attributes are read as one, as Askama reads them.

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Lit, LitStr, Meta, Path, Token};

use crate::ctxt::Ctxt;

/// Askama's attribute.
pub const TEMPLATE: &str = "template";
/// A template file in the template directories.
pub const PATH: &str = "path";
/// An inline template.
pub const SOURCE: &str = "source";
/// A template in the type's documentation (Askama's `code-in-doc` feature).
pub const IN_DOC: &str = "in_doc";
/// The config file, relative to `CARGO_MANIFEST_DIR`.
pub const CONFIG: &str = "config";
/// The template syntax (delimiters), defined in the config file.
pub const SYNTAX: &str = "syntax";

/// The options that change what a template renders without being in its files: in the digest.
const RENDER_OPTIONS: [&str; 5] = ["ext", "escape", "block", "syntax", "whitespace"];

/// What `#[template(...)]` says about the template.
pub struct Template {
    /// The first `#[template]` attribute: where "no template named" is reported.
    pub attr: Attribute,
    /// `path = "..."` or `source = "..."`.
    pub source: Option<Source>,
    /// `in_doc = true`, at `in_doc`.
    pub in_doc: Option<Span>,
    /// `config = "..."`.
    pub config: Option<LitStr>,
    /// `syntax = "..."`.
    pub syntax: Option<LitStr>,
    /// The [`RENDER_OPTIONS`] given, by name.
    pub render_options: Vec<(&'static str, LitStr)>,
}

/// Where the template is.
pub enum Source {
    /// `path = "..."`.
    Path(LitStr),
    /// `source = "..."`.
    Inline(LitStr),
}

impl Source {
    /// The string literal.
    pub fn lit(&self) -> &LitStr {
        match self {
            Source::Path(lit) | Source::Inline(lit) => lit,
        }
    }
}

impl Template {
    /// Reads every `#[template(...)]` in `attrs`; `None` when there is none.
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Option<Self> {
        let mut attrs = attrs.iter().filter(|attr| attr.path().is_ident(TEMPLATE));
        let first = attrs.next()?;
        let mut out = Template {
            attr: first.clone(),
            source: None,
            in_doc: None,
            config: None,
            syntax: None,
            render_options: Vec::new(),
        };
        for attr in std::iter::once(first).chain(attrs) {
            match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
                Ok(args) => {
                    for arg in args {
                        out.option(cx, arg);
                    }
                }
                Err(err) => cx.error(
                    err.span(),
                    format_args!("cannot read `#[template(...)]`: {err}"),
                ),
            }
        }
        Some(out)
    }

    fn option(&mut self, cx: &Ctxt, arg: Meta) {
        let Meta::NameValue(pair) = arg else {
            return; // Askama: "unsupported attribute argument".
        };
        let Some(ident) = pair.path.get_ident() else {
            return;
        };
        let name = ident.to_string();
        let value = literal(&pair.value);
        if name == IN_DOC {
            if let Some(Lit::Bool(b)) = value
                && b.value
            {
                self.in_doc = Some(ident.span());
            }
            return;
        }
        let wanted = [PATH, SOURCE, CONFIG]
            .into_iter()
            .chain(RENDER_OPTIONS)
            .find(|wanted| name == *wanted);
        let Some(wanted) = wanted else {
            return; // Not the digest's business; Askama reports what it does not know.
        };
        let Some(Lit::Str(lit)) = value else {
            cx.error_spanned_by(
                &pair.value,
                format_args!(
                    "`{wanted}` must be a string literal, as in `#[template({wanted} = \"...\")]`"
                ),
            );
            return;
        };
        let duplicate = match wanted {
            PATH | SOURCE => {
                let duplicate = self.source.is_some();
                if !duplicate {
                    self.source = Some(match wanted {
                        PATH => Source::Path(lit),
                        _ => Source::Inline(lit),
                    });
                }
                duplicate
            }
            CONFIG => set(&mut self.config, lit),
            _ => {
                let duplicate = self.render_options.iter().any(|(name, _)| *name == wanted);
                if !duplicate {
                    if wanted == SYNTAX {
                        self.syntax = Some(lit.clone());
                    }
                    self.render_options.push((wanted, lit));
                }
                duplicate
            }
        };
        if duplicate {
            let message = if matches!(wanted, PATH | SOURCE) {
                "a template has one `path` or `source`; remove this one".to_owned()
            } else {
                format!("duplicate template option `{wanted}`; remove this one")
            };
            cx.error(ident.span(), message);
        }
    }

    /// The options in the digest, by name, in a fixed order.
    pub fn digest_options(&self) -> Vec<(&'static str, String)> {
        let mut options: Vec<(&'static str, String)> = self
            .render_options
            .iter()
            .map(|(name, lit)| (*name, lit.value()))
            .collect();
        if let Some(Source::Path(path)) = &self.source {
            options.push((PATH, path.value()));
        }
        options.sort();
        options
    }
}

/// Sets `slot` unless it is set; whether it was (a duplicate).
fn set(slot: &mut Option<LitStr>, lit: LitStr) -> bool {
    if slot.is_some() {
        return true;
    }
    *slot = Some(lit);
    false
}

/// The literal of `expr`, through the invisible groups of macro-generated attributes.
fn literal(mut expr: &Expr) -> Option<Lit> {
    loop {
        match expr {
            Expr::Lit(lit) => return Some(lit.lit.clone()),
            Expr::Group(group) => expr = &group.expr,
            _ => return None,
        }
    }
}

/// The `crate = path` of `#[sweeper(...)]` on the type, if any. Other sweeper options are
/// `#[derive(Sweepable)]`'s and left to it.
pub fn crate_path(cx: &Ctxt, attrs: &[Attribute]) -> Option<Path> {
    let mut out: Option<Path> = None;
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident(crate::attr::SWEEPER))
    {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(crate::attr::CRATE) {
                let path = crate::attr::crate_path(&meta)?;
                if out.is_some() {
                    cx.error(
                        meta.path.span(),
                        "duplicate sweeper option `crate`; remove this one",
                    );
                } else {
                    out = Some(path);
                }
            } else {
                crate::attr::skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            cx.push(err);
        }
    }
    out
}

/// `#[sweeper(belongs_to = record)]`: the field is data of the record (loaded for it), and
/// may be read in blocks whose record is that variable.
const BELONGS_TO: &str = "belongs_to";
/// `#[sweeper(same_for_everyone)]`: the field is the same for every viewer (site settings),
/// and may be read in any block.
const SAME_FOR_EVERYONE: &str = "same_for_everyone";

/// What the fields' `#[sweeper(...)]` declare about them, and the type's
/// `#[sweeper(same_for_everyone(name, ...))]` about its methods (or fields), for the check of
/// what blocks read.
pub fn declared(cx: &Ctxt, attrs: &[Attribute], data: &syn::Data) -> super::reads::Declared {
    let mut declared = super::reads::Declared::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident(crate::attr::SWEEPER))
    {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(SAME_FOR_EVERYONE) {
                meta.parse_nested_meta(|name| {
                    let ident = name.path.require_ident()?;
                    declared.same_for_everyone.push(ident.to_string());
                    Ok(())
                })
            } else {
                crate::attr::skip_value(&meta).map(drop)
            }
        });
        if let Err(err) = result {
            cx.push(err);
        }
    }
    let fields = match data {
        syn::Data::Struct(data) => &data.fields,
        syn::Data::Enum(_) | syn::Data::Union(_) => return declared,
    };
    for field in fields {
        for attr in field
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident(crate::attr::SWEEPER))
        {
            let Some(name) = &field.ident else {
                cx.error_spanned_by(
                    attr,
                    "`#[sweeper(...)]` declares a named field, and this field has no name",
                );
                continue;
            };
            let name = name.to_string();
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident(BELONGS_TO) {
                    let record: syn::Ident = meta.value()?.parse()?;
                    declared.belongs_to.push((name.clone(), record.to_string()));
                } else if meta.path.is_ident(SAME_FOR_EVERYONE) {
                    declared.same_for_everyone.push(name.clone());
                } else {
                    return Err(meta.error(
                        "unknown sweeper option for a template's field: \
                         `#[sweeper(belongs_to = record)]` (the field is data of the record, \
                         readable in its blocks) or `#[sweeper(same_for_everyone)]` (readable in \
                         any block)",
                    ));
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.push(err);
            }
        }
    }
    declared
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn parse(attrs: &[Attribute]) -> (Option<Template>, Vec<String>) {
        let cx = Ctxt::new();
        let template = Template::from_attrs(&cx, attrs);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        };
        (template, errors)
    }

    #[test]
    fn options_across_attributes() {
        let (t, errors) = parse(&[
            parse_quote!(#[doc = "ignored"]),
            parse_quote!(#[template(path = "blog/article.html", print = "code", blocks = ["a"])]),
            parse_quote!(#[template(escape = "none", syntax = "angle", config = "cfg.toml")]),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let t = t.unwrap();
        assert!(matches!(&t.source, Some(Source::Path(p)) if p.value() == "blog/article.html"));
        assert_eq!(t.config.as_ref().unwrap().value(), "cfg.toml");
        assert_eq!(t.syntax.as_ref().unwrap().value(), "angle");
        assert_eq!(
            t.digest_options(),
            [
                ("escape", "none".to_owned()),
                ("path", "blog/article.html".to_owned()),
                ("syntax", "angle".to_owned()),
            ]
        );
    }

    #[test]
    fn no_attribute_and_no_source() {
        let (t, errors) = parse(&[parse_quote!(#[sweeper(crate = x)])]);
        assert!(t.is_none() && errors.is_empty());
        let (t, errors) = parse(&[parse_quote!(#[template(ext = "html")])]);
        assert!(t.unwrap().source.is_none() && errors.is_empty());
        let (t, _) = parse(&[parse_quote!(#[template(in_doc = true, ext = "html")])]);
        assert!(t.unwrap().in_doc.is_some());
        let (t, _) = parse(&[parse_quote!(#[template(in_doc = false, source = "x")])]);
        assert!(t.unwrap().in_doc.is_none());
    }

    #[test]
    fn mistakes() {
        let (_, errors) = parse(&[
            parse_quote!(#[template(path = "a.html", source = "b", ext = "html", ext = "txt")]),
            parse_quote!(#[template(syntax = angle, unknown = "left to Askama", flag)]),
        ]);
        assert_eq!(
            errors,
            [
                "a template has one `path` or `source`; remove this one",
                "duplicate template option `ext`; remove this one",
                "`syntax` must be a string literal, as in `#[template(syntax = \"...\")]`",
            ]
        );
        let (_, errors) = parse(&[parse_quote!(#[template(path = )])]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("cannot read `#[template(...)]`: "),
            "{errors:?}"
        );
    }

    #[test]
    fn the_crate_option() {
        let cx = Ctxt::new();
        let path = crate_path(
            &cx,
            &[
                parse_quote!(#[sweeper(name = "left to Sweepable", crate = ::renamed, counter)]),
                parse_quote!(#[template(path = "x")]),
            ],
        );
        assert!(cx.check().is_ok());
        assert_eq!(quote::quote!(#path).to_string(), ":: renamed");
    }
}
