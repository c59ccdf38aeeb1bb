//! The HTTP transport: the sync protocol to a `mesh-hub` over HTTP(S).
//!
//! * `send` is `POST {base}/mesh/sync` with the JSON [`Request`] and a bearer token; the answer
//!   is the JSON [`Response`]. Bodies are zstd-coded where the hub takes it and it pays
//!   (`http_coding`).
//! * `watch` is `GET {base}/mesh/notifications?changes=1` as server-sent events, zstd-coded
//!   when the hub codes it: each `change` event carries a [`Notification`]; the stream
//!   resumes from the last event id it saw when it is opened again, and ends when the hub
//!   revokes the device or the connection drops.
//! * the blob calls are `POST {base}/mesh/folders/{folder}/objects/missing` (a hash list in, the
//!   missing ones out; lists longer than the hub's 65,536 go in several requests),
//!   `POST …/objects` (a pack of objects, sent in batches of at most 4 MiB and 65,536 objects)
//!   and `POST …/objects/fetch` (a hash list in, a pack out). A fetched pack is read as it arrives and every complete object is
//!   verified against its hash: when the connection is cut midway, the objects received whole
//!   are returned (the caller asks again for the rest), and an object whose bytes do not match
//!   its hash fails the call with `Protocol`.
//!
//! Failures are typed ([`TransportError`]): 401 is `Unauthorized`, 403 `Forbidden`, 412
//! `PreconditionFailed`, other 4xx carry the hub's error code as a [`CoreError`] (`Remote`), a
//! body that is not the protocol is `Protocol`, a request that takes longer than
//! [`HttpConfig::timeout`] is `Timeout`, and a hub that cannot be reached is `Offline`.
//! Connection errors, 5xx and 429 are retried with exponential backoff (429 and 503 honour
//! `Retry-After`), other 4xx never.

