//! Transports: how sync messages reach a remote replica.
//!
//! A [`Transport`] carries the core's sync protocol ([`Request`] → [`Response`]: feeds, changes
//! since a cursor, push a batch) and a stream of remote change [`Notification`]s. Transports are
//! injected per client (see `MeshClientBuilder::remote`), never registered globally.
//!
//! * [`InProcessHub`] / [`InProcessTransport`]: a hub replica in the same process, or another
//!   client's replica served directly;
//! * [`HttpTransport`]: a `mesh-hub` over HTTP (reqwest with rustls), with timeouts, retries
//!   and server-sent notifications;
//! * [`SimNetwork`]: wraps any transport in a deterministic simulated network (seeded drops,
//!   duplicates, replays, delays and partitions) for tests.

mod http;
mod http_coding;
mod http_config;
mod inproc;
pub(crate) mod serve;
mod simnet;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use mesh_core::blob::ChunkHash;
use mesh_core::id::{DeviceId, FolderId, UserId};
use mesh_core::model::FeedKey;
use mesh_core::store::Cursor;
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{Enrollment, PublicKey};
use mesh_core::{CoreError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

pub(crate) use http::core_error;
pub use http::HttpTransport;
pub use http_config::HttpConfig;
pub use inproc::{InProcessHub, InProcessTransport};
pub use simnet::{LinkControl, SimConfig, SimNetwork, SimTransport};

/// A remote replica's feed moved: something new may be pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The feed that changed.
    pub feed: FeedKey,
    /// Its new head in the remote's change log.
    pub head: Cursor,
    /// The changes that moved it, when the remote sent them along (a hub does for small
    /// pushes): what a pull of `feed` after [`NotifiedChanges::since`] would answer, up to
    /// `head`. The engine merges them in place of that pull when its cursor stands there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<NotifiedChanges>,
}

impl Notification {
    /// A notification of `feed`'s new `head`, without its changes.
    pub fn new(feed: FeedKey, head: Cursor) -> Self {
        Notification {
            feed,
            head,
            changes: None,
        }
    }
}

/// The changes a [`Notification`] carries: the feed's changes after `since`, up to the
/// notification's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedChanges {
    /// The position in the remote's change log they follow.
    pub since: Cursor,
    /// The entries, in change order.
    pub entries: Vec<mesh_core::model::Entry>,
}

/// Who a remote says a transport's credentials belong to (see [`Transport::whoami`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// The device, when the credentials name one (a hub's device token does).
    #[serde(default)]
    pub device: Option<DeviceId>,
}

/// Who answers for the versions a remote sends when the remote is not the mesh's authority
/// (see [`Transport::relayer`]): they are judged as that user's push.
#[derive(Debug, Clone)]
pub struct Relayer {
    /// The user the remote proved to be (a peer's handshake).
    pub user: UserId,
    /// What this device knows of the mesh's devices, to check the versions' signatures.
    pub trust: crate::peer::PeerTrust,
}

/// Why a transport call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The remote cannot be reached (no route, connection refused, partition).
    #[error("offline: {0}")]
    Offline(String),
    /// The remote did not answer in time; the request may or may not have been applied.
    #[error("timed out")]
    Timeout,
    /// The credentials were refused.
    #[error("unauthorized")]
    Unauthorized,
    /// The credentials are valid but the operation is not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The remote asks to slow down.
    #[error("rate limited")]
    RateLimited {
        /// How long the remote asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The remote failed (a 5xx, say).
    #[error("remote failure: {0}")]
    Server(String),
    /// The remote answered something that is not the protocol (malformed or truncated body).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A precondition of the request (`If-Match`) did not hold: the resource changed.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The remote refused the request with a typed error.
    #[error("remote refused: {0}")]
    Remote(CoreError),
    /// The transport does not carry this kind of request (blobs, say).
    #[error("not supported by this transport: {0}")]
    Unsupported(String),
    /// The remote refused the request with a stable code that has no core error form
    /// (`revoked`, `limit_exceeded`, `invalid_query`…; see `docs/protocol.md`).
    #[error("remote refused ({code}): {message}")]
    Refused {
        /// The remote's stable error code.
        code: String,
        /// Its explanation.
        message: String,
    },
}

impl TransportError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Offline(_)
            | TransportError::Timeout
            | TransportError::RateLimited { .. }
            | TransportError::Server(_)
            | TransportError::Protocol(_) => true,
            TransportError::Remote(e) => e.code() == ErrorCode::Store,
            TransportError::Unauthorized
            | TransportError::Forbidden(_)
            | TransportError::PreconditionFailed(_)
            | TransportError::Unsupported(_)
            | TransportError::Refused { .. } => false,
        }
    }

    /// The stable kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::Offline(_) | TransportError::Timeout => ErrorKind::Offline,
            TransportError::Unauthorized => ErrorKind::Unauthorized,
            TransportError::Forbidden(_) => ErrorKind::PermissionDenied,
            TransportError::RateLimited { .. } => ErrorKind::RateLimited,
            TransportError::Server(_) | TransportError::Unsupported(_) => ErrorKind::Transport,
            TransportError::Protocol(_) => ErrorKind::Protocol,
            TransportError::PreconditionFailed(_) => ErrorKind::Conflict,
            TransportError::Remote(e) => crate::error::core_kind(e),
            TransportError::Refused { code, .. } => {
                ErrorKind::of_code(code).unwrap_or(ErrorKind::Transport)
            }
        }
    }

    /// How long the remote asked to wait before the next try, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// Where the page after a pull's answer starts, as the remote tells it ahead of the answer
