//! Blob objects of a folder: which the hub lacks, upload and download in packs, and single
//! objects or whole assembled blobs over plain HTTP with byte ranges.
//!
//! Objects (chunks and manifests, see `mesh_core::blob`) are stored once in the hub's
//! [`BlobStore`](mesh_store::BlobStore), but a folder sees only the objects it claims:
//! an upload claims the objects for the folder it names, and every read goes through that claim.
//! Knowing a hash therefore never grants its bytes, and asking never reveals whether another
//! folder holds them. Access follows the folder's member roles like every folder resource: a
//! user who is not an active member gets 404 (as for a folder that does not exist), readers may
//! query and download, and uploading needs the right to create entries (authors and up).
//!
//! Store work runs on the blocking pool; large answers are streamed a piece at a time so that
//! neither a 256 MiB blob nor a slow reader holds memory or a blocking thread.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    IF_RANGE, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use mesh_core::blob::MAX_OBJECTS_RESPONSE;
use mesh_core::blob::{pack, ChunkHash, Manifest};
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::Action;
use mesh_core::sync::guard;
use mesh_core::CoreError;
use mesh_store::BlobStore;
use mesh_store::StoreError;

use crate::api::blob_stream::{check_manifest, check_uploaded, object_body, READ_PIECE};
use crate::api::rest::folder_id;
use crate::api::{content_type, no_content, Auth, RawBody};
use crate::error::ApiError;
use crate::state::HubState;
use crate::uploads::Receiving;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// The store-wide lock under which a quota'd upload is checked and written.
const QUOTA_LOCK: &str = "mesh_quota_bytes";

/// The most hashes one request may carry (`missing` and `fetch`), and the most objects in one
/// uploaded pack.
pub(crate) const MAX_HASHES: usize = 65_536;
/// The media type of a hash list: N × 32 raw hash bytes.
pub(crate) const HASHES_TYPE: &str = "application/x-mesh-hashes";
/// The media type of a pack: frames of hash (32 bytes), length (u32 BE) and bytes.
pub(crate) const PACK_TYPE: &str = "application/x-mesh-pack";
/// About how many bytes one blocking step gathers while streaming an answer.
const PIECE: usize = 1 << 20;
/// The most hashes one blocking step of `fetch` looks up.
const STEP_HASHES: usize = 512;
/// How many hashes at the head of a waiting fetch's list it looks for when an upload wakes it.
const WAIT_PROBE: usize = 64;

// ---- access, bodies, errors ----------------------------------------------------------------

/// The folder named in the path, once `user` is known to be an active member whose role allows
/// `action`: a non-member gets the 404 of a folder that does not exist, a member whose role
/// falls short 403.
async fn access(
    state: &HubState,
    user: &UserId,
    folder: &str,
    action: Action<'static>,
) -> Result<FolderId, ApiError> {
    let f = folder_id(folder)?;
    let (ff, u) = (f.clone(), user.clone());
    state
        .run(move |r| guard::check_folder(r.store(), &u, &ff, action))
        .await??;
    Ok(f)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Core(c) => c.into(),
        other => ApiError::internal(other),
    }
}

/// Accepts the endpoint's own media type, `application/octet-stream`, or none.
fn check_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let ct = content_type(headers);
    if ct.is_empty() || ct == expected || ct == "application/octet-stream" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected {expected}, got {ct:?}"),
        ))
    }
}

fn too_large(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("at most {MAX_HASHES} {what} per request"),
    )
}

/// A request's hash list.
fn hash_list(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ChunkHash>, ApiError> {
    check_type(headers, HASHES_TYPE)?;
    if body.len() > MAX_HASHES * 32 {
        return Err(too_large("hashes"));
    }
    Ok(pack::decode_hashes(body)?)
}

/// A pack's objects, unverified (the store verifies every one before it keeps any).
fn split_pack(body: &[u8]) -> Result<Vec<(ChunkHash, Vec<u8>)>, ApiError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if out.len() == MAX_HASHES {
            return Err(too_large("objects"));
        }
        match pack::peek_frame(rest)? {
            Some((hash, data, used)) => {
                out.push((hash, data.to_vec()));
                rest = &rest[used..];
            }
            None => return Err(CoreError::InvalidBlob("pack: truncated frame".into()).into()),
        }
    }
    Ok(out)
}

