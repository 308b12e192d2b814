//! The crate's one error type.

use std::fmt;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cachesweeper.
///
/// Rendering never surfaces these: a fragment whose cache lookup fails is rendered as a miss and
/// the error is counted in [`Stats`](crate::StatsSnapshot). They reach you from configuration
/// ([`SweeperBuilder::build`](crate::SweeperBuilder::build)) and from calls you make yourself,
/// such as [`Sweeper::invalidate`](crate::Sweeper::invalidate).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable; the message says which setting and why.
    #[error("invalid cachesweeper configuration: {0}")]
    Config(String),
    /// The backend could not be reached or timed out.
    #[error("cache backend `{backend}` is unavailable: {message}")]
    Unavailable {
        /// Which backend (for memcached, the server URL).
        backend: String,
        /// What the backend or the operating system said.
        message: String,
    },
    /// The backend answered, but refused or failed the operation.
    #[error("cache backend `{backend}` failed: {message}")]
    Backend {
        /// Which backend.
        backend: String,
        /// What it said.
        message: String,
    },
    /// The server failed several times in a row, so it is skipped until its retry window ends
    /// (no request was sent).
    #[error(
        "cache server `{backend}` is skipped after repeated failures; retrying in {retry_in_ms} ms"
    )]
    CircuitOpen {
        /// Which server.
        backend: String,
        /// How long until the next attempt.
        retry_in_ms: u64,
    },
    /// An invalidation of this record failed in this process and is being retried: until it
    /// succeeds, this process neither serves nor stores fragments under its version.
    #[error("version `{key}` has an invalidation still being retried")]
    InvalidationPending {
        /// The version key.
        key: String,
    },
    /// A value under a counter key is not a counter (someone else wrote that key).
    #[error("value under version key `{key}` is not a counter")]
    NotACounter {
        /// The version key.
        key: String,
    },
}

// Only remote backends build these.
#[cfg_attr(not(feature = "memcache"), allow(dead_code))]
impl Error {
    pub(crate) fn unavailable(backend: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Unavailable {
            backend: backend.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn backend(backend: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Backend {
            backend: backend.to_string(),
            message: message.to_string(),
        }
    }
}
