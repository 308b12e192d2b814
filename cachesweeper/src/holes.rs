//! Holes: small parts of a cached block rendered for each request and never stored (a CSRF
//! token in a form, an "edit" link for the comment's author).
//!
//! A hole is written in a block with the [`hole`](crate::filters::hole) filter: its name and
//! its arguments, which are the block's data (the read check keeps the viewer out of them). The
//! page fills each hole when the render ends, through [`Holes`]; the fill may read anything,
//! the viewer included, since nothing of it is stored.
//!
//! How, without a second template language: while a page renders, each hole writes a marker
//! into the HTML, carrying a nonce drawn for this render and the hole's index in the render's
//! [`HoleTable`]. A fragment on its way into the store has its markers cut out and kept beside
//! its HTML as positions ([`Placed`]); a fragment served from the store gets fresh markers at
//! those positions. When the render ends one scan of the page replaces every marker with the
//! page's fill. The nonce is never stored nor sent, so no stored HTML, comment body or `|safe`
//! value can forge a marker; a fragment without holes costs nothing more, and only a page that
//! met a hole is scanned.

use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use crate::Error;

/// One hole of a page: its name and its arguments, as the template wrote them (each argument
/// written out with `Display`). What [`Holes::fill`] is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    name: Box<str>,
    args: Box<[String]>,
}

impl Hole {
    pub(crate) fn new(name: impl Into<Box<str>>, args: Vec<String>) -> Hole {
        Hole {
            name: name.into(),
            args: args.into(),
        }
    }

