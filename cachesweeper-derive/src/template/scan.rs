//! Finds the templates a template depends on: the paths of its `{% include %}`, `{% extends %}`
//! and `{% import %}` tags.
//!
//! Not a parser: it only tells tags from comments, expressions and `{% raw %}` blocks, the way
//! askama_parser 0.16 does (node.rs: `Node::one` tries a comment, then an expression, then a
//! tag; `Comment::parse` nests comments; `Raw::parse` ends at `{% endraw %}` with optional
//! whitespace markers), and reads the string literal after the three keywords as askama_parser
//! does (`str_lit_without_prefix`: the text between the quotes, escapes left as written). It
//! reports every such tag, wherever it is: Askama accepts `extends` and `import` only at the top
//! of a template and rejects the template otherwise, so finding more than Askama would only
//! ever happen in a template Askama does not compile.

use super::syntax::Syntax;

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

/// The templates `source` names, in the order of their tags.
pub fn dependencies<'a>(source: &'a str, syntax: &Syntax) -> Vec<Dependency<'a>> {
    let mut deps = Vec::new();
    let scanner = Scanner {
        src: source.as_bytes(),
        syntax,
    };
    let mut at = 0;
    // An unclosed comment, expression or tag ends the scan: Askama rejects such a template.
    while let Some((open, start)) = scanner.next_opener(at) {
        at = match open {
            Opener::Comment => scanner.skip_comment(start + syntax.comment_start.len()),
            Opener::Expr => scanner.skip_past(start + syntax.expr_start.len(), &syntax.expr_end),
            Opener::Block => {
                let body = start + syntax.block_start.len();
                let (tag, after_tag) = scanner.tag_name(body);
                let kind = match tag {
                    b"include" => Some(Kind::Include),
                    b"extends" => Some(Kind::Extends),
                    b"import" => Some(Kind::Import),
                    _ => None,
                };
                if let Some(kind) = kind
                    && let Some(path) = scanner.string_literal(after_tag)
                {
                    deps.push(Dependency {
                        kind,
                        path: &source[path],
                        line: line_of(source, start),
                    });
                }
                let end = scanner.skip_past(body, &syntax.block_end);
                match (tag, end) {
                    (b"raw", Some(end)) => scanner.skip_raw(end),
                    _ => end,
                }
            }
        }
        .unwrap_or(source.len());
    }
    deps
}

#[derive(Clone, Copy)]
enum Opener {
    Comment,
    Expr,
    Block,
}

struct Scanner<'a> {
    src: &'a [u8],
    syntax: &'a Syntax,
}