fn binary(status: StatusCode, media_type: &'static str, body: Body) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(media_type))],
        body,
    )
        .into_response()
}

// ---- packs ---------------------------------------------------------------------------------

/// `POST /mesh/folders/{folder}/objects/missing`: the hashes of the body the folder lacks.
pub(crate) async fn missing(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = access(&state, &auth.principal.user, &f, Action::Read).await?;
    let hashes = hash_list(&headers, &body)?;
    let missing = state
        .blobs(move |b| b.missing(&f, &hashes))
        .await?
        .map_err(store_error)?;
    Ok(binary(
        StatusCode::OK,
        HASHES_TYPE,
        Body::from(pack::encode_hashes(&missing)),
    ))
}

/// `POST /mesh/folders/{folder}/objects`: stores a pack's objects for the folder, all or none.
pub(crate) async fn upload(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = access(&state, &auth.principal.user, &f, Action::CreateEntry).await?;
    check_type(&headers, PACK_TYPE)?;
    // Fetches of this folder waiting for objects wait while this runs (see `uploads`).
    let receiving = state.0.uploads.begin(&f);
    let folder = f.clone();
    let max_blob = state.0.config.max_blob;
    let quotas = state.0.config.quotas.clone();
    // Parsed and checked off the async threads; what the folder already holds is no news.
    let (objects, news) = {
        let folder = folder.clone();
        state
            .blobs(move |b| {
                let objects = split_pack(&body)?;
                check_uploaded(&objects, max_blob)?;
                let hashes: Vec<ChunkHash> = objects.iter().map(|(h, _)| *h).collect();
                let news = !b.missing(&folder, &hashes).map_err(store_error)?.is_empty();
                Ok::<_, ApiError>((objects, news))
            })
            .await??
    };
    // Whose stored-bytes quota new files of the folder count against: each of its owners
    // (finding their folders reads every folder's members: only when something is new).
    let owners = if quotas.max_bytes_per_user == 0 || !news {
        Vec::new()
    } else {
        let ff = f.clone();
        state
            .run(move |r| crate::quota::owners_and_folders(r, &ff))
            .await??
    };
    let inner = state.0.clone();
    let (count, added) = state
        .blobs(move |b| {
            // With a quota to hold, the check and the write it admits are one step: one
            // upload at a time in this process, and in every process of a shared database.
            let admit = |b: &BlobStore| {
                crate::quota::check_bytes(b, &quotas, &owners, &objects).map_err(store_error)??;
                let added = b.put(&folder, &objects).map_err(store_error)?;
                Ok::<_, ApiError>((objects.len(), added))
            };
            if owners.is_empty() {
                return admit(b);
            }
            let _held = inner.quota_bytes.lock().unwrap_or_else(|p| p.into_inner());
            // Inside, the section uses the store it is given (on PostgreSQL: the lock's own
            // connection).
            b.exclusive(QUOTA_LOCK, admit).map_err(store_error)?
        })
        .await??;
    tracing::debug!(folder = %f, objects = count, new_bytes = added, "objects stored");
    receiving.end(state.0.config.upload_idle);
    Ok(no_content())
}

/// An object whose stored length and bytes disagree while a `fetch` answer sends it.
fn changed_while_sent(h: &ChunkHash) -> StoreError {
    StoreError::Backend(format!("object {h} changed while it was sent"))
}

