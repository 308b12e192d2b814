//! Debug marks: each fragment's HTML between two HTML comments that say what it is and whether
//! it was a hit, so that a page can show which fragments the cache served (see
//! [`Scope::debug`](crate::Scope::debug)). Comments change neither layout nor text.

use std::fmt::Write as _;

use crate::value::Html;

/// What a debug mark says about one fragment.
pub(crate) struct Mark<'a> {
    pub(crate) hit: bool,
    pub(crate) name: &'a str,
    pub(crate) model: &'a str,
    pub(crate) record_key: &'a str,
    pub(crate) key: &'a str,
}

/// `html` between `<!--cachesweeper hit|miss name=".." record=".." key=".."-->` and
/// `<!--/cachesweeper-->`.
pub(crate) fn mark(html: &Html, mark: &Mark<'_>) -> Html {
    let html = html.as_str();
    let mut out = String::with_capacity(html.len() + 96 + mark.key.len());
    let _ = write!(
        out,
        r#"<!--cachesweeper {} name="{}" record="{}/{}" key="{}"-->{html}<!--/cachesweeper-->"#,
        if mark.hit { "hit" } else { "miss" },
        Attr(mark.name),
        Attr(mark.model),
        Attr(mark.record_key),
        Attr(mark.key),
    );
    Html::Owned(out)
}

/// A value inside a mark: whatever could end the comment or the attribute (`-`, `>`, `"`,
/// `<`, `&`, and anything not printable ASCII) is percent-escaped.
struct Attr<'a>(&'a str);

impl std::fmt::Display for Attr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_graphic() && !matches!(b, b'-' | b'>' | b'<' | b'"' | b'&' | b'%') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_cannot_be_ended_early() {
        let marked = mark(
            &Html::Owned("<p>hi</p>".into()),
            &Mark {
                hit: true,
                name: "body",
                model: "app::Post",
                record_key: "a-->b\"c",
                key: "cs|f|app::Post|a%2D",
            },
        );
        assert_eq!(
            marked.as_str(),
            r#"<!--cachesweeper hit name="body" record="app::Post/a%2D%2D%3Eb%22c" key="cs|f|app::Post|a%252D"--><p>hi</p><!--/cachesweeper-->"#
        );
    }
}
