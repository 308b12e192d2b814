//! The blog example's Markdown renderer, with its unit tests: examples' own tests do not run
//! under `cargo test --workspace`, so they run from here.

#[path = "../examples/blog/markdown.rs"]
mod markdown;

#[test]
fn script_in_a_comment_is_text() {
    let html = markdown::to_html("<script>alert(1)</script> and [x](javascript:alert)");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(!html.contains("href=\"javascript"), "{html}");
}
