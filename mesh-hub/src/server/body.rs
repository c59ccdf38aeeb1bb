//! Bodies wrapped by the server: a request body that must arrive before a deadline, and a
//! response body that keeps its connection counted as busy and reports what it sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

/// The error of a request body that was not received in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub(crate) struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes.
pub(crate) struct Deadline<B> {
    inner: B,
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    received: Counter,
}

impl<B> Deadline<B> {
    /// `inner`, failing `limit` from now; its bytes are added to `received`.
    pub fn new(inner: B, limit: Duration, received: Counter) -> Self {
        Deadline {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            received,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &r {
                if let Some(data) = frame.data_ref() {
                    this.received.inc_by(data.len() as u64);
                }
            }
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is doing, watched by its idle timer.
#[derive(Debug)]
pub(crate) struct Activity {
    started: std::time::Instant,
    /// Milliseconds since `started` of the last byte read or written.
    last: AtomicU64,
    /// Requests received whose response is not sent yet.
    busy: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            started: std::time::Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    /// Records that bytes moved now.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long since bytes last moved.
    pub fn quiet_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }

    /// Whether a request is in progress.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    /// Counts a request as in progress until the guard drops.
    pub fn request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Told the number of bytes of each response frame sent.
pub(crate) trait Sent: Send + 'static {
    /// `n` more bytes of the body were produced.
    fn bytes(&mut self, n: usize);
}

/// A response body that holds its request's [`Busy`] guard until it is sent or dropped, and
/// reports its bytes.
pub(crate) struct Tracked<B, S> {
    inner: B,
    sent: S,
    _busy: Busy,
}

impl<B, S> Tracked<B, S> {
    pub fn new(inner: B, sent: S, busy: Busy) -> Self {
        Tracked {
            inner,
            sent,
            _busy: busy,
        }
    }
}

impl<B, S> Body for Tracked<B, S>
where
    B: Body<Data = Bytes> + Unpin,
    S: Sent + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if let Some(data) = frame.data_ref() {
                this.sent.bytes(data.len());
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
