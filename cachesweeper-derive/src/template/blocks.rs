//! The `cachesweeper` filter blocks of a template family, and the rule they must keep: every
//! block has a record, a time to live and a literal name, and no two blocks cache the same record
//! under the same key parts (issue 10).
//!
//! The templates are read with askama_parser, the parser Askama's derive uses (pinned to the
//! same version), so a block is found exactly where Askama finds one: not in comments, `raw`
//! blocks or strings, and with its arguments parsed as Askama passes them to the filter. A
//! template that does not parse is skipped: Askama's own derive reports it.
//!
//! A block is `{% filter cachesweeper(...) %}` or `{% filter some::path::cachesweeper(...) %}`,
//! also as one filter of a chain (`{% filter cachesweeper(...)|upper %}`). Two blocks share a key
//! when their record expressions and their key parts (the name and what follows) are the same
//! expressions; named arguments (`digest=false`) do not count. A block is identified by its
//! template and position, and each template of the family is read once, so a partial included
//! twice is one block, not two.

use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};

use askama_parser::node::FilterBlock;
use askama_parser::{Expr, Filter, Node, Num, PathOrIdentifier, WithSpan};

use super::syntax::{Syntax, line_of, walk};

/// The filter's name, as written in templates (last component of a path).
pub const FILTER: &str = "cachesweeper";

/// One template of the family.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its name relative to its template directory, or `None` for the inline `source`.
    pub name: Option<String>,
    /// Its text.
    pub text: String,
}

/// Where a block is, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub template: Option<String>,
    pub line: usize,
}

impl Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.template {
            Some(name) => write!(f, "`{name}:{}`", self.line),
            None => write!(f, "line {} of the inline `source`", self.line),
        }
    }
}

/// What makes two blocks share a cache entry: the record and the key parts, as parsed
/// expressions (their `Debug` form, which leaves out positions).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    record: String,
    parts: Vec<String>,
}

/// A block that keeps the rule, for the duplicate check.
struct Keyed {
    place: Place,
    key: Key,
    /// The record as written, for messages.
    record: String,
    /// The key parts as written, for messages.
    parts: String,
}

/// Every breach of the rule in `templates` (the root first), one message each. A template
/// that does not parse, or delimiters that are not valid, are skipped: Askama reports them.
pub fn check(syntax: &Syntax, templates: &[Template]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut keyed = Vec::new();
    for template in templates {
        let Some(ast) = syntax.parse(&template.text) else {
            continue;
        };
        for (block, filter) in blocks(ast.nodes()) {
            let offset = block.span().byte_range().map_or(0, |range| range.start);
            let place = Place {
                template: template.name.clone(),
                line: line_of(&template.text, offset),
            };
            if let Some(ok) = check_block(filter, place, &mut errors) {
                keyed.push(ok);
            }
        }
    }
    duplicates(&keyed, &mut errors);
    errors
}

/// The `cachesweeper` filters of the filter blocks in `nodes`, in template order, nested ones
/// included.
fn blocks<'n, 'a>(
    nodes: &'n [Box<Node<'a>>],
) -> Vec<(&'n WithSpan<FilterBlock<'a>>, &'n Filter<'a>)> {
    let mut out = Vec::new();
    walk(nodes, &mut |node| {
        let Node::FilterBlock(block) = node else {
            return;
        };
        // A chain `a|b|c` is parsed as `c(b(a(<body>)))`: walk it down to the body.
        let mut chain = Vec::new();
        let mut filter = &block.filters;
        loop {
            if is_cachesweeper(&filter.name) {
                chain.push((block, filter));
            }
            match filter.arguments.first().map(|arg| &***arg) {
                Some(Expr::Filter(inner)) => filter = inner,
                _ => break,
            }
        }
        out.extend(chain.into_iter().rev());
    });
    out
}

/// Whether `filter` is the `cachesweeper` filter.
pub fn is_cachesweeper_filter(filter: &Filter<'_>) -> bool {
    is_cachesweeper(&filter.name)
}

/// A `cachesweeper` filter's positional arguments: the record, the time to live, the name, the
/// key parts. The first argument, the block's body, and named arguments (`digest=false`, last)
/// are left out.
pub fn block_args<'f, 'a>(filter: &'f Filter<'a>) -> Vec<&'f Expr<'a>> {
    filter
        .arguments
        .iter()
        .skip(1)
        .map(|arg| &***arg)
        .filter(|arg| !matches!(arg, Expr::NamedArgument(..)))
        .collect()
}

fn is_cachesweeper(name: &PathOrIdentifier<'_>) -> bool {
    filter_named(name, FILTER)
}

