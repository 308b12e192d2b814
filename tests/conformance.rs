//! The backend conformance suite, run against every backend: the embedded one directly and
//! through `Box<dyn Backend>` and `Arc<dyn Backend>`, and memcached through a real server.

use std::sync::Arc;

use cachesweeper::backend::{Backend, Embedded, Memcached, conformance};
use cachesweeper_suite::memcached::MemcachedProcess;

#[test]
fn embedded_conforms() {
    conformance::run_all(&Embedded::new(16 * 1024 * 1024));
}

#[test]
fn embedded_conforms_through_box_and_arc() {
    let boxed: Box<dyn Backend> = Box::new(Embedded::new(16 * 1024 * 1024));
    conformance::run_all(&boxed);
    let shared: Arc<dyn Backend> = Arc::new(Embedded::new(16 * 1024 * 1024));
    conformance::run_all(&shared);
}

#[test]
fn memcached_conforms() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    conformance::run_all(&Memcached::from_url(&server.url()).unwrap());
}
