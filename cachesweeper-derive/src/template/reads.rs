//! What each `cachesweeper` block reads, and the rule it must keep: a cached block's HTML is
//! served to every viewer whose request has the same key, so everything the block (and what it
//! includes) reads must be the same for all of them (issue 23). A block may read
//!
//! - its record's variable, and anything reached through it (the loop row the record came from
//!   too: the record's version must cover what the block shows of it);
//! - the values of its key parts (`viewer.id` after the name lets it read `viewer.id` and what
//!   is reached through it, not the rest of `viewer`);
//! - names bound inside the block (`let`, `for`, `if let`, `match` arms);
//! - the template's fields declared `#[sweeper(belongs_to = record)]` (data loaded for the
//!   record, in blocks whose record is that variable) or `#[sweeper(same_for_everyone)]`.
//!
//! Anything else (a viewer, a CSRF token, `is_admin`, a preview flag, a variable bound outside
//! the block) is an error naming the block, the value and the fixes. A nested block is read by
//! every block around it too: its HTML is part of theirs.
//!
//! The walk follows `include`s (which share the including template's variables). It does not
//! look into macro bodies or into blocks that a child template overrides in its parent.

use std::collections::HashMap;

use askama_parser::node::{FilterBlock, Loop};
use askama_parser::{Expr, Filter, LetValueOrBlock, Node, Target, WithSpan};

use super::blocks::{
    FILTER, Place, Template, block_args, filter_named, is_cachesweeper_filter, show, show_name,
};
use super::syntax::{Syntax, line_of};

/// How the template's fields are declared (`#[sweeper(...)]` on a field).
#[derive(Debug, Default)]
pub struct Declared {
    /// `#[sweeper(belongs_to = record)]`: (field, the record's variable).
    pub belongs_to: Vec<(String, String)>,
    /// `#[sweeper(same_for_everyone)]`.
    pub same_for_everyone: Vec<String>,
}

impl Declared {
    /// Whether the template's field `name` may be read in a block whose record is the variable
    /// `record`: it is the same for everyone, or it belongs to that record, or to a field that
    /// may be read there (`notes` of `post`, itself of `blog`, in `blog`'s block).
    fn allows(&self, name: &str, record: Option<&str>) -> bool {
        let mut name = name;
        // A chain of declarations is as long as the fields are many; a cycle ends it.
        for _ in 0..=self.belongs_to.len() {
            if self.same_for_everyone.iter().any(|field| field == name) {
                return true;
            }
            let Some((_, owner)) = self.belongs_to.iter().find(|(field, _)| field == name) else {
                return false;
            };
            if Some(owner.as_str()) == record {
                return true;
            }
            name = owner;
        }
        false
    }
}

/// What the walk found in a template family.
#[derive(Debug, Default)]
pub struct Reads {
    /// Every read that breaks the rule, one message each.
    pub errors: Vec<String>,
    /// Whether the family uses the `hole` filter: the page must then fill holes.
    pub holes: bool,
}

/// The name of the filter that makes a hole.
const HOLE: &str = "hole";

/// What the blocks of `templates` (the root first) read.
pub fn check(syntax: &Syntax, templates: &[Template], declared: &Declared) -> Reads {
    let parsed: Vec<_> = templates
        .iter()
        .map(|template| (template, syntax.parse(&template.text)))
        .collect();
    let by_name: HashMap<&str, usize> = templates
        .iter()
        .enumerate()
        .filter_map(|(i, template)| Some((template.name.as_deref()?, i)))
        .collect();
    let mut checker = Checker {
        templates: &parsed,
        by_name,
        declared,
        scope: Vec::new(),
        blocks: Vec::new(),
        including: Vec::new(),
        errors: Vec::new(),
        holes: false,
    };
    // The root: the other templates are read where it includes them (an included template
    // read on its own would not know the variables its includer binds around it).
    if let Some((template, Some(ast))) = parsed.first() {
        checker.nodes(template, ast.nodes());
    }
    Reads {
        errors: checker.errors,
        holes: checker.holes,
    }
}

