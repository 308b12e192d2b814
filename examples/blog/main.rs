//! The cachesweeper demo blog: articles, comments and like/dislike votes, every comment a cached
//! fragment, a vote invalidating that comment and the article page around it (through the
//! database's change log: no handler calls `invalidate`).
//!
//! ```text
//! cargo run --example blog                  # embedded cache, a temporary SQLite file
//! cargo run --example blog -- --memcache memcache://127.0.0.1:11211
//! cargo run --example blog -- --redis redis://127.0.0.1:6379
//! cargo run --example blog -- --redis-cluster redis://127.0.0.1:7000,redis://127.0.0.1:7001
//! cargo run --example blog -- --no-cache    # the uncached reference render
//! cargo run --example blog -- --memcache memcache://127.0.0.1:11211 --varnish 127.0.0.1:6081
//!                                             # behind Varnish (scripts/blog-varnish.sh)
//! cargo run --example blog -- --postgres postgresql://blog@localhost/blog
//! ```
//!
//! Each HTML response says what the cache did for it in `X-Fragment-Cache: hits=H misses=M`, and
//! the log says it too; `GET /stats` has the counters since start, by fragment name too, and
//! `GET /metrics` the same in Prometheus's text format. Any page with `?cache_debug=1` outlines
//! each fragment on it: green where the cache served it, red where it was rendered.
//!
//! - `models.rs`: the records, `#[derive(Sweepable)]`
//! - `db/`: the connection pool, schema and queries, on SQLite (`db/sqlite.rs`) or PostgreSQL
//!   (`db/postgres.rs`); the database's change log, not the handlers, invalidates the cache;
//!   `seed.rs`: the demo content
//! - `views.rs`: the Askama templates (in `templates/blog/`); `markdown.rs`: bodies to HTML
//! - `routes.rs`: the HTTP handlers

mod db;
mod markdown;
mod models;
mod routes;
mod seed;
mod views;
mod visitor;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cachesweeper::Sweeper;
use cachesweeper::backend::{self, Null};
use cachesweeper::http_cache::HttpCaches;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The cachesweeper demo blog.
#[derive(Debug, Parser)]
#[command(name = "blog")]
struct Args {
    /// Address to serve on (port 0: any free port; the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,

    /// Cache fragments in memcached: one URL or several, comma-separated
    /// (memcache://HOST:PORT). Default: an embedded in-process cache.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with_all = ["no_cache", "redis", "redis_cluster"])]
    memcache: Option<String>,

    /// Cache fragments in Redis (or Valkey): redis://HOST:PORT.
    #[arg(long, value_name = "URL", conflicts_with_all = ["no_cache", "redis_cluster"])]
    redis: Option<String>,

    /// Cache fragments in a Redis Cluster: one or more seed nodes, comma-separated
    /// (redis://HOST:PORT).
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "no_cache")]
    redis_cluster: Option<String>,

    /// Cache nothing: every fragment is rendered (the reference to compare cached pages with).
    #[arg(long)]
    no_cache: bool,

    /// SQLite database file (created and seeded if empty). Default: a file of this process in
    /// the temporary directory, removed at exit.
    #[arg(long, value_name = "PATH", conflicts_with = "postgres")]
    db: Option<PathBuf>,

    /// Keep the blog in PostgreSQL instead: a connection string
    /// (postgresql://USER@HOST:PORT/DATABASE, or host=... user=... dbname=...). The schema is
    /// created and seeded if missing; several blog processes may share the database.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,

    /// How many articles to seed an empty database with.
    #[arg(long, default_value_t = 20)]
    articles: u32,

    /// How many comments to seed each article with.
    #[arg(long, default_value_t = 50)]
    comments: u32,

    /// The secret that signs visitors' cookies and CSRF tokens. Give several blog processes
    /// serving one site the same one. Default: one drawn at start (a restart signs everyone
    /// out).
    #[arg(long, value_name = "SECRET")]
    session_secret: Option<String>,

    /// An HTTP cache in front of the blog (Varnish with vmod xkey, `examples/blog/varnish.vcl`)
    /// at HOST:PORT, purged by tag on every write; repeat it for several. Pages that are the
    /// same for everyone (an anonymous visitor's) are then sent for it to keep.
    #[arg(long, value_name = "HOST:PORT")]
    varnish: Vec<String>,

    /// Milliseconds an article page's render waits after reading every version it shows: a
    /// slow page, for the tests of pages rendered across a write (behind Varnish).
    #[arg(long, hide = true, default_value_t = 0)]
    slow_render_ms: u64,

    /// Render and invalidate with the blocking API on tokio's blocking pool, as before the
    /// async API: the baseline of the throughput benchmark (BENCHMARKS.md).
    #[arg(long, hide = true)]
    blocking_api: bool,
}

