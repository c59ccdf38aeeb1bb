//! The accept loop: one task per connection, at most `max_connections` of them, each served by
//! hyper's HTTP/1 with a header-read timeout, an idle timeout and a request-body deadline;
//! connections past the limit get `503` with `Retry-After` and are closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::body::{Activity, Deadline, Tracked};
use super::limits::{
    retry_after_secs, ConnectionLimits, MAX_HEADER_BYTES, REFUSALS_IN_FLIGHT, REFUSAL_TIME,
};
use crate::error::ApiError;
use crate::ops::{request_id, Answered, Caller, Observer};

/// The response header carrying the request id of the log line.
const REQUEST_ID: &str = "x-request-id";

/// What every connection task shares.
pub(crate) struct Shared {
    pub app: Router,
    pub limits: ConnectionLimits,
    pub max_body: usize,
    pub tls: Option<TlsAcceptor>,
    pub observer: Observer,
}

/// Serves `shared.app` on `listener` until `shutdown` completes; then asks every connection
/// to close once its request in flight is answered, and waits for them.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let shared = Arc::new(shared);
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    tasks.spawn(connection(stream, shared.clone(), stopped.clone(), slot));
                } else if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    shared.observer.connection_refused();
                    tasks.spawn(refuse(stream, shared.clone(), slot));
                } else {
                    shared.observer.connection_refused();
                    drop(stream);
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A plain or TLS connection.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The connection, after its TLS handshake when the hub serves TLS.
    async fn open(stream: TcpStream, shared: &Shared, within: Duration) -> io::Result<Io> {
        match &shared.tls {
            None => Ok(Io::Plain(stream)),
            Some(acceptor) => match tokio::time::timeout(within, acceptor.accept(stream)).await {
                Ok(tls) => Ok(Io::Tls(Box::new(tls?))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            },
        }
    }
}

/// An [`Io`] that records when bytes move.
struct Watched {
    io: Io,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Completes once the connection has had no request in progress and no bytes moving for
/// `idle`.
async fn idle(activity: &Activity, idle: Duration) {
    loop {
        let quiet = activity.quiet_for();
        if quiet >= idle {
            if !activity.busy() {
                return;
            }
            // A request is in progress (a long-poll, say): it is not idle.
            activity.touch();
            tokio::time::sleep(idle).await;
        } else {
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _open = shared.observer.connection_guard();
    let limits = &shared.limits;
    let io = match Io::open(stream, &shared, limits.header_read_timeout).await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(error = %e, "connection dropped before its first request");
            return;
        }
    };
    let activity = Activity::new();
    activity.touch();
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let svc = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let busy = activity.request();
            async move {
                let resp = answer(req, &shared).await;
                let sent = shared.observer.sent();
                Ok::<_, Infallible>(resp.map(|b| Body::new(Tracked::new(b, sent, busy))))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection closed");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = idle(&activity, limits.idle_timeout), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers one request: refuses a declared body over the limit before reading it, gives the
/// body a deadline, and logs and counts the answer.
async fn answer(mut req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let started = Instant::now();
    let id = request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let caller = Caller::default();
    let mut resp = match too_large(&req, shared.max_body) {
        Some(refused) => refused,
        None => {
            req.extensions_mut().insert(caller.clone());
            let timeout = shared.limits.body_timeout;
            let received = shared.observer.received();
            let req = req.map(|b| Body::new(Deadline::new(b, timeout, received)));
            match shared.app.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    shared.observer.answered(&Answered {
        id: &id,
        method: &method,
        path: &path,
        route: crate::api::route_of(&path),
        status: resp.status().as_u16(),
        elapsed: started.elapsed(),
        caller: &caller,
    });
    resp
}

/// The `413` of a request whose declared body is over `max`, before any of it is read.
fn too_large(req: &Request<Incoming>, max: usize) -> Option<Response<Body>> {
    let len = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    if len <= max as u64 {
        return None;
    }
    let mut r = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body of {len} bytes is over the hub's limit of {max} bytes"),
    )
    .into_response();
    // The body is never read, so the connection cannot carry another request.
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some(r)
}

/// The `503` of a connection past the limit.
fn busy(retry_after: Duration) -> Response<Body> {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the hub serves as many connections as it may; retry later",
    )
    .into_response();
    let h = r.headers_mut();
    h.insert(
        RETRY_AFTER,
        HeaderValue::from(retry_after_secs(retry_after)),
    );
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answers every request of a connection past the limit with `503`, then closes it.
async fn refuse(stream: TcpStream, shared: Arc<Shared>, _slot: OwnedSemaphorePermit) {
    let retry_after = shared.limits.retry_after;
    let work = async {
        let io = Io::open(stream, &shared, REFUSAL_TIME).await?;
        let activity = Activity::new();
        let io = Watched { io, activity };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(REFUSAL_TIME)
            .max_header_size(MAX_HEADER_BYTES)
            .keep_alive(false);
        builder
            .serve_connection(
                TokioIo::new(io),
                service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(busy(retry_after))
                }),
            )
            .await
            .map_err(io::Error::other)
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, work).await;
}
