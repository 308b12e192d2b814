//! Finds the templates a template depends on: the paths of its `{% include %}`, `{% extends %}`
//! and `{% import %}` tags, read with askama_parser as Askama reads them (the path is the text
//! between the quotes, escapes left as written).
//!
//! Like askama_derive's `find_used_templates` (input.rs), the tags are looked for in the bodies
//! of `if`, `match`, `for`, `block`, `macro`, `call` and `filter` blocks too; also in `let`
//! blocks, which askama_derive 0.16.1 does not search but still renders. `extends` and `import`
//! are reported wherever they are: Askama accepts them only at the top of a template and
//! rejects the template otherwise, so finding more than Askama would only ever happen in a
//! template Askama does not compile.
//!
//! A template askama_parser cannot parse has no dependencies here. Askama's derive rejects it
//! with an error that says where and why; reporting it again, or guessing at its tags and
//! reporting the templates they name as missing, would only add noise to that one error. The
//! template's own bytes are still in the digest and `include_bytes!`'d, so fixing it rebuilds
//! and recomputes the digest with its dependencies.

use askama_parser::Node;

use super::syntax::{self, Syntax};

/// How a template names another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{% include "path" %}`
    Include,
    /// `{% extends "path" %}`
    Extends,
    /// `{% import "path" as scope %}`
    Import,
}

impl Kind {
    /// "included", "extended" or "imported", for messages.
    pub fn participle(self) -> &'static str {
        match self {
            Kind::Include => "included",
            Kind::Extends => "extended",
            Kind::Import => "imported",
        }
    }
}

/// A template named by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency<'a> {
    /// How it is named.
    pub kind: Kind,
    /// The path as written between the quotes.
    pub path: &'a str,
    /// The line of the tag, from 1.
    pub line: usize,
}

