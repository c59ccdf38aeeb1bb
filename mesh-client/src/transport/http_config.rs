//! Timeouts and retries of an [`HttpTransport`](crate::transport::HttpTransport): [`HttpConfig`].

use std::time::Duration;

/// Timeouts and retries of an [`HttpTransport`](crate::transport::HttpTransport).
///
/// Start from [`HttpConfig::default`] and change what you need with the `with_*` setters (the
/// struct is `#[non_exhaustive]`: fields may be added):
///
/// ```
/// use std::time::Duration;
/// use mesh_client::transport::HttpConfig;
/// let config = HttpConfig::default().with_retries(0).with_timeout(Duration::from_secs(5));
/// assert_eq!(config.retries, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The longest one request may take, from connecting to the end of the response body.
    pub timeout: Duration,
    /// The longest a connection may take to open.
    pub connect_timeout: Duration,
    /// A notification stream silent for this long is considered dead (the hub sends a
    /// heartbeat every 15 s).
    pub stream_idle_timeout: Duration,
    /// How many times a failed request is tried again (connection errors, 5xx, 429).
    pub retries: u32,
    /// The first retry delay; it doubles at each try.
    pub backoff_min: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured; a hub asking for more gets `RateLimited` back at
    /// once so that the caller's own backoff takes over.
    pub max_retry_after: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(45),
            retries: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl HttpConfig {
    /// The longest one request may take, from connecting to the end of the response body.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a connection may take to open.
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// A notification stream silent for this long is considered dead (the hub sends a
    /// heartbeat every 15 s).
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, stream_idle_timeout: Duration) -> Self {
        self.stream_idle_timeout = stream_idle_timeout;
        self
    }

    /// How many times a failed request is tried again (connection errors, 5xx, 429).
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The first retry delay; it doubles at each try.
    #[must_use]
    pub fn with_backoff_min(mut self, backoff_min: Duration) -> Self {
        self.backoff_min = backoff_min;
        self
    }

    /// The longest retry delay.
    #[must_use]
    pub fn with_backoff_max(mut self, backoff_max: Duration) -> Self {
        self.backoff_max = backoff_max;
        self
    }

    /// The longest `Retry-After` honoured; a hub asking for more gets `RateLimited` back at
    /// once so that the caller's own backoff takes over.
    #[must_use]
    pub fn with_max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }
}
