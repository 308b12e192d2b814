//! Compile-fail and compile-pass cases for `#[derive(Sweepable)]` and the `cachesweeper`
//! template filter. The `.stderr` files beside the cases are what a user reads: review them
//! after `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/derive_*.rs");
    t.compile_fail("tests/ui/template_*.rs");
    t.pass("tests/ui/pass_*.rs");
}
