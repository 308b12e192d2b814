//! The backend conformance suite, run against every backend: the embedded one directly and
//! through `Box<dyn Backend>`, `Arc<dyn Backend>` and a wrapper that forwards every operation,
//! memcached through a real server (directly and through the wrapper), and Redis through a
//! real server and a real three-master cluster. The suite awaits each operation as a blocking
//! render does; one run awaits them from inside a tokio runtime's worker, as a handler does.

use crate::common;

use std::sync::Arc;

use cachesweeper::backend::{Backend, Embedded, Memcached, Redis, conformance};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};
use common::forgetful::Forgetful;

fn embedded() -> Embedded {
    Embedded::new(16 * 1024 * 1024)
}

#[test]
fn embedded_conforms() {
    conformance::run_all(&embedded());
}

#[test]
fn embedded_conforms_through_box_arc_and_a_forwarding_wrapper() {
    let boxed: Box<dyn Backend> = Box::new(embedded());
    conformance::run_all(&boxed);
    let shared: Arc<dyn Backend> = Arc::new(embedded());
    conformance::run_all(&shared);
    conformance::run_all(&Forgetful::new(Arc::new(embedded())));
}

#[test]
fn memcached_conforms() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    conformance::run_all(&Memcached::from_url(&server.url()).unwrap());
}

#[test]
fn memcached_conforms_through_a_forwarding_wrapper_inside_a_runtime() {
    let Some(server) = MemcachedProcess::start() else {
        return;
    };
    let backend = Forgetful::new(Arc::new(Memcached::from_url(&server.url()).unwrap()));
    // A handler's thread: inside a runtime (where tokio's own `block_on` would panic).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        tokio::task::spawn(async move { conformance::run_all(&backend) })
            .await
            .unwrap();
    });
}

#[test]
fn redis_conforms() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    conformance::run_all(&Redis::from_url(&server.url()).unwrap());
}

#[test]
fn redis_cluster_conforms() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    conformance::run_all(&Redis::cluster(&cluster.urls()).unwrap());
}
