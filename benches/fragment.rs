//! One comment fragment of the blog: a cache hit on the embedded backend against rendering the
//! fragment (its Markdown body and the HTML around it), with a bare moka `get` of the same bytes
//! as the floor.
//!
//! `cargo bench --bench fragment`; see BENCHMARKS.md.

#[allow(dead_code, unused_imports)] // its unit tests are the example's to run
#[path = "../examples/blog/markdown.rs"]
mod markdown;
#[allow(dead_code)]
#[path = "../examples/blog/models.rs"]
mod models;

mod common;

use std::hint::black_box;
use std::sync::Arc;

use askama::Template;
use cachesweeper::backend::{Embedded, Null};
use cachesweeper::{KeyParts, Sweeper};
use criterion::{Criterion, criterion_group, criterion_main};

use common::{cached, plain};

fn fragment(c: &mut Criterion) {
    let comment = common::comment(42);
    let mut group = c.benchmark_group("fragment");
    // Microseconds each: more samples cost little.
    group
        .sample_size(50)
        .measurement_time(std::time::Duration::from_secs(2));

    // Rendering: the Markdown alone, then the whole fragment body (the blog's comment.html with
    // caching compiled out), then the same template through a sweeper on the Null backend
    // (what a miss costs: keys, lookups that find nothing, the render).
    group.bench_function("render/markdown_only", |b| {
        b.iter(|| markdown::to_html(black_box(&comment.body)))
    });
    let plain_fragment = plain::CommentFragment { comment: &comment };
    let expected = plain_fragment.render().expect("renders");
    group.bench_function("render/comment_html", |b| {
        b.iter(|| black_box(&plain_fragment).render().expect("renders"))
    });
    let null = Sweeper::builder().backend(Null).build().expect("sweeper");
    let cached_fragment = cached::CommentFragment { comment: &comment };
    assert_eq!(null.scope().render(&cached_fragment).unwrap(), expected);
    group.bench_function("render/comment_html_null_backend", |b| {
        b.iter(|| {
            null.scope()
                .render(black_box(&cached_fragment))
                .expect("renders")
        })
    });

    // Hits on the embedded backend: the same template, warm, as a request renders it (a scope,
    // the record pass, the final pass); and the fragment API directly, in one scope.
    let embedded = Sweeper::builder()
        .backend(Embedded::new(64 << 20))
        .build()
        .expect("sweeper");
    assert_eq!(embedded.scope().render(&cached_fragment).unwrap(), expected);
    let before = embedded.stats();
    assert_eq!(embedded.scope().render(&cached_fragment).unwrap(), expected);
    let once = embedded.stats() - before;
    assert_eq!(
        (once.hits, once.misses),
        (1, 0),
        "the template hit is a hit"
    );
    group.bench_function("hit/embedded_comment_html", |b| {
        b.iter(|| {
            embedded
                .scope()
                .render(black_box(&cached_fragment))
                .expect("renders")
        })
    });

    let parts = KeyParts::new().part("bench/comment");
    let body = || plain_fragment.render();
    let scope = embedded.scope();
    scope.fragment(&comment, 600, &parts, body).unwrap();
    group.bench_function("hit/embedded_fragment_api", |b| {
        b.iter(|| {
            scope
                .fragment(black_box(&comment), 600, &parts, body)
                .expect("hit")
        })
    });
    // Part of every hit on a counter-versioned record: reading its version counter.
    group.bench_function("hit_part/embedded_version_lookup", |b| {
        b.iter(|| embedded.version(black_box(&comment)).expect("version"))
    });

    group.bench_function("hit_part/embedded_version_and_key", |b| {
        b.iter(|| {
            embedded
                .fragment_key(black_box(&comment), &parts)
                .expect("key")
        })
    });

    // The floor: a moka cache holding the fragment's bytes under the same key.
    let key = embedded.fragment_key(&comment, &parts).expect("key");
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(10_000);
    moka.insert(key.clone(), Arc::from(expected.as_bytes()));
    group.bench_function("moka_get", |b| {
        b.iter(|| moka.get(black_box(key.as_str())).expect("present"))
    });

    group.finish();
    eprintln!(
        "fragment: the comment's Markdown is {} bytes, the rendered fragment {} bytes",
        comment.body.len(),
        expected.len()
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = fragment
}
criterion_main!(benches);