use crate::transport::HttpConfig;
use mesh_core::id::DeviceId;
use mesh_core::trust::{Enrollment, PublicKey};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::blob::{pack, ChunkHash};
use mesh_core::id::FolderId;
use mesh_core::store::Cursor;
use mesh_core::sync::{Request, Response};
use mesh_core::CoreError;
use reqwest::header::{
    HeaderMap, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::transport::http_coding;
use crate::transport::{NextPage, Notification, Transport, TransportError, MAX_OBJECTS_RESPONSE};

/// The most hashes the hub takes in one request (and objects in one uploaded pack); longer
/// lists are sent in several requests.
const MAX_HASHES: usize = 65_536;
/// The most bytes of objects sent in one upload request (one larger object goes alone). Small
/// enough to finish within the default timeout on a slow uplink, and well under the hub's
/// default body limit of 32 MiB.
const UPLOAD_BATCH: usize = 4 << 20;
const HASHES_TYPE: &str = "application/x-mesh-hashes";
const PACK_TYPE: &str = "application/x-mesh-pack";

struct Inner {
    client: reqwest::Client,
    stream_client: reqwest::Client,
    base: String,
    token: String,
    config: HttpConfig,
    last_event_id: Mutex<Option<String>>,
    /// Whether the hub said it takes zstd-coded sync requests.
    zstd_requests: AtomicBool,
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
                zstd_requests: AtomicBool::new(false),
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

    /// Runs `once` until it succeeds, retrying connection failures, 5xx and 429 with backoff
    /// (honouring `Retry-After` up to [`HttpConfig::max_retry_after`]).
    async fn retrying<T, F, Fut>(&self, mut once: F) -> Result<T, TransportError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        let c = &self.inner.config;
        let mut attempt = 0u32;
        loop {
            let err = match once().await {
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

    /// `{base}/mesh/folders/{folder}/{tail}`, the folder id percent-encoded.
    fn folder_url(&self, folder: &FolderId, tail: &str) -> String {
        format!(
            "{}/mesh/folders/{}/{tail}",
            self.inner.base,
            path_segment(folder.as_str())
        )
    }

    /// POSTs a binary body; the answer when its status is a success.
    async fn post_once(
        &self,
        url: &str,
        content_type: &'static str,
        accept: &'static str,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, TransportError> {
        let inner = &self.inner;
        let resp = inner
            .client
            .post(url)
            .bearer_auth(&inner.token)
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT, accept)
            .body(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        Err(status_error(status, &headers, &body))
    }

    /// A successful answer's whole body.
    async fn post_bytes(
        &self,
        url: &str,
        content_type: &'static str,
        accept: &'static str,
        body: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let resp = self
            .post_once(url, content_type, accept, body.to_vec().into())
            .await?;
        Ok(resp.bytes().await.map_err(body_error)?.to_vec())
    }

    /// One `fetch`: the verified objects of the answer, read as they arrive.
    async fn fetch_once(
        &self,
        url: &str,
        asked: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        let body = pack::encode_hashes(asked);
        let resp = self
            .post_once(url, HASHES_TYPE, PACK_TYPE, body.into())
            .await?;
        let wanted: HashSet<ChunkHash> = asked.iter().copied().collect();
        let mut reader = PackReader::new(&wanted, asked.len());
        let mut bytes = resp.bytes_stream();
        loop {
            if reader.take_frames()? {
                return Ok(reader.out);
            }
            match bytes.next().await {
                Some(Ok(chunk)) => reader.push(&chunk),
                Some(Err(e)) if reader.out.is_empty() => return Err(body_error(e)),
                Some(Err(e)) => {
                    // Cut midway: keep what arrived whole; the caller asks again for the rest.
                    tracing::debug!(hub = %self.inner.base, error = %e, objects = reader.out.len(),
                        "object download cut; keeping the complete objects");
                    return Ok(reader.out);
                }
                None if reader.pending() && reader.out.is_empty() => {
                    return Err(TransportError::Protocol(
                        "pack answer ends inside an object".into(),
                    ))
                }
                None => return Ok(reader.out),
            }
        }
    }

    /// `GET /mesh/me`; `None` from a hub that does not have it (404).
    async fn whoami_once(&self) -> Result<Option<crate::transport::Identity>, TransportError> {
        const MAX_BODY: usize = 64 << 10;
        let inner = &self.inner;
        let mut resp = inner
            .client
            .get(format!("{}/mesh/me", inner.base))
            .bearer_auth(&inner.token)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(body_error)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(TransportError::Protocol("oversized /mesh/me answer".into()));
            }
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| TransportError::Protocol(format!("malformed /mesh/me answer: {e}")));
        }
        Err(status_error(status, &headers, &body))
    }

    /// A sync request, tried again as the configuration says (`next`: see [`send_once`]).
    ///
    /// [`send_once`]: Self::send_once
    async fn sync(
        &self,
        request: Request,
        next: Option<&NextPage>,
    ) -> Result<Response, TransportError> {
        let json = serde_json::to_vec(&request)
            .map_err(|e| TransportError::Protocol(format!("unserializable request: {e}")))?;
        let accept_zstd = http_coding::answer_worth_compressing(&request);
        self.retrying(|| self.send_once(&json, accept_zstd, next))
            .await
    }

    /// One sync request: zstd-coded when the hub has said it takes that, and sent again
    /// plain (with plain bodies from then on) when the hub refuses the coding. `next`: a
    /// pull's, told the answer's `Mesh-Next` as soon as its headers are in.
    async fn send_once(
        &self,
        json: &[u8],
        accept_zstd: bool,
        next: Option<&NextPage>,
    ) -> Result<Response, TransportError> {
        let inner = &self.inner;
        if inner.zstd_requests.load(Ordering::Relaxed) {
            if let Some(z) = http_coding::compress(json) {
                match self.post_sync(z, true, accept_zstd, next).await {
                    Err(TransportError::Remote(CoreError::InvalidJson(_))) => {}
                    Err(TransportError::Refused { code, .. })
                        if code == "unsupported_media_type" => {}
                    answer => return answer,
                }
                tracing::debug!(hub = %inner.base, "the hub refused a zstd body; sending plain ones");
                inner.zstd_requests.store(false, Ordering::Relaxed);
            }
        }
        self.post_sync(json.to_vec(), false, accept_zstd, next)
            .await
    }

    async fn post_sync(
        &self,
        body: Vec<u8>,
        zstd_body: bool,
        accept_zstd: bool,
        next: Option<&NextPage>,
    ) -> Result<Response, TransportError> {
        let inner = &self.inner;
        // No `Accept`: the hub answers sync requests in JSON only.
        let mut req = inner
            .client
            .post(format!("{}/mesh/sync", inner.base))
            .bearer_auth(&inner.token)
            .header(CONTENT_TYPE, "application/json");
        if zstd_body {
            req = req.header(CONTENT_ENCODING, http_coding::ZSTD);
        }
        if accept_zstd {
            req = req.header(ACCEPT_ENCODING, http_coding::ZSTD);
        }
        let resp = req.body(body).send().await.map_err(request_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if http_coding::hub_takes_zstd(&headers) {
            inner.zstd_requests.store(true, Ordering::Relaxed);
        }
        if let (true, Some(next)) = (status.is_success(), next) {
            if let Some(at) = next_page(&headers) {
                next.tell(at);
                // The engine's task, woken by this, would otherwise wait on this thread
                // (tokio runs a task woken by another next on the same worker, where no
                // other worker takes it) until the answer is read and parsed.
                tokio::task::yield_now().await;
            }
        }
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Protocol(format!("truncated response body: {e}"))
            }
        })?;
        if status.is_success() {
            let json = http_coding::decode_answer(&headers, &body)?;
            return serde_json::from_slice(&json)
                .map_err(|e| TransportError::Protocol(format!("malformed response: {e}")));
        }
        Err(status_error(status, &headers, &body))
    }
}

