//! The library as an application uses it, in real Askama templates: blocks and `cached`
//! sub-templates, their keys and digests, what `#[derive(Sweepable)]` generates, invalidation
//! (django-cache-sweeper's own tests among it), lazy page data, and values the cache must not
//! serve. Each module runs on every backend the harness can start (embedded, memcached, Redis).

#[path = "../common/mod.rs"]
mod common;

mod article_page;
mod askama_block;
mod bad_values;
mod block_keys;
mod conditional;
mod conditional_corners;
mod derive;
mod digests;
mod holes;
mod http_cache;
mod invalidation;
mod lazy;
