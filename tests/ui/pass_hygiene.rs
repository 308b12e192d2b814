// The generated code does not depend on the names in scope: no imports, and shadowed prelude,
// primitive and `cachesweeper` names.
#![allow(dead_code, non_camel_case_types)]

struct Option;
struct String;
struct Vec;
struct Cow;
struct str;
struct bool;
mod cachesweeper {}
mod core {}

#[derive(::cachesweeper::Sweepable)]
struct Article {
    id: i64,
    #[sweeper(touches = Article)]
    parents: std::option::Option<i64>,
}

fn main() {
    use ::cachesweeper::Sweepable as _;
    let article = Article {
        id: 1,
        parents: None,
    };
    assert_eq!(article.sweeper_key(), "1");
}