/// What a `fetch` answer has sent so far.
struct Fetch {
    blobs: BlobStore,
    folder: FolderId,
    hashes: Arc<[ChunkHash]>,
    pos: usize,
    total: usize,
    any: bool,
    done: bool,
    /// The object being sent: its hash, the bytes sent and its length.
    current: Option<(ChunkHash, u64, u64)>,
}

impl Fetch {
    /// The next frames, off the async threads: objects the folder claims, from `pos` on, until
    /// a piece is gathered, the answer's budget is spent or the list ends. An object is read
    /// [`READ_PIECE`] bytes at a time, so a large one spans several pieces.
    async fn step(&mut self) -> Result<Bytes, ApiError> {
        let (blobs, folder, hashes) =
            (self.blobs.clone(), self.folder.clone(), self.hashes.clone());
        let (mut pos, mut total, mut any, mut current) =
            (self.pos, self.total, self.any, self.current);
        let (piece, pos, total, any, current) = tokio::task::spawn_blocking(move || {
            // One snapshot for the step's reads (one read transaction on SQLite).
            blobs.reading(|blobs| {
                let mut piece = Vec::new();
                let stop = (pos + STEP_HASHES).min(hashes.len());
                while piece.len() < PIECE {
                    if let Some((h, sent, len)) = current {
                        let want = (len - sent).min(READ_PIECE as u64) as usize;
                        match blobs.read_sized_for(&folder, &h, sent, want)? {
                            Some((_, d)) if d.len() == want => piece.extend_from_slice(&d),
                            _ => return Err(changed_while_sent(&h)),
                        }
                        total += want;
                        let sent = sent + want as u64;
                        current = (sent < len).then_some((h, sent, len));
                        continue;
                    }
                    if pos >= stop || (any && total >= MAX_OBJECTS_RESPONSE) {
                        break;
                    }
                    let h = hashes[pos];
                    pos += 1;
                    // Its length and first piece in one read (a small object whole).
                    if let Some((len, head)) = blobs.read_sized_for(&folder, &h, 0, READ_PIECE)? {
                        let want = len.min(READ_PIECE as u64) as usize;
                        if head.len() != want {
                            return Err(changed_while_sent(&h));
                        }
                        piece.extend_from_slice(h.as_bytes());
                        piece.extend_from_slice(&(len as u32).to_be_bytes());
                        piece.extend_from_slice(&head);
                        any = true;
                        total += want;
                        current = ((want as u64) < len).then_some((h, want as u64, len));
                    }
                }
                Ok((piece, pos, total, any, current))
            })
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(store_error)?;
        self.pos = pos;
        self.total = total;
        self.any = any;
        self.current = current;
        self.done = current.is_none()
            && (pos >= self.hashes.len() || (any && total >= MAX_OBJECTS_RESPONSE));
        Ok(Bytes::from(piece))
    }

    /// The next non-empty piece, or `None` at the end.
    async fn next_piece(&mut self) -> Option<Result<Bytes, io::Error>> {
        while !self.done {
            match self.step().await {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => return Some(Ok(b)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(io::Error::other(e.message)));
                }
            }
        }
        None
    }
}

/// `POST /mesh/folders/{folder}/objects/fetch`: a pack of the asked objects the folder claims,
/// in the order asked, up to [`MAX_OBJECTS_RESPONSE`] bytes of objects (at least one object
/// when any is available), streamed.
///
/// With `?wait=<milliseconds>` (at most [`HubConfig::fetch_wait_max`](crate::HubConfig)), an
/// answer that would be empty waits instead while the folder is receiving uploads (see
/// [`crate::uploads`]): it answers as soon as an upload to the folder brings one of the first
/// [`WAIT_PROBE`] asked objects, and with what is there when the wait ends or the uploads
/// stop.
pub(crate) async fn fetch(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let folder = access(&state, &auth.principal.user, &f, Action::Read).await?;
    let hashes: Arc<[ChunkHash]> = hash_list(&headers, &body)?.into();
    let wait = match q.get("wait") {
        None => Duration::ZERO,
        Some(w) => match w.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms).min(state.0.config.fetch_wait_max),
            Err(_) => {
                return Err(ApiError::bad_request(
                    "wait must be a number of milliseconds",
                ))
            }
        },
    };
    let mut deadline = tokio::time::Instant::now() + wait;
    let idle = state.0.config.upload_idle;
    // Woken by an upload, a waiting fetch first looks for the head of its list (the objects
    // a downloader wants next), so that each upload costs it a bounded lookup however long
    // the list; the whole list is read again only when that finds one, or at the end.
    // (Distinct hashes: the store answers each lacking hash once.)
    let mut distinct = std::collections::HashSet::new();
    let probe: Vec<ChunkHash> = hashes
        .iter()
        .filter(|h| distinct.insert(**h))
        .take(WAIT_PROBE)
        .copied()
        .collect();
    let mut looked = false;
    let mut shutdown = state.0.shutdown.subscribe();
    let mut waiting = None;
    let (fetch, first) = loop {
        // Listening before looking, so that no upload ends unseen in between.
        let (receiving, wake) = state.0.uploads.watch(&folder, idle);
        let woken = wake.as_deref().map(Notify::notified);
        tokio::pin!(woken);
        if let Some(w) = woken.as_mut().as_pin_mut() {
            w.enable();
        }
        let ending = receiving == Receiving::No || tokio::time::Instant::now() >= deadline;
        let worth = !looked || ending || {
            let (f, head) = (folder.clone(), probe.clone());
            let lacking = state
                .blobs(move |b| b.missing(&f, &head))
                .await?
                .map_err(store_error)?;
            lacking.len() < probe.len()
        };
        if worth {
            let mut fetch = Fetch {
                blobs: state.0.blobs.clone(),
                folder: folder.clone(),
                hashes: hashes.clone(),
                pos: 0,
                total: 0,
                any: false,
                done: false,
                current: None,
            };
            // The first piece before the answer: a store failure is still a clean 500.
            let first = match fetch.next_piece().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Err(ApiError::internal(e)),
                None => Bytes::new(),
            };
            if !first.is_empty() || ending {
                break (fetch, first);
            }
            looked = true;
        }
        let until = match receiving {
            Receiving::Until(t) => t.min(deadline),
            _ => deadline,
        };
        if waiting.is_none() {
            waiting = Some(Waiting::new(&state.0.observer.metrics.fetches_waiting));
        }
        // (Without a wake-up, nothing but the time or a shutdown ends the wait.)
        let woken_or_never = async {
            match woken.as_mut().as_pin_mut() {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = woken_or_never => {}
            () = tokio::time::sleep_until(until) => {}
            // Shutting down: one last look, and the answer.
            _ = shutdown.wait_for(|stop| *stop) => deadline = tokio::time::Instant::now(),
        }
    };
    if fetch.done {
        return Ok(binary(StatusCode::OK, PACK_TYPE, Body::from(first)));
    }
    let rest = stream::unfold(fetch, |mut f| async move {
        let piece = f.next_piece().await?;
        Some((piece, f))
    });
    let body = stream::once(async move { Ok::<_, io::Error>(first) }).chain(rest);
    Ok(binary(StatusCode::OK, PACK_TYPE, Body::from_stream(body)))
}