/// The templates `source` names, in the order of their tags; none if it does not parse.
pub fn dependencies<'a>(source: &'a str, syntax: &Syntax) -> Vec<Dependency<'a>> {
    let Some(ast) = syntax.parse(source) else {
        return Vec::new();
    };
    let mut deps = Vec::new();
    syntax::walk(ast.nodes(), &mut |node| {
        let (kind, path) = match node {
            Node::Include(tag) => (Kind::Include, tag.path),
            Node::Extends(tag) => (Kind::Extends, tag.path),
            Node::Import(tag) => (Kind::Import, tag.path),
            _ => return,
        };
        // The node's span starts after the tag's opener (`import`'s at its keyword): the line
        // is that of the opener, only whitespace and a whitespace marker away.
        let offset = node.span().byte_range().map_or(0, |range| range.start);
        let opener = source[..offset].rfind(&syntax.block_start);
        deps.push(Dependency {
            kind,
            path,
            line: syntax::line_of(source, opener.unwrap_or(offset)),
        });
    });
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(source: &str) -> Vec<(Kind, &str)> {
        dependencies(source, &Syntax::default())
            .into_iter()
            .map(|d| (d.kind, d.path))
            .collect()
    }

    #[test]
    fn the_three_tags_with_whitespace_markers() {
        let source = r#"{% extends "layout.html" %}
{%- import "macros.html" as m -%}
{% block content %}
  {%+ include "a.html" ~%}
  {%~include"b.html"%}
  {% for x in xs %}{%- include   "blog/c.html"   -%}{% endfor %}
{% endblock %}"#;
        assert_eq!(
            paths(source),
            [
                (Kind::Extends, "layout.html"),
                (Kind::Import, "macros.html"),
                (Kind::Include, "a.html"),
                (Kind::Include, "b.html"),
                (Kind::Include, "blog/c.html"),
            ]
        );
        let lines: Vec<usize> = dependencies(source, &Syntax::default())
            .iter()
            .map(|d| d.line)
            .collect();
        assert_eq!(lines, [1, 2, 4, 5, 6]);

        // A tag over several lines is on the line of its opener.
        let lines: Vec<usize> = dependencies(
            "{%\n extends\n \"l.html\" %}\n{%-\nimport \"m.html\" as m %}{%\n\ninclude \"i.html\" %}",
            &Syntax::default(),
        )
        .iter()
        .map(|d| d.line)
        .collect();
        assert_eq!(lines, [1, 4, 5]);
    }

    #[test]
    fn nested_in_every_kind_of_block_in_template_order() {
        let source = r#"{% import "top.html" as t %}
{% macro m(x) %}{% include "in-macro.html" %}{% endmacro %}
{% if a %}{% include "if.html" %}{% else if b %}{% include "elif.html" %}{% else %}{% include "else.html" %}{% endif %}
{% match v %}{% when Some with (x) %}{% include "when.html" %}{% else %}{% include "match-else.html" %}{% endmatch %}
{% for x in xs %}{% if x %}{% include "for-if.html" %}{% endif %}{% else %}{% include "for-else.html" %}{% endfor %}
{% block b %}{% filter upper %}{% include "filter.html" %}{% endfilter %}{% endblock %}
{% call m(1) %}{% include "call.html" %}{% endcall %}
{% let s %}{% include "let.html" %}{% endlet %}
{% include "last.html" %}"#;
        let found = dependencies(source, &Syntax::default());
        assert_eq!(
            found.iter().map(|d| d.path).collect::<Vec<_>>(),
            [
                "top.html",
                "in-macro.html",
                "if.html",
                "elif.html",
                "else.html",
                "when.html",
                "match-else.html",
                "for-if.html",
                "for-else.html",
                "filter.html",
                "call.html",
                "let.html",
                "last.html",
            ]
        );
        assert_eq!(found[0].kind, Kind::Import);
        assert!(found[1..].iter().all(|d| d.kind == Kind::Include));
        assert_eq!(found.last().unwrap().line, 9);
    }

    #[test]
    fn comments_raw_blocks_and_expressions_are_skipped() {
        let source = r#"{# {% include "commented.html" %} #}
{# outer {# nested #} {% include "still-commented.html" %} #}
{% raw %}{% include "raw.html" %}{% endraw %}
{% raw -%} {%- include "raw2.html" %} endraw {%- endraw +%}
{{ "{% include \"expr.html\" %}" }}
{% let s = "%} {% include \"string.html\" %}" %}
{% if c == '"' %}{% include "after-char.html" %}{% endif %}
{% include "real.html" %}"#;
        assert_eq!(
            paths(source),
            [
                (Kind::Include, "after-char.html"),
                (Kind::Include, "real.html")
            ]
        );
    }

    #[test]
    fn look_alikes_are_not_dependencies() {
        assert_eq!(
            paths(r#"{% let include = "y" %}{{ include }}{{ "{% include \"x\" %}" }}"#),
            []
        );
        // The path is the text between the quotes, escapes as written (as Askama reads it).
        assert_eq!(
            paths(r#"{% include "a\"b.html" %}"#),
            [(Kind::Include, r#"a\"b.html"#)]
        );
    }

    #[test]
    fn a_template_that_does_not_parse_has_none() {
        // Askama rejects all of these with its own error.
        for source in [
            r#"{% include "a.html" %}{% includes "x" %}"#,
            r#"{% include "a.html" %}{% include x %}"#,
            r#"{% include "a.html" %}{% bogus %}"#,
            r#"{% include "a.html""#,
            r#"{# {% include "a.html" %}"#,
            r#"{% raw %}{% include "a.html" %}"#,
            r#"{{ "x %}{% include "a.html" %}"#,
            "{% include \"a.html",
            "{% include 'é",
            r#"<p>{% include "a.html" %}</p>{% extends "late.html" %}"#,
        ] {
            assert!(Syntax::default().parse(source).is_none(), "{source}");
            assert_eq!(paths(source), [], "{source}");
        }
    }

    #[test]
    fn a_custom_syntax() {
        let syntax = Syntax {
            block_start: "<%".into(),
            block_end: "%>".into(),
            expr_start: "<$".into(),
            expr_end: "$>".into(),
            comment_start: "<#".into(),
            comment_end: "#>".into(),
        };
        let source = r#"{% include "default.html" %}<# <% include "c.html" %> #><% include "x.html" %><% raw %><% include "r.html" %><% endraw %>"#;
        let found: Vec<&str> = dependencies(source, &syntax)
            .iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(found, ["x.html"]);
        // Delimiters askama_parser does not accept (Askama reports them): nothing is found.
        let invalid = Syntax {
            block_start: "<".into(),
            ..syntax
        };
        assert_eq!(dependencies(r#"< include "x.html" %>"#, &invalid), []);
    }
}