/// A block being walked: where it is and what it may read.
struct Block {
    place: Place,
    /// The variable its record is reached through.
    record: Option<String>,
    /// Its key parts after the name, as access paths (`["viewer", "id"]`).
    keys: Vec<Vec<String>>,
    /// How many names were bound when it began: those after were bound inside it.
    bound_before: usize,
    /// `digest=false`: its key stays the same across template edits.
    keeps_key: bool,
}

struct Checker<'t, 'a> {
    templates: &'t [(&'t Template, Option<askama_parser::Ast<'a>>)],
    by_name: HashMap<&'t str, usize>,
    declared: &'t Declared,
    /// The names bound where the walk is, innermost last.
    scope: Vec<String>,
    /// The blocks around the walk, innermost last.
    blocks: Vec<Block>,
    /// The templates being included, to stop at a cycle.
    including: Vec<usize>,
    errors: Vec<String>,
    /// Whether a `hole` filter was met.
    holes: bool,
}

impl<'t, 'a> Checker<'t, 'a> {
    fn nodes(&mut self, template: &Template, nodes: &[Box<Node<'_>>]) {
        let bound = self.scope.len();
        for node in nodes {
            self.node(template, node);
        }
        // A `let` binds until the end of the nodes it is among.
        self.scope.truncate(bound);
    }

    fn node(&mut self, template: &Template, node: &Node<'_>) {
        match node {
            Node::Expr(_, expr) => self.expr(expr),
            Node::Let(node) => {
                match &node.val {
                    LetValueOrBlock::Value(value) => self.expr(value),
                    LetValueOrBlock::Block { nodes, .. } => self.nodes(template, nodes),
                }
                self.bind(&node.var);
            }
            Node::Declare(node) => self.scope.push((*node.var_name).to_owned()),
            Node::Compound(node) => {
                self.expr(&node.op.lhs);
                self.expr(&node.op.rhs);
            }
            Node::If(node) => {
                for branch in &node.branches {
                    let bound = self.scope.len();
                    if let Some(cond) = &branch.cond {
                        self.expr(&cond.expr);
                        if let Some(target) = &cond.target {
                            self.bind(target);
                        }
                    }
                    self.nodes(template, &branch.nodes);
                    self.scope.truncate(bound);
                }
            }
            Node::Match(node) => {
                self.expr(&node.expr);
                for arm in &node.arms {
                    let bound = self.scope.len();
                    for target in &arm.target {
                        self.bind(target);
                    }
                    self.nodes(template, &arm.nodes);
                    self.scope.truncate(bound);
                }
            }
            Node::Loop(node) => self.for_loop(template, node),
            Node::Call(node) => {
                for arg in node.args.iter().flatten() {
                    self.expr(arg);
                }
                let bound = self.scope.len();
                self.scope.push("caller".to_owned());
                self.scope
                    .extend(node.caller_args.iter().map(|name| (*name).to_owned()));
                self.nodes(template, &node.nodes);
                self.scope.truncate(bound);
            }
            Node::FilterBlock(node) => self.filter_block(template, node),
            Node::BlockDef(node) => {
                let bound = self.scope.len();
                self.scope.push("super".to_owned());
                self.nodes(template, &node.nodes);
                self.scope.truncate(bound);
            }
            // A parent's blocks that this template overrides are read too: stricter, not wrong.
            Node::Include(node) => self.include(node.path),
            Node::Extends(node) => self.include(node.path),
            // A macro's body runs where it is called, with its arguments: the call's arguments
            // are what is read here. Its body and an imported template's macros are walked
            // outside every block, only to find their holes.
            Node::Macro(node) => {
                self.outside_blocks(|checker| checker.nodes(template, &node.nodes))
            }
            Node::Import(node) => self.outside_blocks(|checker| checker.include(node.path)),
            Node::Lit(_) | Node::Comment(_) | Node::Raw(_) | Node::Break(_) | Node::Continue(_) => {
            }
        }
    }

    fn for_loop(&mut self, template: &Template, node: &Loop<'_>) {
        self.expr(&node.iter);
        let bound = self.scope.len();
        self.bind(&node.var);
        self.scope.push("loop".to_owned());
        if let Some(cond) = &node.cond {
            self.expr(cond);
        }
        self.nodes(template, &node.body);
        self.scope.truncate(bound);
        self.nodes(template, &node.else_nodes);
    }

    /// A filter block: its filters' arguments are read where it is; a `cachesweeper` filter
    /// makes its body a block whose reads are checked.
    fn filter_block(&mut self, template: &Template, node: &WithSpan<FilterBlock<'_>>) {
        let mut cached = Vec::new();
        let mut filter = &node.filters;
        loop {
            // The first argument is the body (or the filter inside in a chain).
            for arg in filter.arguments.iter().skip(1) {
                self.expr(arg);
            }
            if is_cachesweeper_filter(filter) {
                cached.push(filter);
            }
            if filter_named(&filter.name, HOLE) {
                self.hole();
            }
            match filter.arguments.first().map(|arg| &***arg) {
                Some(Expr::Filter(inner)) => filter = inner,
                _ => break,
            }
        }
        let offset = node.span().byte_range().map_or(0, |range| range.start);
        let place = Place {
            template: template.name.clone(),
            line: line_of(&template.text, offset),
        };
        let opened = cached.len();
        for filter in cached {
            self.blocks.push(self.block(filter, place.clone()));
        }
        self.nodes(template, &node.nodes);
        self.blocks.truncate(self.blocks.len() - opened);
    }

    /// What a `cachesweeper(record, ttl, "name", key parts…)` block may read.
    fn block(&self, filter: &Filter<'_>, place: Place) -> Block {
        let args = block_args(filter);
        Block {
            place,
            keeps_key: filter.arguments.iter().any(|arg| {
                matches!(&***arg, Expr::NamedArgument(name, value)
                    if **name == "digest" && matches!(&***value, Expr::BoolLit(false)))
            }),
            record: args
                .first()
                .and_then(|record| path(record)?.into_iter().next()),
            keys: args.iter().skip(3).filter_map(|part| path(part)).collect(),
            bound_before: self.scope.len(),
        }
    }

    fn include(&mut self, name: &str) {
        let Some(&index) = self.by_name.get(name) else {
            return;
        };
        if self.including.contains(&index) {
            return;
        }
        let (template, ast) = &self.templates[index];
        let Some(ast) = ast else {
            return;
        };
        self.including.push(index);
        self.nodes(template, ast.nodes());
        self.including.pop();
    }

    /// Binds the names of a `let`, `for` or pattern target.
    fn bind(&mut self, target: &Target<'_>) {
        match target {
            Target::Name(name) => self.scope.push((**name).to_owned()),
            Target::Tuple(tuple) => {
                for target in &tuple.1 {
                    self.bind(target);
                }
            }
            Target::Array(items) | Target::OrChain(items) => {
                for target in items.iter() {
                    self.bind(target);
                }
            }
            Target::Struct(fields) => {
                for field in &fields.1 {
                    self.bind(&field.dest);
                }
            }
            Target::Rest(name) => {
                if let Some(name) = &**name {
                    self.scope.push((**name).to_owned());
                }
            }
            Target::NumLit(..)
            | Target::StrLit(_)
            | Target::CharLit(_)
            | Target::BoolLit(_)
            | Target::Path(_)
            | Target::Placeholder(_) => {}
        }
    }

    /// Checks every variable `expr` reads.
    /// Checks every variable `expr` reads (outside every block, only finds its holes).
    fn expr(&mut self, expr: &Expr<'_>) {
        if let Expr::Filter(filter) = expr {
            self.filter(filter);
        }
        match expr {
            Expr::Var(_) | Expr::AssociatedItem(..) => {
                if let Some(path) = path(expr) {
                    self.read(&path, &show(expr));
                }
                // What is indexed or called along the way (`a[i].b`, `a.b(c).d`) is read too.
                let mut inner = expr;
                while let Expr::AssociatedItem(of, _) = inner {
                    inner = of;
                    if !matches!(inner, Expr::Var(_) | Expr::AssociatedItem(..)) {
                        self.expr(inner);
                        break;
                    }
                }
            }
            Expr::Call(call) => {
                // A bare call `f(x)` is a method of the template: a read of `f`.
                self.expr(&call.path);
                for arg in &call.args {
                    self.expr(arg);
                }
            }
            Expr::IsDefined(name) | Expr::IsNotDefined(name) => {
                self.read(&[(*name).to_owned()], name)
            }
            Expr::Array(items) | Expr::Tuple(items) | Expr::Concat(items) => {
                for item in items {
                    self.expr(item);
                }
            }
            Expr::ArrayRepeat(item, count) => {
                self.expr(item);
                self.expr(count);
            }
            Expr::Index(of, index) => {
                self.expr(of);
                self.expr(index);
            }
            Expr::Filter(filter) => {
                for arg in &filter.arguments {
                    self.expr(arg);
                }
            }
            Expr::As(inner, _)
            | Expr::NamedArgument(_, inner)
            | Expr::Unary(_, inner)
            | Expr::Group(inner)
            | Expr::Try(inner) => self.expr(inner),
            Expr::BinOp(op) => {
                self.expr(&op.lhs);
                self.expr(&op.rhs);
            }
            Expr::Range(range) => {
                for side in [&range.lhs, &range.rhs].into_iter().flatten() {
                    self.expr(side);
                }
            }
            Expr::Struct(expr) => {
                for field in &expr.fields {
                    match &field.value {
                        Some(value) => self.expr(value),
                        // `Foo { x }` reads `x`.
                        None => self.read(&[(*field.name).to_owned()], &field.name),
                    }
                }
            }
            Expr::LetCond(cond) => self.expr(&cond.expr),
            Expr::RustMacro(_, tokens) => {
                for name in macro_names(tokens) {
                    self.read(std::slice::from_ref(&name), &name);
                }
            }
            Expr::BoolLit(_)
            | Expr::NumLit(..)
            | Expr::StrLit(_)
            | Expr::CharLit(_)
            | Expr::Path(_)
            | Expr::FilterSource
            | Expr::ArgumentPlaceholder => {}
        }
    }

    /// A filter: a hole, or a filter whose input is one (which would break its marker).
    fn filter(&mut self, filter: &Filter<'_>) {
        if filter_named(&filter.name, HOLE) {
            self.hole();
            return;
        }
        let input = filter.arguments.first().map(|arg| &***arg);
        if let Some(Expr::Filter(inner)) = input
            && filter_named(&inner.name, HOLE)
            && !filter_named(&filter.name, "safe")
        {
            let name = show_name(&filter.name);
            self.error(format!(
                "the output of a `{HOLE}` goes through the `{name}` filter: a hole's output is a \
                 marker that the page's fill replaces when the render ends, and `{name}` would \
                 change it before. Apply `{name}` in the fill (`Holes::fill`) instead"
            ));
        }
    }

    /// A `hole` filter where the walk is: the page must fill holes, and no block around it may
    /// keep its key across template edits.
    fn hole(&mut self) {
        self.holes = true;
        let errors: Vec<String> = self
            .blocks
            .iter()
            .filter(|block| block.keeps_key)
            .map(|block| {
                format!(
                    "the `{FILTER}` block at {} has a hole and `digest=false`: its stored \
                     fragments would keep their holes across a deploy that renames, removes or \
                     changes them, and the page could not fill them. Drop `digest=false`",
                    block.place
                )
            })
            .collect();
        for error in errors {
            self.error(error);
        }
    }

    fn error(&mut self, error: String) {
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    /// Runs `walk` as if outside every block (a macro's body, an imported template), where
    /// nothing is read-checked and only holes are found.
    fn outside_blocks(&mut self, walk: impl FnOnce(&mut Self)) {
        let blocks = std::mem::take(&mut self.blocks);
        walk(self);
        self.blocks = blocks;
    }

    /// Checks one read, an access path from a variable, against every block around it.
    fn read(&mut self, path: &[String], shown: &str) {
        let Some(name) = path.first() else {
            return;
        };
        // Not a variable: a type, a constant or an enum's variant (`None`, `Some`).
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return;
        }
        let bound_at = self.scope.iter().rposition(|bound| bound == name);
        let mut errors = Vec::new();
        for block in &self.blocks {
            if bound_at.is_some_and(|at| at >= block.bound_before)
                || block.record.as_deref() == Some(name.as_str())
                || block.keys.iter().any(|key| path.starts_with(key))
            {
                continue;
            }
            // A template field (not a variable bound around the block) may be declared.
            if bound_at.is_none() && self.declared.allows(name, block.record.as_deref()) {
                continue;
            }
            errors.push(self.message(block, name, shown, bound_at.is_some()));
        }
        for error in errors {
            if !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
    }

    fn message(&self, block: &Block, name: &str, shown: &str, bound_outside: bool) -> String {
        let record = block.record.as_deref().unwrap_or("record");
        let what = if bound_outside {
            format!("`{shown}`, a variable bound outside the block")
        } else {
            format!("`{shown}`")
        };
        let declare = if bound_outside {
            String::new()
        } else {
            format!(
                "; or, if the field `{name}` is the same for every viewer or is data of `{record}`, \
                 declare it: `#[sweeper(same_for_everyone)]` or `#[sweeper(belongs_to = {record})]` \
                 on the field"
            )
        };
        format!(
            "the `{FILTER}` block at {} reads {what}, which is neither its record `{record}` nor \
             part of its key: the HTML cached for the first request would be served to every \
             other, whoever is looking. Make it part of the key (add `{shown}` after the block's \
             name), move it into a hole that the page fills for each request \
             (`{{{{ \"name\"|cachesweeper::filters::hole(args) }}}}` and `impl cachesweeper::Holes`), \
             or render it outside the block{declare}",
            block.place
        )
    }
}

/// The access path of `expr` from its variable (`a.b.c` is `["a", "b", "c"]`; `a.b(x).c` is
/// `["a", "b"]`: a call's result is not a field), or `None` if it does not start at a
/// variable. `self.x` is the field `x`.
fn path(expr: &Expr<'_>) -> Option<Vec<String>> {
    match expr {
        Expr::Var(name) => Some(vec![(*name).to_owned()]),
        Expr::AssociatedItem(of, item) => {
            let mut path = path(of)?;
            if path == ["self"] {
                path.clear();
            }
            path.push((*item.name).to_owned());
            Some(path)
        }
        Expr::Call(call) => {
            let mut path = path(&call.path)?;
            path.pop();
            (!path.is_empty()).then_some(path)
        }
        Expr::Group(inner) | Expr::Try(inner) | Expr::Unary("&" | "*", inner) => path(inner),
        Expr::Filter(filter) => path(filter.arguments.first()?),
        _ => None,
    }
}

/// The identifiers a Rust macro call's tokens may read: names outside strings (not paths'
/// heads, not macro names, not keywords), and `{name}` inside strings (format strings capture
/// variables). Coarse on purpose: a name it reports that is not a variable only makes the
/// check stricter.
fn macro_names(tokens: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = tokens.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' {
            let mut prev = ' ';
            for (i, c) in chars.by_ref() {
                if c == '"' && prev != '\\' {
                    break;
                }
                if c == '{' && prev != '{' {
                    let rest = &tokens[i + 1..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                        names.push(name);
                    }
                }
                prev = c;
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, c)) = chars.peek() {
                if c.is_alphanumeric() || c == '_' {
                    end = i + c.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let name = &tokens[start..end];
            let next = tokens[end..].trim_start();
            let before = tokens[..start].trim_end();
            if !next.starts_with("::")
                && !next.starts_with('!')
                && !before.ends_with('.')
                && !before.ends_with("::")
                && !is_keyword(name)
            {
                names.push(name.to_owned());
            }
        }
    }
    names
}

fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "as" | "true"
            | "false"
            | "if"
            | "else"
            | "match"
            | "let"
            | "in"
            | "for"
            | "move"
            | "ref"
            | "mut"
            | "self"
            | "Self"
            | "crate"
            | "super"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> Template {
        Template {
            name: Some(name.into()),
            text: text.into(),
        }
    }

