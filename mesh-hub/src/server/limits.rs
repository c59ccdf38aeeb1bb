//! The limits of the hub's HTTP connections: how many, how long a request's header, an idle
//! connection and a request's body may take.

use std::time::Duration;

/// How many connections the hub holds, and how long it waits for each.
///
/// Defaults are safe for a hub on a public address: a client that does not send its header
/// within 10 s, stays idle for 60 s or takes more than 120 s to send a body is cut off, and
/// beyond 1024 connections new ones get `503` with `Retry-After` and are closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The most connections served at once; beyond it a new connection gets `503 Service
    /// Unavailable` with `Retry-After` and is closed.
    pub max_connections: usize,
    /// The longest a client may take to send a request's header, from the moment the
    /// connection opens or finishes its previous request (TLS handshake included).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and no bytes moving for this long is closed.
    /// (A connection waiting for its next request is also held to `header_read_timeout`, so it
    /// closes after the smaller of the two.)
    pub idle_timeout: Duration,
    /// The longest a client may take to send a request's body; past it the request fails and
    /// the connection closes.
    pub body_timeout: Duration,
    /// What `Retry-After` says when the hub refuses a connection for being full.
    pub retry_after: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(120),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The largest request header accepted (request line and fields), in bytes: a larger one gets
/// `431` and the connection closes. It bounds what a connection that never finishes its header
/// can make the hub hold (at most `max_connections` × this).
pub(crate) const MAX_HEADER_BYTES: usize = 32 << 10;

/// How many refused connections may be waiting at once for their `503` to be written; past
/// it, connections beyond the limit are closed without an answer.
pub(crate) const REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection may take to receive its `503`.
pub(crate) const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Whole seconds for a `Retry-After` header (at least one).
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.as_secs() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
    }
}