/// (see [`Transport::send_pull`]). Only the first thing told counts.
///
/// ```
/// use mesh_client::transport::NextPage;
/// use mesh_core::store::Cursor;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (next, told) = NextPage::channel();
/// next.tell(Cursor(42));
/// next.tell(Cursor(7)); // too late: the first one counts
/// assert_eq!(told.told().await, Some(Cursor(42)));
///
/// let (next, told) = NextPage::channel();
/// drop(next); // the answer came without saying
/// assert_eq!(told.told().await, None);
/// # });
/// ```
#[derive(Debug)]
pub struct NextPage(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Cursor>>>);

/// The receiving end of a [`NextPage`].
#[derive(Debug)]
pub struct NextPageTold(tokio::sync::oneshot::Receiver<Cursor>);

impl NextPage {
    /// A `NextPage` to hand to [`Transport::send_pull`], and what it will be told.
    pub fn channel() -> (NextPage, NextPageTold) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (NextPage(std::sync::Mutex::new(Some(tx))), NextPageTold(rx))
    }

    /// Says that the page after this pull's starts at `next` (the first call only).
    pub fn tell(&self, next: Cursor) {
        let sender = match self.0.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(tx) = sender {
            let _ = tx.send(next);
        }
    }
}

impl NextPageTold {
    /// What was told, once it was; `None` once the [`NextPage`] is dropped without a word
    /// (the pull ended, failed or was cancelled).
    pub async fn told(self) -> Option<Cursor> {
        self.0.await.ok()
    }
}

/// Carries the sync protocol to one remote replica.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends one request and waits for its response.
    async fn send(&self, request: Request) -> Result<Response, TransportError>;

    /// Sends a [`Request::Pull`] like [`send`](Self::send), and tells `next` where the page
    /// after this one starts as soon as the remote says so, before the answer is read whole
    /// (a hub says it in the answer's `Mesh-Next` header; see `docs/protocol.md`, "Asking
    /// ahead"). The engine then asks for that page while this one is still being read.
    ///
    /// What is told is a hint: the engine still moves its cursor by the answer alone, and
    /// drops a page asked for ahead that is not the one the answer leads to. Transports that
    /// cannot tell anything early keep this default, which tells nothing.
    async fn send_pull(
        &self,
        request: Request,
        next: &NextPage,
    ) -> Result<Response, TransportError> {
        let _ = next;
        self.send(request).await
    }

    /// A stream of the remote's change notifications for feeds this client may read. The
    /// stream ends when the connection is lost; the engine then reconnects with backoff.
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError>;

    /// A short description for logs and events ("in-process hub", a URL…).
    fn describe(&self) -> String;

    /// Enrolls this device's public key with the remote's authority: the answer holds the
    /// device's certificate and the authority's key, which the engine pins on first contact.
    /// A remote without an authority (a peer served directly) answers `Unsupported`.
    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        let _ = (device, key);
        Err(TransportError::Unsupported("enrollment".into()))
    }

    /// Who the remote says this transport's credentials belong to, if it can tell (a hub
    /// answers `GET /mesh/me`). The engine refuses to sync with a remote that names another
    /// user or device than the client's configuration. `Ok(None)`: it cannot tell.
    async fn whoami(&self) -> Result<Option<Identity>, TransportError> {
        Ok(None)
    }

    /// Whose word the versions this remote sends are. `Ok(None)` (the default): the remote is
    /// the mesh's authority (a hub), which checked every version when it was pushed there, and
    /// what it sends merges as it comes. A peer answers with the user it authenticated as and
    /// this device's trust: the engine then holds everything the peer sends to the same rules
    /// as a push (limits, signatures, the signers' roles; see
    /// [`SyncSession::receive_from`](mesh_core::sync::SyncSession::receive_from)).
    async fn relayer(&self) -> Result<Option<Relayer>, TransportError> {
        Ok(None)
    }

    /// Whether the remote is a device reached directly (a peer, typically on the same
    /// network), rather than a hub: downloads ask such remotes first, so that a file a LAN
    /// peer holds crosses one hop. `false` by default.
    fn is_direct(&self) -> bool {
        false
    }

    /// Which of these blob objects (chunks, manifests) the remote lacks for `folder`: the
    /// ones to upload. Needs read access to the folder.
    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        let _ = (folder, hashes);
        Err(TransportError::Unsupported("blobs".into()))
    }

    /// Uploads blob objects for `folder` (the remote checks each against its hash). Needs the
    /// right to create entries in the folder.
    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        let _ = (folder, objects);
        Err(TransportError::Unsupported("blobs".into()))
    }

    /// Downloads blob objects of `folder`: those of `hashes` the remote has, in order, possibly
    /// only a prefix of them (the remote bounds a response's size; the caller asks again for
    /// the rest). Objects the remote lacks are left out. The caller verifies every object.
    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        let _ = (folder, hashes);
        Err(TransportError::Unsupported("blobs".into()))
    }

    /// Whether the remote relays blobs: it takes the entry naming a large blob while the
    /// blob's chunks are still being uploaded (its manifest first), and serves the chunks to
    /// other devices as they arrive, their fetches waiting for the rest
    /// ([`get_objects_waiting`](Self::get_objects_waiting)). A hub over HTTP does; `false`
    /// by default (the entry is then sent once its blob is whole on the remote).
    fn relays_blobs(&self) -> bool {
        false
    }

    /// [`get_objects`](Self::get_objects), except that an answer that would hold none of the
    /// objects may wait up to about `wait` for uploads under way on the remote to bring some
    /// (a remote that relays blobs; see [`relays_blobs`](Self::relays_blobs)). By default it
    /// does not wait.
    async fn get_objects_waiting(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        wait: std::time::Duration,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        let _ = wait;
        self.get_objects(folder, hashes).await
    }
}

pub use mesh_core::blob::MAX_OBJECTS_RESPONSE;
