//! Markdown to HTML for article and comment bodies, safe for text typed by anyone.
//!
//! Called from the templates, inside the cached fragments: on a hit this work is skipped, which
//! is much of what caching a comment saves.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Renders `markdown` as HTML. Raw HTML in the input is shown as text (escaped), not passed
/// through, and links or images with a scheme other than http, https or mailto (such as
/// `javascript:`) point nowhere: a comment cannot inject markup or script.
pub fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        // pulldown-cmark escapes `Text` when it writes HTML, and passes `Html` through verbatim.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// `url` if it is relative or uses a harmless scheme, else `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    match scheme(&url) {
        None => url,
        Some(scheme) if matches!(scheme.as_str(), "http" | "https" | "mailto") => url,
        Some(_) => CowStr::Borrowed("#"),
    }
}

/// The URL's scheme in lower case, if it has one. Browsers ignore tabs and newlines inside a
/// scheme and leading whitespace or control characters (`java\tscript:`), so those are dropped
/// before looking.
fn scheme(url: &str) -> Option<String> {
    let url = url.trim_start_matches(|c: char| c <= ' ');
    let end = url.find([':', '/', '?', '#'])?;
    if !url[end..].starts_with(':') {
        return None;
    }
    let scheme = url[..end]
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>();
    Some(scheme.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn raw_html_is_escaped() {
        let html = to_html("hi <script>alert(1)</script>\n\n<div onclick=x>block</div>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<div"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn script_links_go_nowhere() {
        assert!(to_html("[x](javascript:alert(1))").contains(r##"href="#""##));
        assert!(to_html("[x](JaVaScript:alert(1))").contains(r##"href="#""##));
        assert!(to_html("[x](<java\tscript:alert(1)>)").contains(r##"href="#""##));
        assert!(to_html("[x](https://example.com/)").contains("https://example.com/"));
        assert!(to_html("[x](/articles/1)").contains(r#"href="/articles/1""#));
    }

    #[test]
    fn markdown_still_works() {
        assert_eq!(to_html("**bold**"), "<p><strong>bold</strong></p>\n");
    }
}