/// A fetch counted among those waiting for uploads (the `fetches_waiting` metric) while held.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: &Gauge) -> Waiting {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// ---- objects and blobs over plain HTTP -----------------------------------------------------

/// The strong ETag of an object or blob: its hash, quoted.
fn etag(h: &ChunkHash) -> String {
    format!("\"{}\"", h.hex())
}

/// Whether `If-None-Match` names the current tag (or `*`).
fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    let Some(v) = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').map(str::trim).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t == tag
    })
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// The whole representation (no `Range`, one that is not understood, several ranges, or
    /// an `If-Range` that does not match).
    All,
    /// Bytes `start..end` (end exclusive, never empty).
    Part(u64, u64),
    /// A range that lies wholly past the end.
    Unsatisfiable,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Too many digits to be a position in any representation: saturate.
    Some(s.parse().unwrap_or(u64::MAX))
}

fn wanted(headers: &HeaderMap, tag: &str, len: u64) -> Wanted {
    let Some(range) = headers.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::All;
    };
    if let Some(cond) = headers.get(IF_RANGE) {
        // Only entity tags are honoured; a date (or anything else) means "send it all".
        if cond.to_str().ok().map(str::trim) != Some(tag) {
            return Wanted::All;
        }
    }
    parse_range(range, len)
}