// glibc's allocator spent a quarter of a warm page's CPU in malloc, free and consolidating
// freed chunks (the 65 KB article page is allocated and freed on every request, across worker
// threads); with mimalloc a warm page costs 176 µs of the blog's CPU instead of 255, and an
// uncached one 612 instead of 727 (`scripts/bench-blog.sh`; BENCHMARKS.md, "Run 10").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("blog: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Before the sweeper is built: it registers its metrics then, with the recorder installed
    // at that moment; built first, it would count into none.
    let metrics = install_metrics()?;
    let builder = Sweeper::builder();
    let builder = if args.no_cache {
        builder.backend(Null)
    } else if let Some(urls) = &args.memcache {
        builder.backend(backend::Memcached::from_url(urls)?)
    } else if let Some(url) = &args.redis {
        builder.backend(backend::Redis::from_url(url)?)
    } else if let Some(urls) = &args.redis_cluster {
        builder.backend(backend::Redis::cluster(urls)?)
    } else {
        builder
    };
    let builder = if args.varnish.is_empty() {
        builder
    } else {
        builder.http_caches(HttpCaches::purge_to(&args.varnish))
    };
    let sweeper = builder.build()?;

    // Two cores: the default (one worker per core) is right. Pages render on the workers and
    // await the cache and the database; SQLite runs on its pool's own threads (db/sqlite.rs).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let temp_db = (args.db.is_none() && args.postgres.is_none()).then(db::TempDb::new);
    let db = match (&args.postgres, args.db.as_deref()) {
        (Some(url), _) => runtime.block_on(db::Db::postgres(url, &sweeper))?,
        (None, path) => {
            let path = path
                .or(temp_db.as_ref().map(db::TempDb::path))
                .expect("a file either way");
            db::Db::sqlite(path, &sweeper)?
        }
    };
    // Seeding is a write like any other: the change log invalidates what it wrote as it
    // commits, which gives every record a version older than the first request, so the first
    // page view already stores its fragments (a render that meets a version it created itself
    // stores nothing).
    let (articles, comments) = (args.articles, args.comments);
    if runtime.block_on(db.seed_if_empty(articles, comments))? {
        tracing::info!(articles, comments, "seeded the database");
    }
    let keys = visitor::Keys::new(args.session_secret.as_deref());
    let app = routes::App::new(
        db,
        sweeper.clone(),
        metrics.clone(),
        args.blocking_api,
        keys,
        std::time::Duration::from_millis(args.slow_render_ms),
    );

    runtime.block_on(async {
        // Without the exporter's own listener nothing drains its histograms between scrapes,
        // and a blog nobody scrapes would grow them without bound.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        });
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        let addr = listener.local_addr()?;
        // The first line of stdout, which scripts and the end-to-end test read to find us.
        println!("blog listening on http://{addr}");
        std::io::stdout().flush()?;
        tracing::info!(%addr, backend = sweeper.backend().name(), "serving");
        axum::serve(listener, routes::router(app))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        // Invalidations that failed (the cache was down) are being retried: give them a moment
        // to land, so that none is lost with the process.
        if let Err(error) = sweeper.flush_async(FLUSH_TIMEOUT).await {
            tracing::error!(%error, "invalidations still pending at shutdown");
        }
        std::io::Result::Ok(())
    })?;
    Ok(())
}

/// Installs the process's metrics recorder, whose handle renders `GET /metrics`.
///
/// The metrics crate's own Prometheus exporter: the library counts through the `metrics`
/// facade, and this is the recorder its authors keep in step with it. Only its recorder is
/// used (no listener or push gateway of its own): the blog's router serves the text.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error + Send + Sync>> {
    let handle = PrometheusBuilder::new()
        // Buckets rather than the default summary: histograms from several blog processes add
        // up in Prometheus, quantiles do not. From an embedded lookup (microseconds) to
        // memcached's timeouts (hundreds of milliseconds).
        .set_buckets_for_metric(
            Matcher::Full("cachesweeper_round_trip_seconds".to_owned()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .install_recorder()?;
    Ok(handle)
}

/// How often the metrics recorder drains its histograms.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// How long shutdown waits for failed invalidations to be retried.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on Ctrl-C or SIGTERM: the server stops accepting, finishes its requests, then
/// flushes the sweeper.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

/// Logs to stderr (stdout carries only the URL line), at info level by default; `RUST_LOG`
/// takes target=level directives, e.g. `RUST_LOG=info,cachesweeper=debug` for every hit and
/// miss.
fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}
