//! Compile-fail and compile-pass cases for `#[derive(Sweepable)]`, `#[derive(TemplateDigest)]`
//! and the `cachesweeper` template filter. The `.stderr` files beside the cases are what a user
//! reads: review them after `TRYBUILD=overwrite`.

use std::path::Path;

#[test]
fn ui() {
    link_templates();
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/derive_*.rs");
    t.compile_fail("tests/ui/template_*.rs");
    t.compile_fail("tests/ui/digest_*.rs");
    t.pass("tests/ui/pass_*.rs");
}

/// trybuild compiles the cases as a package of its own, in `<target>/tests/trybuild/<package>`:
/// that is the `CARGO_MANIFEST_DIR` in which Askama and `#[derive(TemplateDigest)]` look for
/// `templates/`, so it gets a link to this package's.
fn link_templates() {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp");
    let project = target.join("tests/trybuild").join(env!("CARGO_PKG_NAME"));
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let link = project.join("templates");
    if std::fs::read_link(&link).is_ok_and(|to| to == templates) {
        return;
    }
    std::fs::create_dir_all(&project).unwrap();
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&templates, &link).unwrap();
    #[cfg(windows)]
    std::os::windows::fs::symlink_dir(&templates, &link).unwrap();
}