/// Whether a filter's name (`hole`, `cachesweeper::filters::hole`) ends in `wanted`.
pub fn filter_named(name: &PathOrIdentifier<'_>, wanted: &str) -> bool {
    match name {
        PathOrIdentifier::Identifier(name) => **name == wanted,
        PathOrIdentifier::Path(path) => path.last().is_some_and(|last| *last.name == wanted),
    }
}

/// Checks one block's arguments, recording what is wrong in `errors`; the block's key if it has
/// a record and a literal name.
fn check_block(filter: &Filter<'_>, place: Place, errors: &mut Vec<String>) -> Option<Keyed> {
    let args = block_args(filter);
    let call = format!("{}({})", show_name(&filter.name), show_list(&args));
    let (record, ttl, name, rest) = match args.as_slice() {
        [] => {
            errors.push(format!(
                "the `{FILTER}` block at {place} has no record: `{call}` needs the record, a time \
                 to live and a name, as in `{FILTER}(post, 300, \"body\")`"
            ));
            return None;
        }
        [record] => {
            let record = show(record);
            errors.push(format!(
                "the `{FILTER}` block at {place} has no time to live and no name: write \
                 `{FILTER}({record}, 300, \"body\")`, with the block's own name"
            ));
            return None;
        }
        [record, ttl] => {
            check_ttl(ttl, &place, errors);
            let (record, ttl) = (show(record), show(ttl));
            errors.push(format!(
                "the `{FILTER}` block at {place} has no name: write `{FILTER}({record}, {ttl}, \
                 \"body\")`, with the block's own name; without names, two blocks on \
                 `{record}` would share one cache entry and the second would show the first \
                 one's HTML"
            ));
            return None;
        }
        [record, ttl, name, rest @ ..] => (*record, *ttl, *name, rest),
    };
    check_ttl(ttl, &place, errors);
    let mut ok = true;
    if !matches!(name, Expr::StrLit(lit) if lit.prefix.is_none()) {
        ok = false;
        errors.push(format!(
            "the name `{}` of the `{FILTER}` block at {place} is not a string literal: write the \
             name in quotes, as in `{FILTER}({}, {}, \"body\")`, so that it can be checked \
             against the other blocks' names; pass values after the name, as extra key parts",
            show(name),
            show(record),
            show(ttl),
        ));
    }
    for part in rest {
        if let Expr::NumLit(text, Num::Float(..)) = part {
            ok = false;
            errors.push(format!(
                "the key part `{text}` of the `{FILTER}` block at {place} can never be part of a \
                 cache key: a float has no stable key form (`0.1 + 0.2` is not `0.3`); use a \
                 string, an integer, a bool or a char"
            ));
        }
    }
    ok.then(|| Keyed {
        place,
        key: Key {
            record: format!("{record:?}"),
            parts: std::iter::once(name)
                .chain(rest.iter().copied())
                .map(|part| format!("{part:?}"))
                .collect(),
        },
        record: show(record),
        parts: show_list(
            &std::iter::once(name)
                .chain(rest.iter().copied())
                .collect::<Vec<_>>(),
        ),
    })
}

/// A literal time to live must be a whole, non-negative number of seconds; any other
/// expression (a variable, a `Duration`) is left to the compiler.
fn check_ttl(ttl: &Expr<'_>, place: &Place, errors: &mut Vec<String>) {
    let what = match ttl {
        Expr::NumLit(_, Num::Float(..)) => "not a whole number of seconds",
        Expr::NumLit(text, Num::Int(..)) if text.starts_with('-') => "negative",
        Expr::Unary("-", inner) if matches!(***inner, Expr::NumLit(..)) => "negative",
        Expr::StrLit(_) => "a string, not a number of seconds",
        Expr::CharLit(_) => "a char, not a number of seconds",
        Expr::BoolLit(_) => "a bool, not a number of seconds",
        _ => return,
    };
    errors.push(format!(
        "the time to live `{}` of the `{FILTER}` block at {place} is {what}: write whole seconds \
         as an integer (`300`; `0` renders the block without storing it), or pass a \
         `std::time::Duration`",
        show(ttl)
    ));
}

/// Reports every block whose key an earlier block already has, at the later one.
fn duplicates(keyed: &[Keyed], errors: &mut Vec<String>) {
    let mut first: HashMap<&Key, &Keyed> = HashMap::new();
    for block in keyed {
        match first.get(&block.key) {
            Some(earlier) => errors.push(format!(
                "the `{FILTER}` blocks at {} and at {} share one cache key: both cache \
                 `{}` under the key parts {}, so one would show the other's HTML; give each \
                 block its own name (the argument after the time to live)",
                earlier.place, block.place, block.record, block.parts,
            )),
            None => {
                first.insert(&block.key, block);
            }
        }
    }
}

