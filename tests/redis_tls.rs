//! `rediss://`: the Redis backend over TLS (feature `redis-tls`), against a server whose
//! certificate comes from a CA made for the test, trusted the way a private CA is: through the
//! system's store, here `SSL_CERT_FILE`.

use cachesweeper::Sweeper;
use cachesweeper::backend::{Backend, Redis, conformance};
use cachesweeper_suite::redis::RedisProcess;

#[test]
fn redis_over_tls_conforms() {
    let Some(server) = RedisProcess::start_tls() else {
        return;
    };
    // SAFETY: the only test of this binary, and no thread of ours reads the environment yet.
    unsafe { std::env::set_var("SSL_CERT_FILE", server.ca_file()) };
    let backend = Redis::from_url(&server.url()).unwrap();
    conformance::run_all(&backend);

    // The same port without TLS is no cache: every call fails, and a page still renders.
    let plain = Redis::from_url(&server.url().replace("rediss://", "redis://")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let found =
        runtime.block_on(plain.get_leased(&["conformance|a"], std::time::Duration::from_secs(1)));
    assert!(found.iter().all(Result::is_err), "{found:?}");
    let sweeper = Sweeper::builder().backend(plain).build().unwrap();
    assert!(sweeper.backend().name().starts_with("redis://"));
}
