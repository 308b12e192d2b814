//! The backend conformance suite, run against every backend: the embedded one directly and
//! through `Box<dyn Backend>` and `Arc<dyn Backend>`, memcached through a real server, and
//! Redis through a real server and a real three-master cluster, each once through its blocking
//! calls and once through its async forms (`run_all_async` compares the two answer by answer).

use std::sync::Arc;
use std::time::Duration;

use cachesweeper::Result;
use cachesweeper::backend::{
    Backend, BoxFuture, Embedded, Leased, Memcached, Redis, SetItem, conformance,
};
use cachesweeper_suite::memcached::MemcachedProcess;
use cachesweeper_suite::redis::{RedisCluster, RedisProcess};

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

#[test]
fn redis_conforms() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    conformance::run_all(&Redis::from_url(&server.url()).unwrap());
}

#[test]
fn redis_conforms_through_its_async_forms() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    conformance::run_all(&AsyncForms::new(Redis::from_url(&server.url()).unwrap()));
}

#[test]
fn redis_cluster_conforms_through_both_forms() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let backend = Redis::cluster(&cluster.urls()).unwrap();
    conformance::run_all(&backend);
    // The suite's keys must be new: flush the cluster between the two runs.
    for node in cluster.nodes() {
        assert_eq!(node.command("FLUSHALL").as_deref(), Some("+OK"));
    }
    conformance::run_all(&AsyncForms::new(backend));
}

/// A backend whose blocking calls go through the inner backend's async forms, awaited on a
/// runtime of the test's: the suite then checks the async forms.
#[derive(Debug)]
struct AsyncForms<B> {
    inner: B,
    runtime: tokio::runtime::Runtime,
}

impl<B: Backend> AsyncForms<B> {
    fn new(inner: B) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        AsyncForms { inner, runtime }
    }

    fn wait<T>(&self, future: BoxFuture<'_, T>) -> T {
        self.runtime.block_on(future)
    }
}

impl<B: Backend> Backend for AsyncForms<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get_each(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>>> {
        self.wait(self.inner.get_each_async(keys))
    }
    fn set_many(&self, items: &[SetItem<'_>]) -> Result<()> {
        self.wait(self.inner.set_many_async(items))
    }
    fn incr_each(&self, keys: &[&str], delta: u64, initial: u64) -> Vec<Result<u64>> {
        self.wait(self.inner.incr_each_async(keys, delta, initial))
    }
    fn raise_each(&self, keys: &[&str], floor: u64) -> Vec<Result<u64>> {
        self.wait(self.inner.raise_each_async(keys, floor))
    }
    // Delete has no async form.
    fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key)
    }
    fn get_leased(&self, keys: &[&str], lease: Duration) -> Vec<Result<Leased>> {
        self.wait(self.inner.get_leased_async(keys, lease))
    }
    fn release_leases(&self, keys: &[&str]) -> Result<()> {
        self.wait(self.inner.release_leases_async(keys))
    }
    fn max_value_len(&self) -> usize {
        self.inner.max_value_len()
    }
}
