//! The HTTP transport: the sync protocol to a `mesh-hub` over HTTP(S).
//!
//! * `send` is `POST {base}/mesh/sync` with the JSON [`Request`] and a bearer token; the answer
//!   is the JSON [`Response`].
//! * `watch` is `GET {base}/mesh/notifications` as server-sent events: each `change` event
//!   carries a [`Notification`]; the stream resumes from the last event id it saw when it is
//!   opened again, and ends when the hub revokes the device or the connection drops.
//!
//! Failures are typed ([`TransportError`]): 401 is `Unauthorized`, 403 `Forbidden`, 412
//! `PreconditionFailed`, other 4xx carry the hub's error code as a [`CoreError`] (`Remote`), a
//! body that is not the protocol is `Protocol`, a request that takes longer than
//! [`HttpConfig::timeout`] is `Timeout`, and a hub that cannot be reached is `Offline`.
//! Connection errors, 5xx and 429 are retried with exponential backoff (429 and 503 honour
//! `Retry-After`), other 4xx never.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::sync::{Request, Response};
use mesh_core::CoreError;
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::transport::{Notification, Transport, TransportError};

/// Timeouts and retries of an [`HttpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
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

struct Inner {
    client: reqwest::Client,
    stream_client: reqwest::Client,
    base: String,
    token: String,
    config: HttpConfig,
    last_event_id: Mutex<Option<String>>,
}

/// A [`Transport`] to a mesh hub over HTTP (reqwest with rustls). Cheap to clone.
///
/// ```
/// use mesh_client::transport::{HttpTransport, Transport};
/// let t = HttpTransport::new("http://127.0.0.1:7300", "TOKEN").unwrap();
/// assert_eq!(t.describe(), "hub at http://127.0.0.1:7300");
/// ```
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpTransport")
            .field("base", &self.inner.base)
            .finish()
    }
}

/// The JSON error body of the hub: `{"code": …, "message": …}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

impl HttpTransport {
    /// A transport to the hub at `base_url` (e.g. `http://127.0.0.1:7300`) with a device's
    /// bearer token and the default [`HttpConfig`].
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self, TransportError> {
        Self::with_config(base_url, token, HttpConfig::default())
    }

    /// A transport with explicit timeouts and retries.
    pub fn with_config(
        base_url: &str,
        token: impl Into<String>,
        config: HttpConfig,
    ) -> Result<Self, TransportError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TransportError::Protocol(format!(
                "hub URL {base:?} is not http:// or https://"
            )));
        }
        let build = |b: reqwest::ClientBuilder| {
            b.connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| TransportError::Protocol(format!("HTTP client: {e}")))
        };
        let client = build(reqwest::Client::builder().timeout(config.timeout))?;
        let stream_client =
            build(reqwest::Client::builder().read_timeout(config.stream_idle_timeout))?;
        Ok(HttpTransport {
            inner: Arc::new(Inner {
                client,
                stream_client,
                base,
                token: token.into(),
                config,
                last_event_id: Mutex::new(None),
            }),
        })
    }

    /// The hub's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.inner.config;
        let exp = c
            .backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(c.backoff_max);
        // Jitter over the upper half so that many clients do not retry in step.
        let half = exp / 2;
        half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
    }

    async fn send_once(&self, request: &Request) -> Result<Response, TransportError> {
        let inner = &self.inner;
        let resp = inner
            .client
            .post(format!("{}/mesh/sync", inner.base))
            .bearer_auth(&inner.token)
            .header(ACCEPT, "application/json")
            .json(request)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Protocol(format!("truncated response body: {e}"))
            }
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| TransportError::Protocol(format!("malformed response: {e}")));
        }
        Err(status_error(status, &headers, &body))
    }
}

