//! The engine's notification stream: its state, and the jittered backoff of its reopening.

use std::time::Duration;

use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::transport::Notification;

/// The engine's notification stream and its reconnection state.
pub(crate) struct Stream {
    pub watch: Option<BoxStream<'static, Notification>>,
    /// Whether to keep a stream at all (`auto` on, and the transport has streams).
    pub supported: bool,
    /// Failed opens (or young ends) in a row.
    pub failures: u32,
    /// When to try to open it next (`None`: at once).
    pub retry_at: Option<Instant>,
    pub opened_at: Instant,
}

/// A stream that lived this long ended normally: reconnection starts over from the shortest
/// delay.
pub(crate) const STREAM_SETTLED: Duration = Duration::from_secs(30);

/// `min · 2^failures`, at most `max`, with full jitter over the upper half (so that many
/// clients do not retry in step), and at least `hint`.
pub(crate) fn jittered(
    min: Duration,
    max: Duration,
    failures: u32,
    hint: Option<Duration>,
) -> Duration {
    let exp = min.saturating_mul(1u32 << failures.min(16)).min(max);
    let half = exp / 2;
    let jitter = Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64));
    (half + jitter).max(hint.unwrap_or_default())
}
