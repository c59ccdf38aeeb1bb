//! Serving the API over TCP, plain or TLS: the accept loop with its connection limits and
//! timeouts, request rates, and TLS configuration.

pub(crate) mod body;
mod limits;
pub(crate) mod listener;
pub(crate) mod rate;
mod tls;

pub(crate) use limits::retry_after_secs;
pub use limits::ConnectionLimits;
pub use rate::RateLimits;
pub use tls::TlsConfig;
