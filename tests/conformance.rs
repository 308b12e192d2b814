//! The backend conformance suite, run against every backend: the embedded one directly and
//! through `Box<dyn Backend>` and `Arc<dyn Backend>`, and memcached through a real server;
//! the blocking forms (`run_all`) and the async ones (`run_all_async`) alike.

use std::sync::Arc;

use cachesweeper::backend::{Backend, Embedded, Memcached, conformance};
use cachesweeper_suite::memcached::MemcachedProcess;

#[test]
fn embedded_conforms() {
    conformance::run_all(&Embedded::new(16 * 1024 * 1024));
}

#[test]
fn embedded_conforms_async() {
    conformance::run_all_async(&Embedded::new(16 * 1024 * 1024));
}

#[test]
fn embedded_conforms_through_box_and_arc() {
    let boxed: Box<dyn Backend> = Box::new(Embedded::new(16 * 1024 * 1024));
    conformance::run_all(&boxed);
    conformance::run_all_async(&boxed);
    let shared: Arc<dyn Backend> = Arc::new(Embedded::new(16 * 1024 * 1024));
    conformance::run_all(&shared);
    conformance::run_all_async(&shared);
}

#[test]
fn memcached_conforms() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    conformance::run_all(&Memcached::from_url(&server.url()).unwrap());
}

#[test]
fn memcached_conforms_async() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    conformance::run_all_async(&Memcached::from_url(&server.url()).unwrap());
}