fn request_error(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Connection refused or reset, DNS, TLS: the hub is out of reach for now.
        TransportError::Offline(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How long a response asks to wait: `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let delta = when.timestamp() - now;
    Some(Duration::from_secs(delta.max(0) as u64))
}

/// Maps a hub error code back to the core error it stands for.
fn core_error(code: &str, message: String) -> Option<CoreError> {
    Some(match code {
        "invalid_id" => CoreError::InvalidId {
            kind: "id",
            reason: message,
        },
        "invalid_time" => CoreError::InvalidTime {
            value: String::new(),
            reason: message,
        },
        "invalid_json" => CoreError::InvalidJson(message),
        "invalid_sync" => CoreError::InvalidSync {
            id: String::new(),
            reason: message,
        },
        "duplicate_id" => CoreError::DuplicateId {
            id: String::new(),
            context: message,
        },
        "not_found" => CoreError::NotFound {
            kind: "resource",
            id: message,
        },
        "already_exists" => CoreError::AlreadyExists {
            kind: "resource",
            id: message,
        },
        "permission_denied" => CoreError::PermissionDenied(message),
        "store" => CoreError::Store(message),
        // invalid_xml and the hub's own codes (payload_too_large, invalid_query, …) have no
        // richer core form.
        "protocol" | "invalid_xml" => CoreError::Protocol(message),
        _ => return None,
    })
}

fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> TransportError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .map(|b| b.message.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        StatusCode::UNAUTHORIZED => TransportError::Unauthorized,
        StatusCode::FORBIDDEN => TransportError::Forbidden(message),
        StatusCode::PRECONDITION_FAILED => TransportError::PreconditionFailed(message),
        StatusCode::TOO_MANY_REQUESTS => TransportError::RateLimited {
            retry_after: retry_after(headers),
        },
        s if s.is_server_error() => TransportError::Server(format!("HTTP {s}: {message}")),
        s => match parsed.and_then(|b| core_error(&b.code, b.message)) {
            Some(e) => TransportError::Remote(e),
            None => TransportError::Protocol(format!("HTTP {s}: {message}")),
        },
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let c = &self.inner.config;
        let mut attempt = 0u32;
        loop {
            let err = match self.send_once(&request).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let wait = match &err {
                TransportError::Offline(_) | TransportError::Server(_) => self.backoff(attempt),
                TransportError::RateLimited { retry_after } => match retry_after {
                    Some(d) if *d > c.max_retry_after => return Err(err),
                    Some(d) => (*d).max(self.backoff(attempt)),
                    None => self.backoff(attempt),
                },
                _ => return Err(err),
            };
            if attempt >= c.retries {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(hub = %self.inner.base, error = %err, ?wait, attempt, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        let inner = self.inner.clone();
        let mut req = inner
            .stream_client
            .get(format!("{}/mesh/notifications", inner.base))
            .bearer_auth(&inner.token)
            .header(ACCEPT, "text/event-stream");
        let last = inner
            .last_event_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::time::timeout(inner.config.timeout, req.send())
            .await
            .map_err(|_| TransportError::Timeout)?
            .map_err(request_error)?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(status_error(status, &headers, &body));
        }
        let bytes = resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed();
        let state = SseState {
            bytes,
            buf: Vec::new(),
            inner,
            done: false,
        };
        Ok(stream::unfold(state, |mut st| async move {
            let n = st.next_notification().await?;
            Some((n, st))
        })
        .boxed())
    }

    fn describe(&self) -> String {
        format!("hub at {}", self.inner.base)
    }
}

struct SseState {
    bytes: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    inner: Arc<Inner>,
    done: bool,
}

/// The longest server-sent event accepted.
const MAX_EVENT: usize = 1 << 20;

impl SseState {
    async fn next_notification(&mut self) -> Option<Notification> {
        loop {
            if self.done {
                return None;
            }
            while let Some(end) = event_end(&self.buf) {
                let raw: Vec<u8> = self.buf.drain(..end.1).collect();
                let text = String::from_utf8_lossy(&raw[..end.0]).into_owned();
                match self.event(&text) {
                    Some(Ok(n)) => return Some(n),
                    Some(Err(())) => {
                        self.done = true;
                        return None;
                    }
                    None => {}
                }
            }
            match self.bytes.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > MAX_EVENT {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }

    /// One event's lines: `Some(Ok)` for a change, `Some(Err)` when the stream must end,
    /// `None` for anything to skip.
    fn event(&self, text: &str) -> Option<Result<Notification, ()>> {
        let (mut kind, mut data, mut id) = ("message", String::new(), None);
        for line in text.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => kind = if value == "change" { "change" } else { "other" },
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "id" => id = Some(value.to_owned()),
                _ => {}
            }
            if field == "event" && value == "revoked" {
                return Some(Err(()));
            }
        }
        if kind != "change" {
            return None;
        }
        let n: Notification = serde_json::from_str(&data).ok()?;
        if let Some(id) = id {
            *self
                .inner
                .last_event_id
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(id);
        }
        Some(Ok(n))
    }
}

/// The end of the first complete event in `buf`: (end of its text, end including the blank
/// line).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, i + 2));
        }
        if buf[i] == b'\n' && buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, i + 3));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines() {
        assert_eq!(event_end(b"data: x\n\nmore"), Some((7, 9)));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some((8, 11)));
        assert_eq!(event_end(b"data: x\n"), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let t = HttpTransport::new("http://x", "secret-token").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        assert!(HttpTransport::new("ftp://x", "t").is_err());
    }
}
