//! Reading a template the way Askama does: its delimiters, askama_parser (pinned to the version
//! askama_derive uses) to parse it, and a walk over every node of the tree.

use askama_parser::{Ast, LetValueOrBlock, Node, SyntaxBuilder};

/// The delimiters of a template syntax (askama_parser's `Syntax`; the defaults, or a
/// `[[syntax]]` of askama.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    /// `{%`
    pub block_start: String,
    /// `%}`
    pub block_end: String,
    /// `{{`
    pub expr_start: String,
    /// `}}`
    pub expr_end: String,
    /// `{#`
    pub comment_start: String,
    /// `#}`
    pub comment_end: String,
}

impl Default for Syntax {
    fn default() -> Self {
        Syntax {
            block_start: "{%".into(),
            block_end: "%}".into(),
            expr_start: "{{".into(),
            expr_end: "}}".into(),
            comment_start: "{#".into(),
            comment_end: "#}".into(),
        }
    }
}

impl Syntax {
    /// `source` as askama_parser reads it with these delimiters, or `None` if it does not parse
    /// or the delimiters are not valid (askama_parser's `SyntaxBuilder::to_syntax` rejects
    /// them). Both make Askama's derive fail with its own error, which says where and why, so
    /// callers skip such a template rather than report it a second time.
    pub fn parse<'a>(&self, source: &'a str) -> Option<Ast<'a>> {
        let builder = SyntaxBuilder {
            name: "cachesweeper",
            block_start: Some(&self.block_start),
            block_end: Some(&self.block_end),
            expr_start: Some(&self.expr_start),
            expr_end: Some(&self.expr_end),
            comment_start: Some(&self.comment_start),
            comment_end: Some(&self.comment_end),
        };
        let syntax = builder.to_syntax().ok()?;
        Ast::from_str(source, None, &syntax).ok()
    }
}

/// Calls `visit` on every node of `nodes` and of the bodies nested in them (`if`, `match`,
/// `for`, `block`, `macro`, `call`, `filter` and `let` blocks), in template order: a block
/// before the nodes in its body.
pub fn walk<'n, 'a>(nodes: &'n [Box<Node<'a>>], visit: &mut impl FnMut(&'n Node<'a>)) {
    for node in nodes {
        visit(node);
        // Every variant is listed, so that a new kind of node with a body is not missed when
        // askama_parser is updated.
        match &**node {
            Node::If(node) => {
                for branch in &node.branches {
                    walk(&branch.nodes, visit);
                }
            }
            Node::Match(node) => {
                for arm in &node.arms {
                    walk(&arm.nodes, visit);
                }
            }
            Node::Loop(node) => {
                walk(&node.body, visit);
                walk(&node.else_nodes, visit);
            }
            Node::BlockDef(node) => walk(&node.nodes, visit),
            Node::Macro(node) => walk(&node.nodes, visit),
            Node::Call(node) => walk(&node.nodes, visit),
            Node::FilterBlock(node) => walk(&node.nodes, visit),
            Node::Let(node) => match &node.val {
                LetValueOrBlock::Block { nodes, .. } => walk(nodes, visit),
                LetValueOrBlock::Value(_) => {}
            },
            Node::Lit(_)
            | Node::Comment(_)
            | Node::Expr(..)
            | Node::Compound(_)
            | Node::Declare(_)
            | Node::Extends(_)
            | Node::Include(_)
            | Node::Import(_)
            | Node::Raw(_)
            | Node::Break(_)
            | Node::Continue(_) => {}
        }
    }
}

/// The line of byte `offset` of `source`, from 1.
pub fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
