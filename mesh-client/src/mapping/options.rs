//! How a mapping watches its directory: [`MappingOptions`].

use std::time::Duration;

/// How a mapping watches its directory.
///
/// Start from [`MappingOptions::default`] and change what you need with the `with_*` setters
/// (the struct is `#[non_exhaustive]`: fields may be added):
///
/// ```
/// use mesh_client::mapping::MappingOptions;
/// let manual = MappingOptions::default().with_watch(false).with_follow_remote(false);
/// assert!(!manual.watch && !manual.follow_remote);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MappingOptions {
    /// Watch the directory with file-system notifications.
    pub watch: bool,
    /// How long to wait after a notification for more before a pass. Right after a long
    /// pass the wait is longer: a pass started by notifications waits at least four times as
    /// long as the last pass took, since it ended (at most `rescan_interval`), so a file
    /// written all the time does not keep the tree rescanned back to back.
    pub debounce: Duration,
    /// How often to rescan without notifications (the fallback for missed events).
    pub rescan_interval: Duration,
    /// Run a pass when a sync brings changes to the folder's files.
    pub follow_remote: bool,
}

impl Default for MappingOptions {
    fn default() -> Self {
        MappingOptions {
            watch: true,
            debounce: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(60),
            follow_remote: true,
        }
    }
}

impl MappingOptions {
    /// Watch the directory with file-system notifications.
    #[must_use]
    pub fn with_watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// How long to wait after a notification for more before a pass.
    #[must_use]
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// How often to rescan without notifications (the fallback for missed events).
    #[must_use]
    pub fn with_rescan_interval(mut self, rescan_interval: Duration) -> Self {
        self.rescan_interval = rescan_interval;
        self
    }

    /// Run a pass when a sync brings changes to the folder's files.
    #[must_use]
    pub fn with_follow_remote(mut self, follow_remote: bool) -> Self {
        self.follow_remote = follow_remote;
        self
    }
}