impl Scanner<'_> {
    fn at(&self, i: usize, s: &str) -> bool {
        self.src[i..].starts_with(s.as_bytes())
    }

    fn find(&self, from: usize, s: &str) -> Option<usize> {
        let needle = s.as_bytes();
        self.src
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| from + i)
    }

    /// The first comment, expression or tag at or after `from`; at one position, a comment
    /// wins over an expression over a tag, as in askama_parser's `Node::one`.
    fn next_opener(&self, from: usize) -> Option<(Opener, usize)> {
        let syntax = self.syntax;
        (from..self.src.len()).find_map(|i| {
            if self.at(i, &syntax.comment_start) {
                Some((Opener::Comment, i))
            } else if self.at(i, &syntax.expr_start) {
                Some((Opener::Expr, i))
            } else if self.at(i, &syntax.block_start) {
                Some((Opener::Block, i))
            } else {
                None
            }
        })
    }

    /// Past the end of a comment whose opener ends at `from`; comments nest.
    fn skip_comment(&self, mut from: usize) -> Option<usize> {
        let (open, close) = (&self.syntax.comment_start, &self.syntax.comment_end);
        let mut depth = 0usize;
        loop {
            let next_open = self.find(from, open);
            let next_close = self.find(from, close)?;
            match next_open {
                Some(o) if o < next_close => {
                    depth += 1;
                    from = o + open.len();
                }
                _ => {
                    from = next_close + close.len();
                    match depth.checked_sub(1) {
                        Some(d) => depth = d,
                        None => return Some(from),
                    }
                }
            }
        }
    }

    /// Past the first `end` at or after `from` that is not inside a string or char literal.
    fn skip_past(&self, mut i: usize, end: &str) -> Option<usize> {
        while i < self.src.len() {
            if self.at(i, end) {
                return Some(i + end.len());
            }
            i = match self.src[i] {
                b'"' => self.string_end(i)?,
                b'\'' => self.char_end(i).unwrap_or(i + 1),
                _ => i + 1,
            };
        }
        None
    }

    /// Past the closing quote of the string literal opening at `i`.
    fn string_end(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        while j < self.src.len() {
            match self.src[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    }

    /// Past a char literal (`'a'`, `'\''`, `'é'`) opening at `i`; `None` for a lone quote.
    fn char_end(&self, i: usize) -> Option<usize> {
        let rest = self.src.get(i + 1..)?;
        if rest.first() == Some(&b'\\') {
            // An escape: `'\n'`, `'\''`, `'\u{1F600}'`.
            let close = rest.iter().skip(2).take(9).position(|&b| b == b'\'')? + 2;
            return Some(i + 1 + close + 1);
        }
        // The length of the UTF-8 character after the quote, from its first byte.
        let len = match *rest.first()? {
            0xF0.. => 4,
            0xE0.. => 3,
            0x80.. => 2,
            _ => 1,
        };
        (rest.get(len) == Some(&b'\'')).then_some(i + 1 + len + 1)
    }

    /// The tag's keyword, after an optional whitespace marker (`-`, `+`, `~`) and spaces, and
    /// where it ends.
    fn tag_name(&self, mut i: usize) -> (&[u8], usize) {
        if matches!(self.src.get(i), Some(b'-' | b'+' | b'~')) {
            i += 1;
        }
        while self.src.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        while self
            .src
            .get(i)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        {
            i += 1;
        }
        (&self.src[start..i], i)
    }

    /// The text between the quotes of the string literal at `i` (after spaces), if there is one.
    fn string_literal(&self, mut i: usize) -> Option<std::ops::Range<usize>> {
        while self.src.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if self.src.get(i) != Some(&b'"') {
            return None;
        }
        let end = self.string_end(i)?;
        Some(i + 1..end - 1)
    }

    /// Past the `{% endraw %}` of a raw block whose opening tag ends at `from` (askama_parser's
    /// `Raw::parse`: `endraw`, preceded by the block opener, a whitespace marker and spaces,
    /// followed by spaces, a marker and the block closer).
    fn skip_raw(&self, from: usize) -> Option<usize> {
        let syntax = self.syntax;
        let mut search = from;
        loop {
            let keyword = self.find(search, "endraw")?;
            search = keyword + "endraw".len();
            let mut before = &self.src[from..keyword];
            before = before.trim_ascii_end();
            if let [rest @ .., b'-' | b'+' | b'~'] = before {
                before = rest;
            }
            if !before.ends_with(syntax.block_start.as_bytes()) {
                continue;
            }
            let mut after = search;
            while self.src.get(after).is_some_and(u8::is_ascii_whitespace) {
                after += 1;
            }
            if matches!(self.src.get(after), Some(b'-' | b'+' | b'~'))
                && self.at(after + 1, &syntax.block_end)
            {
                after += 1;
            }
            if self.at(after, &syntax.block_end) {
                return Some(after + syntax.block_end.len());
            }
        }
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
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
            paths(r#"{% includes "x" %}{% set include = "y" %}{% include x %}{{ include }}"#),
            []
        );
        // The path is the text between the quotes, escapes as written (as Askama reads it).
        assert_eq!(
            paths(r#"{% include "a\"b.html" %}"#),
            [(Kind::Include, r#"a\"b.html"#)]
        );
    }

    #[test]
    fn unclosed_things_end_the_scan() {
        assert_eq!(paths(r#"{# {% include "a.html" %}"#), []);
        assert_eq!(paths(r#"{% include "a.html""#), [(Kind::Include, "a.html")]);
        assert_eq!(paths(r#"{% raw %}{% include "a.html" %}"#), []);
        assert_eq!(paths(r#"{{ "x %}{% include "a.html" %}"#), []);
        assert_eq!(paths("{% include \"a.html"), []);
        assert_eq!(paths("{% include 'é"), []);
    }

    #[test]
    fn a_custom_syntax() {
        let syntax = Syntax {
            block_start: "<%".into(),
            block_end: "%>".into(),
            expr_start: "<<".into(),
            expr_end: ">>".into(),
            comment_start: "<#".into(),
            comment_end: "#>".into(),
        };
        let source = r#"{% include "default.html" %}<# <% include "c.html" %> #><% include "x.html" %><% raw %><% include "r.html" %><% endraw %>"#;
        let found: Vec<&str> = dependencies(source, &syntax)
            .iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(found, ["x.html"]);
    }
}