/// A filter's name as written (`upper`, `cachesweeper::filters::hole`).
pub fn show_name(name: &PathOrIdentifier<'_>) -> String {
    match name {
        PathOrIdentifier::Identifier(name) => (**name).to_owned(),
        PathOrIdentifier::Path(path) => path
            .iter()
            .map(|component| *component.name)
            .collect::<Vec<_>>()
            .join("::"),
    }
}

fn show_list(exprs: &[&Expr<'_>]) -> String {
    exprs.iter().map(|e| show(e)).collect::<Vec<_>>().join(", ")
}

fn show_boxed(exprs: &[WithSpan<Box<Expr<'_>>>]) -> String {
    exprs.iter().map(|e| show(e)).collect::<Vec<_>>().join(", ")
}

/// An expression as it would be written, for messages (`…` for the rare kinds left out).
pub fn show(expr: &Expr<'_>) -> String {
    let mut out = String::new();
    let _ = match expr {
        Expr::BoolLit(value) => write!(out, "{value}"),
        Expr::NumLit(text, _) => out.write_str(text),
        Expr::StrLit(lit) => match lit.prefix {
            Some(prefix) => write!(out, "{prefix}\"{}\"", lit.content),
            None => write!(out, "\"{}\"", lit.content),
        },
        Expr::CharLit(lit) => write!(out, "'{}'", lit.content),
        Expr::Var(name) => out.write_str(name),
        Expr::Path(path) => out.write_str(
            &path
                .iter()
                .map(|component| *component.name)
                .collect::<Vec<_>>()
                .join("::"),
        ),
        Expr::AssociatedItem(inner, item) => write!(out, "{}.{}", show(inner), *item.name),
        Expr::Index(inner, index) => write!(out, "{}[{}]", show(inner), show(index)),
        Expr::Call(call) => write!(out, "{}({})", show(&call.path), show_boxed(&call.args)),
        Expr::Group(inner) => write!(out, "({})", show(inner)),
        Expr::Unary(op, inner) => write!(out, "{op}{}", show(inner)),
        Expr::BinOp(op) => write!(out, "{} {} {}", show(&op.lhs), op.op, show(&op.rhs)),
        Expr::Try(inner) => write!(out, "{}?", show(inner)),
        Expr::Tuple(items) => write!(out, "({})", show_boxed(items)),
        Expr::Array(items) => write!(out, "[{}]", show_boxed(items)),
        Expr::NamedArgument(name, inner) => write!(out, "{}={}", **name, show(inner)),
        Expr::Filter(filter) => match filter.arguments.split_first() {
            Some((input, [])) => {
                write!(out, "{}|{}", show(input), show_name(&filter.name))
            }
            Some((input, args)) => write!(
                out,
                "{}|{}({})",
                show(input),
                show_name(&filter.name),
                show_boxed(args)
            ),
            None => out.write_str(&show_name(&filter.name)),
        },
        _ => out.write_str("…"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(text: &str) -> Template {
        Template {
            name: None,
            text: text.into(),
        }
    }

    fn file(name: &str, text: &str) -> Template {
        Template {
            name: Some(name.into()),
            text: text.into(),
        }
    }

    fn errors(templates: &[Template]) -> Vec<String> {
        check(&Syntax::default(), templates)
    }

    #[test]
    fn named_blocks_on_one_record_are_fine() {
        let page = inline(
            r#"{% filter cachesweeper(post, 300, "body") %}<p>{{ post.body }}</p>{% endfilter %}
{% filter cachesweeper::filters::cachesweeper(post, 300, "footer", digest=false) %}x{% endfilter %}
{% for c in post.comments %}{% filter cachesweeper(c, ttl, "comment", lang) %}{% endfilter %}{% endfor %}
{% filter cachesweeper(other, 300, "body") %}{% endfilter %}
{# {% filter cachesweeper(post, 300, "body") %}{% endfilter %} #}
{% raw %}{% filter cachesweeper(post, 300, "body") %}{% endfilter %}{% endraw %}"#,
        );
        assert_eq!(errors(&[page]), Vec::<String>::new());
    }

    #[test]
    fn two_blocks_with_one_key() {
        let page = inline(
            "{% filter cachesweeper(post, 300, \"body\") %}a{% endfilter %}\n\
             {% if x %}{% filter cachesweeper(post, 60, \"body\") %}b{% endfilter %}{% endif %}",
        );
        assert_eq!(
            errors(&[page]),
            [
                "the `cachesweeper` blocks at line 1 of the inline `source` and at line 2 of the \
                 inline `source` share one cache key: both cache `post` under the key parts \
                 \"body\", so one would show the other's HTML; give each block its own name (the \
                 argument after the time to live)"
            ]
        );
    }

    #[test]
    fn a_key_shared_across_an_include_and_a_partial_included_twice() {
        let page = file(
            "page.html",
            "{% include \"part.html\" %}\n{% include \"part.html\" %}\n\
             {% filter x::cachesweeper(post, 300, \"body\", 2) %}{% endfilter %}",
        );
        let part = file(
            "part.html",
            "\n{% filter cachesweeper(post, 300, \"footer\") %}{% endfilter %}\n\
             {% filter cachesweeper(post, 300, \"body\", 2)|upper %}{% endfilter %}",
        );
        let errors = errors(&[page, part]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "the `cachesweeper` blocks at `page.html:3` and at `part.html:3` share one cache key: both cache `post` under the key parts \"body\", 2,"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_arguments() {
        let errors = errors(&[inline(
            "{% filter cachesweeper() %}{% endfilter %}{% filter cachesweeper %}{% endfilter %}\n\
             {% filter cachesweeper(post) %}{% endfilter %}\n\
             {% filter cachesweeper(post, 300) %}{% endfilter %}\n\
             {% filter cachesweeper(post, 300, digest=false) %}{% endfilter %}",
        )]);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("at line 1 of the inline `source` has no record"));
        assert!(errors[1].contains("has no record: `cachesweeper()` needs"));
        assert!(errors[2].contains(
            "at line 2 of the inline `source` has no time to live and no name: write `cachesweeper(post, 300, \"body\")`"
        ));
        assert!(errors[3].contains("at line 3 of the inline `source` has no name"));
        assert!(errors[4].contains("at line 4 of the inline `source` has no name"));
    }

    #[test]
    fn literal_ttls_names_and_key_parts() {
        let errors = errors(&[file(
            "p.html",
            "{% filter cachesweeper(a, 1.5, \"a\") %}{% endfilter %}\n\
             {% filter cachesweeper(b, \"300\", \"b\") %}{% endfilter %}\n\
             {% filter cachesweeper(c, -1, \"c\") %}{% endfilter %}\n\
             {% filter cachesweeper(d, ttl, name) %}{% endfilter %}\n\
             {% filter cachesweeper(e, Duration::from_secs(5), \"e\", 0.5, true, 'x', 1) %}{% endfilter %}\n\
             {% filter cachesweeper(f, 0, 7) %}{% endfilter %}",
        )]);
        assert_eq!(
            errors,
            [
                "the time to live `1.5` of the `cachesweeper` block at `p.html:1` is not a whole number of seconds: write whole seconds as an integer (`300`; `0` renders the block without storing it), or pass a `std::time::Duration`",
                "the time to live `\"300\"` of the `cachesweeper` block at `p.html:2` is a string, not a number of seconds: write whole seconds as an integer (`300`; `0` renders the block without storing it), or pass a `std::time::Duration`",
                "the time to live `-1` of the `cachesweeper` block at `p.html:3` is negative: write whole seconds as an integer (`300`; `0` renders the block without storing it), or pass a `std::time::Duration`",
                "the name `name` of the `cachesweeper` block at `p.html:4` is not a string literal: write the name in quotes, as in `cachesweeper(d, ttl, \"body\")`, so that it can be checked against the other blocks' names; pass values after the name, as extra key parts",
                "the key part `0.5` of the `cachesweeper` block at `p.html:5` can never be part of a cache key: a float has no stable key form (`0.1 + 0.2` is not `0.3`); use a string, an integer, a bool or a char",
                "the name `7` of the `cachesweeper` block at `p.html:6` is not a string literal: write the name in quotes, as in `cachesweeper(f, 0, \"body\")`, so that it can be checked against the other blocks' names; pass values after the name, as extra key parts",
            ]
        );
    }

    #[test]
    fn unparsable_templates_and_other_filters_are_left_to_askama() {
        assert!(errors(&[inline("{% filter cachesweeper(post) %}")]).is_empty());
        assert!(
            errors(&[inline(
                "{% filter upper %}{{ x|cachesweeper(post) }}{% endfilter %}"
            )])
            .is_empty()
        );
    }

    #[test]
    fn a_custom_syntax() {
        let syntax = Syntax {
            block_start: "<%".into(),
            block_end: "%>".into(),
            ..Syntax::default()
        };
        let errors = check(
            &syntax,
            &[inline(
                "<% filter cachesweeper(post, 1) %><% endfilter %>{% filter cachesweeper(post) %}",
            )],
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("has no name"));
    }
}