fn parse_range(range: &str, len: u64) -> Wanted {
    let Some((unit, spec)) = range.trim().split_once('=') else {
        return Wanted::All;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    match (a.trim(), b.trim()) {
        ("", n) => match digits(n) {
            None => Wanted::All,
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if len == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(len.saturating_sub(n), len),
        },
        (a, b) => {
            let Some(start) = digits(a) else {
                return Wanted::All;
            };
            let end = if b.is_empty() {
                len
            } else {
                match digits(b) {
                    Some(last) if last >= start => last.saturating_add(1).min(len),
                    // last < first, or not a number: an invalid range is ignored.
                    _ => return Wanted::All,
                }
            };
            if start >= len {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(start, end)
            }
        }
    }
}

/// The headers of an object or blob answer.
fn content_headers(resp: &mut Response, tag: &str) {
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(ETAG, v);
    }
}

fn not_modified_response(tag: &str) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(tag) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

fn unsatisfiable(len: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        format!("the range lies outside the {len} bytes"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        resp.headers_mut().insert(CONTENT_RANGE, v);
    }
    resp.headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// A 200 or 206 answer of `body` (`start..end` of `len` bytes), with its headers.
fn ranged(tag: &str, len: u64, part: Option<(u64, u64)>, body: Body) -> Response {
    let (status, count) = match part {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, e - s),
        None => (StatusCode::OK, len),
    };
    let mut resp = (status, body).into_response();
    content_headers(&mut resp, tag);
    let h = resp.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(count));
    if let Some((s, e)) = part {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{len}", e - 1)) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    resp
}

fn object_hash(hex: &str, what: &str) -> Result<ChunkHash, ApiError> {
    ChunkHash::from_hex(hex).map_err(|_| ApiError::not_found(what))
}

/// `GET /mesh/folders/{folder}/objects/{hash}`: one object's bytes.
pub(crate) async fn object(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, hex)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let f = access(&state, &auth.principal.user, &f, Action::Read).await?;
    let h = object_hash(&hex, "object")?;
    let tag = etag(&h);
    let folder = f.clone();
    let len = state
        .blobs(move |b| b.len_for(&folder, &h))
        .await?
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("object"))?;
    if not_modified(&headers, &tag) {
        return Ok(not_modified_response(&tag));
    }
    let blobs = state.0.blobs.clone();
    Ok(match wanted(&headers, &tag, len) {
        Wanted::All => ranged(&tag, len, None, object_body(blobs, f, h, 0, len)),
        Wanted::Part(s, e) => ranged(&tag, len, Some((s, e)), object_body(blobs, f, h, s, e)),
        Wanted::Unsatisfiable => unsatisfiable(len),
    })
}

/// Streams bytes `pos..end` of a blob, a piece of chunks at a time.
struct Assemble {
    blobs: BlobStore,
    folder: FolderId,
    manifest: Arc<Manifest>,
    /// The next chunk to read, and the blob offset it starts at.
    chunk: usize,
    chunk_start: u64,
    pos: u64,
    end: u64,
}

/// Why a blob could not be streamed on.
enum Broken {
    /// The stored chunks do not match the manifest (it lies about their lengths).
    Invalid(String),
    /// The store failed.
    Store(String),
}

