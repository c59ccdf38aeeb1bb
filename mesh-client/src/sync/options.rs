//! The timing of a sync engine: [`SyncOptions`].

use std::time::Duration;

/// Timing of a sync engine. Start from [`SyncOptions::default`] and change what you need
/// with the `with_*` setters (the struct is `#[non_exhaustive]`: fields may be added):
///
/// ```
/// use std::time::Duration;
/// use mesh_client::SyncOptions;
/// let manual = SyncOptions::default()
///     .with_auto(false)
///     .with_backoff_min(Duration::from_millis(10));
/// assert!(!manual.auto);
/// assert_eq!(manual.page_size, SyncOptions::default().page_size);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Entries per pull or push message.
    pub page_size: u32,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often to sync when nothing announces a change (a fallback for remotes whose
    /// notifications were lost).
    pub poll_interval: Duration,
    /// Sync by itself on local writes, remote notifications and the poll interval. When off,
    /// the engine syncs only on `MeshClient::sync_now` (and retries failures).
    pub auto: bool,
    /// Longest delay between two attempts to reopen a remote's notification stream once it
    /// ended (a hub restart, a dropped connection). Attempts start at `backoff_min` and
    /// double up to this, with jitter; each reopened stream is followed by a sync.
    pub reconnect_max: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            page_size: mesh_core::sync::MAX_PAGE,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(60),
            auto: true,
            reconnect_max: Duration::from_secs(1),
        }
    }
}

impl SyncOptions {
    /// Entries per pull or push message.
    #[must_use]
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// First retry delay after a failure.
    #[must_use]
    pub fn with_backoff_min(mut self, backoff_min: Duration) -> Self {
        self.backoff_min = backoff_min;
        self
    }

    /// Longest retry delay.
    #[must_use]
    pub fn with_backoff_max(mut self, backoff_max: Duration) -> Self {
        self.backoff_max = backoff_max;
        self
    }

    /// How often to sync when nothing announces a change (a fallback for remotes whose
    /// notifications were lost).
    #[must_use]
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sync by itself on local writes, remote notifications and the poll interval. When off,
    /// the engine syncs only on `MeshClient::sync_now` (and retries failures).
    #[must_use]
    pub fn with_auto(mut self, auto: bool) -> Self {
        self.auto = auto;
        self
    }

    /// Longest delay between two attempts to reopen a remote's notification stream once it
    /// ended (a hub restart, a dropped connection). Attempts start at `backoff_min` and
    /// double up to this, with jitter; each reopened stream is followed by a sync.
    #[must_use]
    pub fn with_reconnect_max(mut self, reconnect_max: Duration) -> Self {
        self.reconnect_max = reconnect_max;
        self
    }
}
