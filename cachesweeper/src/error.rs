//! The crate's one error type.

use std::fmt;
use std::sync::Arc;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cachesweeper.
///
/// Rendering never surfaces these: a fragment whose cache lookup fails is rendered as a miss and
/// the error is counted in [`Stats`](crate::StatsSnapshot). They reach you from configuration
/// ([`SweeperBuilder::build`](crate::SweeperBuilder::build)) and from calls you make yourself,
/// such as [`Sweeper::invalidate`](crate::Sweeper::invalidate).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable; the message says which setting and why.
    Config(String),
    /// The backend could not be reached or timed out.
    Unavailable {
        /// Which backend (for memcached, the server URL).
        backend: String,
        /// What the backend or the operating system said.
        message: String,
        /// The client's own error, if there is one (shared, so that one failed batch can
        /// answer for each of its keys).
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The backend answered, but refused or failed the operation.
    Backend {
        /// Which backend.
        backend: String,
        /// What it said.
        message: String,
        /// The client's own error, if there is one.
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The server failed several times in a row, so it is skipped until its retry window ends
    /// (no request was sent).
    CircuitOpen {
        /// Which server.
        backend: String,
        /// How long until the next attempt.
        retry_in_ms: u64,
    },
    /// An invalidation of this record failed in this process and is being retried: until it
    /// succeeds, this process neither serves nor stores fragments under its version.
    InvalidationPending {
        /// The version key.
        key: String,
    },
    /// A purge of the HTTP caches in front has not reached every one of them yet (one is
    /// down): it is being retried.
    PurgePending,
    /// A value under a counter key is not a counter (someone else wrote that key).
    NotACounter {
        /// The version key.
        key: String,
    },
    /// A template with `cachesweeper` blocks was rendered outside
    /// [`Scope::render`](crate::Scope::render) (by Askama's own `render()`, say), so there is
    /// no cache to read or to store in. It comes back as the render's error
    /// (`askama::Error::Custom`), and nothing is rendered.
    NoSweeper,
    /// A hole of a page ([`Holes`](crate::Holes)) could not be filled: the page does not fill
    /// holes, or its fill refused this one (an argument missing or of the wrong type).
    Hole {
        /// The hole's name.
        name: String,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// The database of a change log ([`changes`](crate::changes)) failed an operation; the
    /// source is the database client's error.
    Database {
        /// The client's own error.
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A tracked model's table is not set up for the change log (no trigger, an outdated
    /// trigger, a missing column or table): its changes would not reach the cache.
    Untracked {
        /// The table.
        table: String,
        /// What is wrong with it, and what to do.
        problem: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) => write!(f, "invalid cachesweeper configuration: {message}"),
            // The client's own error is the source, so its message is not repeated here: a
            // report that prints the chain (anyhow, eyre, `Error::report`) would show it twice.
            Error::Unavailable {
                backend,
                message,
                source,
            }
            | Error::Backend {
                backend,
                message,
                source,
            } => {
                let what = match self {
                    Error::Unavailable { .. } => "is unavailable",
                    _ => "failed",
                };
                write!(f, "cache backend `{backend}` {what}")?;
                match source {
                    Some(_) => Ok(()),
                    None => write!(f, ": {message}"),
                }
            }
            Error::CircuitOpen {
                backend,
                retry_in_ms,
            } => write!(
                f,
                "cache server `{backend}` is skipped after repeated failures; retrying in {retry_in_ms} ms"
            ),
            Error::InvalidationPending { key } => {
                write!(f, "version `{key}` has an invalidation still being retried")
            }
            Error::PurgePending => f.write_str(
                "an HTTP cache has not taken a purge yet; it is being retried in the background",
            ),
            Error::NotACounter { key } => {
                write!(f, "value under version key `{key}` is not a counter")
            }
            Error::NoSweeper => f.write_str(
                "a `cachesweeper` block was rendered without a sweeper: render the page with \
                 `sweeper.scope().render(&page)` (or `render_async`), not Askama's own \
                 `render()`",
            ),
            Error::Hole { name, problem } => write!(f, "hole `{name}`: {problem}"),
            Error::Database { .. } => f.write_str("the change log's database failed"),
            Error::Untracked { table, problem } => write!(
                f,
                "table `{table}` is not tracked by the change log: {problem}"
            ),
        }
    }
}

/// The error and its sources, `: `-separated, for the log: a `tracing` field shows only
/// `Display`, which leaves the client's error to [`source`](std::error::Error::source).
pub(crate) struct Chain<'a>(pub(crate) &'a Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        std::iter::successors(std::error::Error::source(self.0), |error| error.source())
            .try_for_each(|error| write!(f, ": {error}"))
    }
}

/// Written out rather than derived with thiserror: its `#[source]` would hand out the `Arc`
/// that lets one batch's error answer for each key, and `downcast_ref` to the client's own
/// error type would fail on it; this hands out the client's error itself.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Unavailable { source, .. } | Error::Backend { source, .. } => {
                Some(source.as_deref()?)
            }
            Error::Database { source } => Some(source.as_ref()),
            _ => None,
        }
    }
}

// Only remote backends build these.
#[cfg_attr(not(any(feature = "memcache", feature = "redis")), allow(dead_code))]
impl Error {
    /// The backend could not be reached: `error` is why.
    pub(crate) fn unavailable(
        backend: impl fmt::Display,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            backend: backend.to_string(),
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// The backend failed the operation: `error` is its client's error.
    pub(crate) fn backend(
        backend: impl fmt::Display,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend: backend.to_string(),
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// The backend failed the operation, as `message` says (no client error behind it).
    pub(crate) fn backend_message(backend: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Backend {
            backend: backend.to_string(),
            message: message.to_string(),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    #[test]
    fn a_backend_error_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let error = super::Error::unavailable("memcache://127.0.0.1:1", io);
        // The source's message is said once in a report of the chain, not twice.
        assert_eq!(
            error.to_string(),
            "cache backend `memcache://127.0.0.1:1` is unavailable"
        );
        let source = error.source().expect("the client's error");
        assert_eq!(source.to_string(), "read timed out");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            super::Chain(&error).to_string(),
            "cache backend `memcache://127.0.0.1:1` is unavailable: read timed out"
        );
    }

    #[test]
    fn an_error_without_a_source_says_its_message() {
        let error = super::Error::backend_message("redis://127.0.0.1:1", "CLUSTERDOWN");
        assert_eq!(
            error.to_string(),
            "cache backend `redis://127.0.0.1:1` failed: CLUSTERDOWN"
        );
        assert!(error.source().is_none());
    }
}
