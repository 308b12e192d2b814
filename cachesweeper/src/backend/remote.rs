//! What every remote backend's builder sets the same way, and its setters, written once:
//! timeouts, the largest value, the circuit breaker. Defaults for a cache on the same LAN.

use std::time::Duration;

use super::DEFAULT_MAX_VALUE_LEN;
use super::breaker::{Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_AFTER};

/// A remote backend's common settings (see [`remote_setters`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote {
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) max_value_len: usize,
    pub(crate) failure_threshold: u32,
    pub(crate) retry_after: Duration,
}

impl Default for Remote {
    fn default() -> Self {
        Remote {
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(200),
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl Remote {
    /// A server's breaker, as configured.
    pub(crate) fn breaker(&self) -> Breaker {
        Breaker::new(self.failure_threshold, self.retry_after)
    }
}

/// The setters of [`Remote`] on a backend's builder, which holds it as its `remote` field.
macro_rules! remote_setters {
    ($builder:ty) => {
        impl $builder {
            /// How long dialing a server may take (default 100 ms).
            pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.remote.connect_timeout = timeout;
                self
            }

            /// How long one exchange (one server's share of a batch, written and read) may
            /// take (default 200 ms).
            pub fn io_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.remote.io_timeout = timeout;
                self
            }

            /// The largest value to store; larger fragments are rendered and not stored.
            /// Default: [`DEFAULT_MAX_VALUE_LEN`](crate::backend::DEFAULT_MAX_VALUE_LEN); match
            /// it to the server's limit.
            pub fn max_value_len(mut self, bytes: usize) -> Self {
                self.remote.max_value_len = bytes;
                self
            }

            /// Skips a server after this many transport failures in a row, for
            /// `retry_after`, then probes it with one call (default: 2 failures, 2 s).
            pub fn circuit_breaker(
                mut self,
                failures: u32,
                retry_after: std::time::Duration,
            ) -> Self {
                self.remote.failure_threshold = failures;
                self.remote.retry_after = retry_after;
                self
            }
        }
    };
}

pub(crate) use remote_setters;