impl Broken {
    fn message(&self) -> &str {
        match self {
            Broken::Invalid(m) | Broken::Store(m) => m,
        }
    }
}

impl From<Broken> for ApiError {
    fn from(b: Broken) -> Self {
        match b {
            Broken::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_blob", m),
            Broken::Store(m) => ApiError::internal(m),
        }
    }
}

impl Assemble {
    /// The bytes of the next few chunks (sliced to the range), read on the blocking pool.
    async fn step(&mut self) -> Result<Vec<Bytes>, Broken> {
        let (blobs, folder, manifest) = (
            self.blobs.clone(),
            self.folder.clone(),
            self.manifest.clone(),
        );
        let (mut chunk, mut chunk_start, pos, end) =
            (self.chunk, self.chunk_start, self.pos, self.end);
        let (out, chunk, chunk_start) = tokio::task::spawn_blocking(move || {
            let chunks = manifest.chunks();
            // The chunks that start before the end of the range, from the next one.
            let mut last = chunk;
            let mut off = chunk_start;
            while last < chunks.len() && off < end && last - chunk < 64 {
                off += u64::from(chunks[last].len);
                last += 1;
            }
            if last == chunk {
                return Err(Broken::Invalid("the manifest ends before the range".into()));
            }
            let mut out = Vec::new();
            let mut gathered = 0usize;
            let first = chunk;
            while chunk < last && (chunk == first || gathered < PIECE) {
                let c = &chunks[chunk];
                let h = c.hash;
                // One byte more than the manifest says: a longer object is caught without
                // reading all of it.
                let data = blobs
                    .read_for(&folder, &h, 0, c.len as usize + 1)
                    .map_err(|e| Broken::Store(e.to_string()))?
                    .ok_or_else(|| Broken::Store(format!("chunk {h} is gone")))?;
                gathered += data.len();
                if c.len as usize != data.len() {
                    return Err(Broken::Invalid(format!(
                        "the manifest says chunk {h} has {} bytes; it has {}",
                        c.len,
                        data.len()
                    )));
                }
                let len = u64::from(c.len);
                let from = pos.max(chunk_start) - chunk_start;
                let to = end.min(chunk_start + len) - chunk_start;
                if from < to {
                    out.push(Bytes::from(data).slice(from as usize..to as usize));
                }
                chunk += 1;
                chunk_start += len;
            }
            Ok((out, chunk, chunk_start))
        })
        .await
        .map_err(|e| Broken::Store(e.to_string()))??;
        let sent: u64 = out.iter().map(|b| b.len() as u64).sum();
        self.chunk = chunk;
        self.chunk_start = chunk_start;
        self.pos += sent;
        Ok(out)
    }
}