    /// The hole's name: the filter's input (`{{ "like"|hole(comment.id) }}` is `like`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hole's arguments, written out.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Argument `index`, parsed: `hole.arg::<i64>(0)?`. A missing or unparsable argument is an
    /// error of the render that names the hole.
    pub fn arg<T: FromStr>(&self, index: usize) -> askama::Result<T> {
        let arg = self.args.get(index).ok_or_else(|| {
            self.error(format!(
                "has {} arguments; argument {index} was asked for",
                self.args.len()
            ))
        })?;
        arg.parse().map_err(|_| {
            self.error(format!(
                "argument {index} ({arg:?}) is not a {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// An error of the render, naming this hole.
    pub fn error(&self, problem: impl Into<String>) -> askama::Error {
        askama::Error::custom(Error::Hole {
            name: self.name.to_string(),
            problem: problem.into(),
        })
    }
}

/// A page that fills the holes of its cached blocks, for each request.
///
/// `#[derive(TemplateDigest)]` requires it of a page whose templates use the
/// [`hole`](crate::filters::hole) filter. [`Scope::render`](crate::Scope::render) calls `fill`
/// once per hole the page shows, when the render ends, in page order. What `fill` writes is
/// written as it is: escape it as the page would (render a small Askama template into `out`).
///
/// ```
/// use askama::Template;
/// use cachesweeper::{Hole, Holes, Sweepable};
///
/// #[derive(Sweepable)]
/// struct Comment { id: i64, author: String, body: String }
///
/// #[derive(Template, cachesweeper::TemplateDigest)]
/// #[template(ext = "html", source = r#"{% for c in comments -%}
/// {% filter cachesweeper::filters::cachesweeper(c, 300, "comment") -%}
/// <p>{{ c.body }} {{ "edit"|cachesweeper::filters::hole(c.id, c.author) }}</p>
/// {% endfilter %}{% endfor %}"#)]
/// struct Page<'a> {
///     #[sweeper(same_for_everyone)]
///     comments: &'a [Comment],
///     viewer: &'a str,
/// }
///
/// impl Holes for Page<'_> {
///     fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
///         match hole.name() {
///             "edit" if hole.args()[1] == self.viewer => {
///                 out.push_str(&format!("<a href=\"/comments/{}/edit\">edit</a>", hole.arg::<i64>(0)?));
///             }
///             "edit" => {}
///             _ => return Err(hole.error("unknown hole")),
///         }
///         Ok(())
///     }
/// }
///
/// let comments = [Comment { id: 1, author: "ann".into(), body: "Hi".into() }];
/// let sweeper = cachesweeper::Sweeper::embedded();
/// for (viewer, link) in [("ann", true), ("bob", false), ("ann", true)] {
///     let html = sweeper.scope().render(&Page { comments: &comments, viewer })?;
///     assert_eq!(html.contains("/comments/1/edit"), link);
/// }
/// assert_eq!(sweeper.stats().hits, 2);
/// # Ok::<(), askama::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has holes in its templates but does not fill them",
    label = "its templates use the `hole` filter",
    note = "implement `cachesweeper::Holes` for `{Self}`: `fill` writes each hole for this request"
)]
pub trait Holes {
    /// Writes `hole` for this request into `out`.
    fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()>;

    /// Whether this request's fills are the same for everyone who sends it (an anonymous
    /// visitor's, with no token and no controls): only then may a shared HTTP cache keep the
    /// page (see [`crate::http_cache`]). False unless the page says so.
    fn shared(&self) -> bool {
        false
    }
}

/// A hole in a stored fragment: where it goes in the fragment's HTML (a byte offset, at a
/// character boundary, in order) and which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) offset: usize,
    pub(crate) hole: Arc<Hole>,
}

/// The holes one page render has met, and the nonce of its markers.
#[derive(Debug)]
pub(crate) struct HoleTable {
    /// What every marker of this render begins with: a start byte and the nonce. Drawn at the
    /// first hole, so that a page without holes draws nothing.
    prefix: OnceLock<String>,
    holes: Mutex<Vec<Arc<Hole>>>,
}

/// The markers of a render (`prefix`, `holes`) in `html`: where each starts and ends, and its
/// hole.
fn markers<'h>(
    prefix: &'h str,
    holes: &'h [Arc<Hole>],
    html: &'h str,
) -> impl Iterator<Item = (usize, usize, &'h Arc<Hole>)> + 'h {
    let mut from = 0;
    std::iter::from_fn(move || {
        loop {
            // The start byte first (a single byte: `find` takes memchr's path), then the rest
            // of the prefix: several times faster than searching for the prefix itself.
            let start = from + html[from..].find(START)?;
            from = start + START.len_utf8();
            if !html[start..].starts_with(prefix) {
                continue;
            }
            let digits = start + prefix.len();
            from = digits;
            let Some(len) = html[digits..].find(END) else {
                continue;
            };
            let Some(hole) = html[digits..digits + len]
                .parse::<usize>()
                .ok()
                .and_then(|i| holes.get(i))
            else {
                continue;
            };
            from = digits + len + END.len_utf8();
            return Some((start, from, hole));
        }
    })
}

/// Starts a marker (a control character no HTML a template writes carries by chance; the nonce
/// is what makes it unforgeable).
const START: char = '\u{2}';
/// Ends a marker, after the hole's index.
const END: char = '\u{3}';

/// About the length of a marker: the start byte, 40 digits and `:`, an index, the end byte.
const MARKER_LEN: usize = 48;

impl HoleTable {
    pub(crate) fn new() -> HoleTable {
        HoleTable {
            prefix: OnceLock::new(),
            holes: Mutex::default(),
        }
    }

    /// The markers' prefix, drawn now if no hole was met yet.
    fn prefix(&self) -> &str {
        self.prefix.get_or_init(|| {
            // 128 bits from std's randomly keyed SipHash (its keys come from the operating
            // system): unguessable, with no crate for it. Digits only, so that a filter such
            // as `upper` around a block leaves the markers as they are.
            let state = std::collections::hash_map::RandomState::new();
            let (a, b) = (state.hash_one(1u8), state.hash_one(2u8));
            format!("{START}{a:020}{b:020}:")
        })
    }

    /// Registers `hole` and writes its marker into `out`.
    pub(crate) fn mark(&self, hole: Arc<Hole>, out: &mut String) {
        let mut holes = crate::lock(&self.holes);
        self.push_marker(&mut holes, hole, out);
    }

    fn push_marker(&self, holes: &mut Vec<Arc<Hole>>, hole: Arc<Hole>, out: &mut String) {
        holes.push(hole);
        out.push_str(self.prefix());
        // Into the string as it is (`to_string` would allocate one more).
        let _ = write!(out, "{}", holes.len() - 1);
        out.push(END);
    }

    /// Cuts this render's markers out of a fragment on its way into the store: its HTML
    /// without them, and where they were.
    pub(crate) fn cut(&self, html: String) -> (String, Arc<[Placed]>) {
        // No start byte, or no hole met by this render: none of its markers.
        let Some(prefix) = self.prefix.get().filter(|_| html.contains(START)) else {
            return (html, Arc::new([]));
        };
        let mut clean = String::with_capacity(html.len());
        let mut placed = Vec::new();
        let mut copied = 0;
        let holes = crate::lock(&self.holes);
        for (start, end, hole) in markers(prefix, &holes, &html) {
            clean.push_str(&html[copied..start]);
            copied = end;
            placed.push(Placed {
                offset: clean.len(),
                hole: Arc::clone(hole),
            });
        }
        clean.push_str(&html[copied..]);
        (clean, placed.into())
    }

    /// A stored fragment's HTML with fresh markers for this render where its holes are.
    pub(crate) fn reinsert(&self, html: &str, placed: &[Placed]) -> String {
        let mut out = String::with_capacity(html.len() + placed.len() * MARKER_LEN);
        let mut copied = 0;
        let mut holes = crate::lock(&self.holes);
        for p in placed {
            out.push_str(&html[copied..p.offset]);
            copied = p.offset;
            self.push_marker(&mut holes, Arc::clone(&p.hole), &mut out);
        }
        out.push_str(&html[copied..]);
        out
    }

    /// The page with every hole filled by `page`, once the render is over. A page that met no
    /// hole is returned as it is.
    pub(crate) fn fill(
        &self,
        html: String,
        page: Option<&dyn Holes>,
        page_type: &str,
    ) -> askama::Result<String> {
        let holes = crate::lock(&self.holes);
        if holes.is_empty() {
            return Ok(html);
        }
        let Some(page) = page else {
            return Err(askama::Error::custom(Error::Hole {
                name: markers(self.prefix(), &holes, &html)
                    .next()
                    .map_or_else(String::new, |(.., hole)| hole.name.to_string()),
                problem: format!(
                    "`{page_type}` shows a hole but does not fill holes: a hole is filled by the page \
                     whose templates write it (`#[derive(TemplateDigest)]` finds it there); a \
                     `cached` sub-template cannot have holes: write them in a `cachesweeper` block \
                     of the page"
                ),
            }));
        };
        let mut out = String::with_capacity(html.len());
        let mut copied = 0;
        for (start, end, hole) in markers(self.prefix(), &holes, &html) {
            out.push_str(&html[copied..start]);
            copied = end;
            page.fill(hole, &mut out)?;
        }
        out.push_str(&html[copied..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hole(name: &str, arg: &str) -> Arc<Hole> {
        Arc::new(Hole::new(name, vec![arg.to_owned()]))
    }

    struct Echo;

    impl Holes for Echo {
        fn fill(&self, hole: &Hole, out: &mut String) -> askama::Result<()> {
            out.push_str(&format!("[{}:{}]", hole.name(), hole.args().join(",")));
            Ok(())
        }
    }

    #[test]
    fn cut_reinsert_and_fill() {
        let render = HoleTable::new();
        let mut html = String::from("<p>é");
        render.mark(hole("like", "1"), &mut html);
        html.push_str("</p><p>");
        render.mark(hole("edit", "2"), &mut html);
        render.mark(hole("like", "2"), &mut html);
        let (clean, placed) = render.cut(html);
        assert_eq!(clean, "<p>é</p><p>");
        assert_eq!(
            placed.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [5, 12, 12]
        );

        // Another render serves the stored fragment with markers of its own.
        let next = HoleTable::new();
        let served = next.reinsert(&clean, &placed);
        assert!(!served.contains(render.prefix()));
        let page = next.fill(served, Some(&Echo), "Page").unwrap();
        assert_eq!(page, "<p>é[like:1]</p><p>[edit:2][like:2]");
    }

    #[test]
    fn markers_cannot_be_forged() {
        let render = HoleTable::new();
        let mut html = String::new();
        render.mark(hole("like", "1"), &mut html);
        // A marker of another render (in stored HTML, say), and one with our nonce but no hole
        // behind it, are left as text.
        let other = HoleTable::new();
        let mut forged = String::new();
        other.mark(hole("admin", "x"), &mut forged);
        let with_index = format!("{}7{END}", render.prefix());
        let page = format!("{forged}{html}{with_index}");
        let filled = render.fill(page, Some(&Echo), "Page").unwrap();
        assert_eq!(filled, format!("{forged}[like:1]{with_index}"));
    }

    #[test]
    fn a_page_that_does_not_fill_holes_fails() {
        let render = HoleTable::new();
        let mut html = String::new();
        render.mark(hole("like", "1"), &mut html);
        let error = render.fill(html, None, "Page").unwrap_err().to_string();
        assert!(error.contains("`Page` shows a hole"), "{error}");
        // With no hole met, nothing is scanned.
        assert_eq!(
            HoleTable::new().fill("<p>".into(), None, "Page").unwrap(),
            "<p>"
        );
    }

    #[test]
    fn arguments() {
        let hole = Hole::new("like", vec!["7".into(), "x".into()]);
        assert_eq!(hole.arg::<i64>(0).unwrap(), 7);
        assert!(
            hole.arg::<i64>(1)
                .unwrap_err()
                .to_string()
                .contains("is not a i64")
        );
        assert!(
            hole.arg::<i64>(2)
                .unwrap_err()
                .to_string()
                .contains("has 2 arguments")
        );
    }
}