/// The answer's `Mesh-Next` header (see `docs/protocol.md`, "Asking ahead"): a position in
/// decimal digits, or nothing.
fn next_page(headers: &HeaderMap) -> Option<Cursor> {
    let v = headers.get(MESH_NEXT)?.to_str().ok()?.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Cursor)
}

/// The header in which a hub says where the page after a pull's answer starts.
const MESH_NEXT: &str = "mesh-next";

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
pub(crate) fn core_error(code: &str, message: String) -> Option<CoreError> {
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
        "invalid_blob" => CoreError::InvalidBlob(message),
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
    // Codes that say more than their status (a revoked device answers 401 or 403, a limit
    // 413 or 400): kept as they came, so that the client's error kind names them.
    if let Some(b) = &parsed {
        if matches!(
            b.code.as_str(),
            "revoked"
                | "untrusted_certificate"
                | "invalid_signature"
                | "limit_exceeded"
                | "quota_exceeded"
                | "payload_too_large"
        ) {
            return TransportError::Refused {
                code: b.code.clone(),
                message,
            };
        }
    }
    match status {
        StatusCode::UNAUTHORIZED => TransportError::Unauthorized,
        StatusCode::FORBIDDEN => TransportError::Forbidden(message),
        StatusCode::PRECONDITION_FAILED => TransportError::PreconditionFailed(message),
        StatusCode::TOO_MANY_REQUESTS => TransportError::RateLimited {
            retry_after: retry_after(headers),
        },
        s if s.is_server_error() => TransportError::Server(format!("HTTP {s}: {message}")),
        s => match parsed {
            Some(b) => match core_error(&b.code, b.message.clone()) {
                Some(e) => TransportError::Remote(e),
                None => TransportError::Refused {
                    code: b.code,
                    message: b.message,
                },
            },
            None => TransportError::Protocol(format!("HTTP {s}: {message}")),
        },
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.sync(request, None).await
    }

    async fn send_pull(
        &self,
        request: Request,
        next: &NextPage,
    ) -> Result<Response, TransportError> {
        self.sync(request, Some(next)).await
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        let inner = self.inner.clone();
        // At most twice: a second time without the cursor when the hub refused it.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut req = inner
                .stream_client
                .get(format!("{}/mesh/notifications?changes=1", inner.base))
                .bearer_auth(&inner.token)
                .header(ACCEPT, "text/event-stream")
                // Changes along compress; the hub codes each event as a frame of its own.
                .header(ACCEPT_ENCODING, http_coding::ZSTD);
            let last = inner
                .last_event_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let resumed = last.is_some();
            if let Some(id) = last {
                req = req.header("Last-Event-ID", id);
            }
            let resp = tokio::time::timeout(inner.config.timeout, req.send())
                .await
                .map_err(|_| TransportError::Timeout)?
                .map_err(request_error)?;
            let status = resp.status();
            if status.is_success() {
                break resp;
            }
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            if status == reqwest::StatusCode::BAD_REQUEST && resumed {
                // A cursor the hub no longer takes (another hub, or a hub restored or
                // restarted after a crash, in an epoch that does not continue the cursor's):
                // start afresh now; the engine's sync catches up what was missed.
                *inner
                    .last_event_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                if attempt < 2 {
                    continue;
                }
            }
            return Err(status_error(status, &headers, &body));
        };
        let coded = if http_coding::zstd_coded(resp.headers(), "the notification stream")? {
            Some(http_coding::StreamDecoder::new()?)
        } else {
            None
        };
        let bytes = resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed();
        let state = SseState {
            bytes,
            coded,
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

    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        let url = format!(
            "{}/mesh/devices/{}/certificate",
            self.inner.base,
            path_segment(device.as_str())
        );
        let body = serde_json::to_vec(&serde_json::json!({ "key": key }))
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        let answer = self
            .retrying(|| self.post_bytes(&url, "application/json", "application/json", &body))
            .await?;
        serde_json::from_slice(&answer)
            .map_err(|e| TransportError::Protocol(format!("malformed enrollment: {e}")))
    }

    async fn whoami(&self) -> Result<Option<crate::transport::Identity>, TransportError> {
        self.retrying(|| self.whoami_once()).await
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        let url = self.folder_url(folder, "objects/missing");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for batch in hashes.chunks(MAX_HASHES) {
            let body = pack::encode_hashes(batch);
            let answer = self
                .retrying(|| self.post_bytes(&url, HASHES_TYPE, HASHES_TYPE, &body))
                .await?;
            let missing = pack::decode_hashes(&answer)
                .map_err(|e| TransportError::Protocol(format!("missing objects: {e}")))?;
            let asked: HashSet<&ChunkHash> = batch.iter().collect();
            for h in missing {
                if !asked.contains(&h) {
                    return Err(TransportError::Protocol(format!(
                        "missing objects: {h} was not asked about"
                    )));
                }
                if seen.insert(h) {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        let url = self.folder_url(folder, "objects");
        let mut rest = &objects[..];
        while !rest.is_empty() {
            // At least one object, then as many as fit the batch.
            let mut n = 1;
            let mut size = rest[0].1.len();
            while n < rest.len() && n < MAX_HASHES && size + rest[n].1.len() <= UPLOAD_BATCH {
                size += rest[n].1.len();
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            let mut body = Vec::with_capacity(size + batch.len() * pack::FRAME_OVERHEAD);
            for (h, data) in batch {
                pack::write_frame(&mut body, h, data);
            }
            self.retrying(|| self.post_bytes(&url, PACK_TYPE, "application/json", &body))
                .await?;
            rest = tail;
        }
        Ok(())
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.folder_url(folder, "objects/fetch");
        let asked = &hashes[..hashes.len().min(MAX_HASHES)];
        self.retrying(|| self.fetch_once(&url, asked)).await
    }

    fn relays_blobs(&self) -> bool {
        true
    }

    async fn get_objects_waiting(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        wait: Duration,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        // Well inside the request's own timeout (the hub bounds it too).
        let wait = wait.min(self.inner.config.timeout / 2);
        let url = format!(
            "{}?wait={}",
            self.folder_url(folder, "objects/fetch"),
            wait.as_millis()
        );
        let asked = &hashes[..hashes.len().min(MAX_HASHES)];
        self.retrying(|| self.fetch_once(&url, asked)).await
    }
}

/// Percent-encodes an id for one path segment (everything but the unreserved characters).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response body that failed midway: a timeout, or a connection lost (retried).
fn body_error(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Offline(format!("response cut: {}", error_chain(&e)))
    }
}

/// Splits a pack as it arrives into verified objects.
struct PackReader<'a> {
    wanted: &'a HashSet<ChunkHash>,
    max_objects: usize,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    total: usize,
    out: Vec<(ChunkHash, Vec<u8>)>,
}

impl<'a> PackReader<'a> {
    fn new(wanted: &'a HashSet<ChunkHash>, max_objects: usize) -> Self {
        PackReader {
            wanted,
            max_objects,
            buf: Vec::new(),
            start: 0,
            total: 0,
            out: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Whether part of an object is buffered.
    fn pending(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Takes every complete frame buffered, verifying each. `Ok(true)` once the answer has all
    /// it may carry (as many objects as asked, or the response budget), so that a remote
    /// sending more is not read further.
    fn take_frames(&mut self) -> Result<bool, TransportError> {
        while let Some((h, data, used)) = pack::peek_frame(&self.buf[self.start..])
            .map_err(|e| TransportError::Protocol(e.to_string()))?
        {
            if !self.wanted.contains(&h) {
                return Err(TransportError::Protocol(format!(
                    "the hub sent object {h}, which was not asked for"
                )));
            }
            if !h.verifies(data) {
                return Err(TransportError::Protocol(format!(
                    "object {h} does not match its content"
                )));
            }
            self.total += data.len();
            self.out.push((h, data.to_vec()));
            self.start += used;
            if self.out.len() >= self.max_objects || self.total >= MAX_OBJECTS_RESPONSE {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

struct SseState {
    bytes: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    /// Set when the stream is zstd-coded: what turns its bytes into `buf`'s text.
    coded: Option<http_coding::StreamDecoder>,
    /// Text received and not yet taken as events; at most [`MAX_EVENT`] bytes (and one
    /// decoding step) when more is read.
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
            if self.buf.len() > MAX_EVENT {
                return None;
            }
            if let Some(d) = self.coded.as_mut().filter(|d| d.has_more()) {
                // One bounded step at a time, the complete events taken between steps.
                if d.step(&mut self.buf).is_err() {
                    return None;
                }
                continue;
            }
            match self.bytes.next().await {
                Some(Ok(chunk)) => match self.coded.as_mut() {
                    Some(d) => d.feed(&chunk),
                    None => self.buf.extend_from_slice(&chunk),
                },
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
    fn folder_ids_are_percent_encoded_in_paths() {
        assert_eq!(path_segment("f1.a_b-c~"), "f1.a_b-c~");
        assert_eq!(path_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
        let t = HttpTransport::new("http://hub/", "t").unwrap();
        assert_eq!(
            t.folder_url(&"x/y".parse().unwrap(), "objects/fetch"),
            "http://hub/mesh/folders/x%2Fy/objects/fetch"
        );
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let t = HttpTransport::new("http://x", "secret-token").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        assert!(HttpTransport::new("ftp://x", "t").is_err());
    }
}