/// `GET /mesh/folders/{folder}/blobs/{manifest}`: the blob a manifest describes, assembled
/// from its chunks and streamed.
pub(crate) async fn blob(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, hex)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let f = access(&state, &auth.principal.user, &f, Action::Read).await?;
    let h = object_hash(&hex, "blob")?;
    let tag = etag(&h);
    let folder = f.clone();
    let max_blob = state.0.config.max_blob;
    let manifest = state
        .blobs(move |b| {
            let Some((_, bytes)) = b
                .get_for(&folder, &[h], usize::MAX)
                .map_err(store_error)?
                .pop()
            else {
                return Err(ApiError::not_found("blob"));
            };
            let m = Manifest::decode(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_blob",
                    format!("object {} is not a blob manifest: {e}", h.hex()),
                )
            })?;
            check_manifest(&m, &h, max_blob)?;
            let chunks: Vec<ChunkHash> = m.chunks().iter().map(|c| c.hash).collect();
            let missing = b.missing(&folder, &chunks).map_err(store_error)?;
            if !missing.is_empty() {
                return Err(ApiError::not_found(format!(
                    "blob {} (incomplete: {} of its chunks are missing)",
                    h.hex(),
                    missing.len()
                )));
            }
            Ok(m)
        })
        .await??;
    if not_modified(&headers, &tag) {
        return Ok(not_modified_response(&tag));
    }
    let len = manifest.length();
    let (start, end, part) = match wanted(&headers, &tag, len) {
        Wanted::All => (0, len, None),
        Wanted::Part(s, e) => (s, e, Some((s, e))),
        Wanted::Unsatisfiable => return Ok(unsatisfiable(len)),
    };
    // The chunk holding `start`.
    let (mut chunk, mut chunk_start) = (0usize, 0u64);
    for c in manifest.chunks() {
        if chunk_start + u64::from(c.len) > start {
            break;
        }
        chunk_start += u64::from(c.len);
        chunk += 1;
    }
    let mut assemble = Assemble {
        blobs: state.0.blobs.clone(),
        folder: f,
        manifest: Arc::new(manifest),
        chunk,
        chunk_start,
        pos: start,
        end,
    };
    // The first piece before the answer: a store failure is still a clean 500.
    let first = if start < end {
        assemble.step().await?
    } else {
        Vec::new()
    };
    let rest = stream::unfold(assemble, |mut a| async move {
        if a.pos >= a.end {
            return None;
        }
        match a.step().await {
            Ok(pieces) => Some((pieces.into_iter().map(Ok).collect::<Vec<_>>(), a)),
            Err(e) => {
                // The answer is under way: all that is left is to cut it short.
                tracing::warn!(error = e.message(), "blob download cut");
                a.end = a.pos;
                Some((vec![Err(io::Error::other(e.message().to_owned()))], a))
            }
        }
    });
    let body =
        stream::iter(first.into_iter().map(Ok::<_, io::Error>)).chain(rest.flat_map(stream::iter));
    Ok(ranged(&tag, len, part, Body::from_stream(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        let p = parse_range;
        assert_eq!(p("bytes=0-9", 100), Wanted::Part(0, 10));
        assert_eq!(p("bytes=90-", 100), Wanted::Part(90, 100));
        assert_eq!(p("bytes=-10", 100), Wanted::Part(90, 100));
        assert_eq!(p("bytes=-1000", 100), Wanted::Part(0, 100));
        assert_eq!(p("bytes=50-1000", 100), Wanted::Part(50, 100));
        assert_eq!(p("Bytes = 5-5", 100), Wanted::Part(5, 6));
        assert_eq!(p("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(p("bytes=100-200", 100), Wanted::Unsatisfiable);
        assert_eq!(p("bytes=-0", 100), Wanted::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Wanted::Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), Wanted::Unsatisfiable);
        assert_eq!(
            p("bytes=99999999999999999999999-", 100),
            Wanted::Unsatisfiable
        );
        assert_eq!(
            p("bytes=0-99999999999999999999999", 100),
            Wanted::Part(0, 100)
        );
        for ignored in [
            "bytes=9-5",
            "bytes=0-1,5-6",
            "items=0-5",
            "bytes=+1-5",
            "bytes=a-b",
            "bytes=-",
            "bytes",
            "",
        ] {
            assert_eq!(p(ignored, 100), Wanted::All, "{ignored}");
        }
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let tag = "\"abc\"";
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, tag));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(not_modified(&h, tag));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, tag));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!not_modified(&h, tag));
    }

    #[test]
    fn packs_split_without_panicking_on_any_prefix() {
        let mut body = Vec::new();
        for o in [&b"one"[..], b"", b"three"] {
            pack::write_frame(&mut body, &ChunkHash::of(o), o);
        }
        assert_eq!(split_pack(&body).unwrap().len(), 3);
        for n in 0..body.len() {
            let r = split_pack(&body[..n]);
            let ends = [0, 39, 75];
            assert_eq!(r.is_ok(), ends.contains(&n), "prefix {n}");
        }
    }
}