    fn errors_with(declared: &Declared, templates: &[Template]) -> Vec<String> {
        check(&Syntax::default(), templates, declared).errors
    }

    fn errors(text: &str) -> Vec<String> {
        errors_with(&Declared::default(), &[file("page.html", text)])
    }

    #[test]
    fn holes_are_found_and_their_arguments_are_reads() {
        let holes = |text: &str| {
            check(
                &Syntax::default(),
                &[file("page.html", text)],
                &Declared::default(),
            )
        };
        let page = r#"{% filter cachesweeper(c, 300, "c") %}{{ c.body }}{{ "like"|cachesweeper::filters::hole(c.id) }}{% endfilter %}"#;
        let reads = holes(page);
        assert!(reads.holes && reads.errors.is_empty(), "{:?}", reads.errors);
        assert!(holes(r#"<form>{{ "csrf"|hole }}</form>"#).holes);
        assert!(!holes(r#"{{ "x"|upper }}"#).holes);
        // Wherever it is: nested in an expression, a filter block, a macro's body.
        for text in [
            r#"{{ f("csrf"|hole) }}"#,
            r#"{{ "csrf"|hole|safe }}"#,
            r#"{% filter hole(1) %}x{% endfilter %}"#,
            r#"{% macro vote(c) %}{{ "csrf"|hole }}{% endmacro %}{% call vote(1) %}{% endcall %}"#,
        ] {
            let reads = holes(text);
            assert!(
                reads.holes && reads.errors.is_empty(),
                "{text}: {:?}",
                reads.errors
            );
        }
        // In a template imported for its macros.
        let imported = check(
            &Syntax::default(),
            &[
                file(
                    "page.html",
                    r#"{% import "m.html" as m %}{% call m::vote() %}{% endcall %}"#,
                ),
                file(
                    "m.html",
                    r#"{% macro vote() %}{{ "csrf"|hole }}{% endmacro %}"#,
                ),
            ],
            &Declared::default(),
        );
        assert!(imported.holes);
        // A filter that would change the marker, and a block that keeps its key.
        let reads = holes(r#"{{ "csrf"|hole|urlencode }}"#);
        assert_eq!(reads.errors.len(), 1, "{:?}", reads.errors);
        assert!(
            reads.errors[0].contains("through the `urlencode` filter"),
            "{:?}",
            reads.errors
        );
        let reads = holes(
            r#"{% filter cachesweeper(c, 300, "c", digest=false) %}{{ "x"|hole(c.id) }}{% endfilter %}"#,
        );
        assert_eq!(reads.errors.len(), 1, "{:?}", reads.errors);
        assert!(
            reads.errors[0].contains("has a hole and `digest=false`"),
            "{:?}",
            reads.errors
        );
        // The arguments are stored with the block: the viewer may not be one.
        let page =
            r#"{% filter cachesweeper(c, 300, "c") %}{{ "edit"|hole(viewer.id) }}{% endfilter %}"#;
        let reads = holes(page);
        assert!(reads.holes);
        assert_eq!(reads.errors.len(), 1, "{:?}", reads.errors);
        assert!(
            reads.errors[0].contains("`viewer.id`"),
            "{}",
            reads.errors[0]
        );
    }

    #[test]
    fn the_record_names_bound_inside_and_key_parts_may_be_read() {
        let page = r#"{% filter cachesweeper(post, 300, "body", viewer.id, lang) %}
{{ post.title }} {{ post.author.name|upper }} {{ post.created_at.format("%Y") }}
{% let n = post.comments.len() %}{{ n }} {{ lang }} {{ viewer.id }} {{ viewer.id.to_string() }}
{% for c in post.comments %}{{ c.body }}{{ loop.index }}{% endfor %}
{% if let Some(x) = post.summary %}{{ x }}{% endif %}
{{ crate::markdown::to_html(post.body)|safe }} {{ None.is_some() }} {{ format!("{}", n) }}
{% endfilter %}
{{ viewer.name }} {% for row in rows %}{% filter cachesweeper(row.article, 60, "row") %}{{ row.count }}{% endfilter %}{% endfor %}"#;
        assert_eq!(errors(page), Vec::<String>::new());
    }

    #[test]
    fn a_block_reading_the_viewer_without_keying_on_it() {
        let errors = errors(
            "\n{% filter cachesweeper(comment, 600, \"comment\") %}{{ comment.body }}\
             {% if viewer.name == comment.author %}<a>edit</a>{% endif %}{% endfilter %}",
        );
        assert_eq!(
            errors,
            [
                "the `cachesweeper` block at `page.html:2` reads `viewer.name`, which is neither its \
              record `comment` nor part of its key: the HTML cached for the first request would \
              be served to every other, whoever is looking. Make it part of the key (add \
              `viewer.name` after the block's name), move it into a hole that the page fills for \
              each request (`{{ \"name\"|cachesweeper::filters::hole(args) }}` and `impl \
              cachesweeper::Holes`), or render it outside the block; or, if the \
              field `viewer` is the same for every viewer or is data of `comment`, declare it: \
              `#[sweeper(same_for_everyone)]` or `#[sweeper(belongs_to = comment)]` on the field"
            ]
        );
    }

    #[test]
    fn a_key_part_covers_only_what_is_reached_through_it() {
        let errors = errors(
            r#"{% filter cachesweeper(c, 60, "c", viewer.is_admin) %}{{ viewer.is_admin }}{{ viewer.name }}{% endfilter %}"#,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("reads `viewer.name`"), "{errors:?}");
    }

    #[test]
    fn reads_hidden_in_calls_filters_macros_and_variables_bound_outside() {
        let errors = errors(
            r#"{% let token = csrf.token() %}{% for c in comments %}
{% filter cachesweeper(c, 60, "c") %}{{ c.body|truncate(limit) }}{{ is_admin() }}{{ format!("{token}") }}{{ c.render(preview) }}{{ self.site }}{% endfilter %}{% endfor %}"#,
        );
        let read: Vec<&str> = errors
            .iter()
            .map(|e| e.split('`').nth(5).expect("the value"))
            .collect();
        assert_eq!(
            read,
            ["limit", "is_admin", "token", "preview", "self.site"],
            "{errors:?}"
        );
        assert!(errors[2].contains("a variable bound outside the block"));
    }

    #[test]
    fn declared_fields_and_a_nested_block_read_by_the_block_around_it() {
        let declared = Declared {
            belongs_to: vec![("comments".into(), "article".into())],
            same_for_everyone: vec!["site".into()],
        };
        let page = file(
            "page.html",
            r#"{% filter cachesweeper(article, 60, "list") %}{{ site.name }}{% let comments = comments.get() %}
{% for comment in comments %}{% include "comment.html" %}{% endfor %}{% endfilter %}
{% filter cachesweeper(other, 60, "x") %}{{ comments.len() }}{% endfilter %}"#,
        );
        let comment = file(
            "comment.html",
            "{% filter cachesweeper(comment, 60, \"c\") %}{{ comment.body }}{{ viewer }}{% endfilter %}",
        );
        let errors = errors_with(&declared, &[page, comment]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        // The included block reads the viewer: it and the block around it are both wrong.
        assert!(errors[0].starts_with("the `cachesweeper` block at `page.html:1` reads `viewer`"));
        assert!(
            errors[1].starts_with("the `cachesweeper` block at `comment.html:1` reads `viewer`")
        );
        // Data of the article is not data of another record.
        assert!(
            errors[2].starts_with("the `cachesweeper` block at `page.html:3` reads `comments.len`")
                || errors[2]
                    .starts_with("the `cachesweeper` block at `page.html:3` reads `comments`"),
            "{errors:?}"
        );
    }
}
