//! The messages of an authenticated peer connection (see `docs/protocol.md`, "Peer
//! protocol"). Each is the JSON part of one frame; hash lists and blob packs travel in the
//! frame's binary body, in the formats of [`mesh_core::blob::pack`].

use mesh_core::id::{DeviceId, FolderId, UserId};
use mesh_core::sync::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::transport::Notification;

/// The most hashes one request may carry (as the hub's blob routes).
pub const MAX_HASHES: usize = 65_536;

/// The largest blob pack a connecting peer sends in one `put_objects` (more objects go in
/// several requests; a single larger object goes alone).
pub const PUT_BATCH: usize = 4 << 20;

/// What a connecting peer asks, one request at a time per connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerRequest {
    /// A sync protocol request, answered through the guard as the peer's user
    /// ([`PeerResponse::Sync`]).
    Sync {
        /// The request.
        request: Request,
    },
    /// Which of the hashes in the body (a hash list) the listener lacks for `folder`
    /// ([`PeerResponse::Missing`], a hash list in the body). Needs read access.
    MissingObjects {
        /// The folder.
        folder: FolderId,
    },
    /// Stores the objects of the body (a pack) for `folder` ([`PeerResponse::Stored`]).
    /// Needs the right to create entries.
    PutObjects {
        /// The folder.
        folder: FolderId,
    },
    /// The objects of the hashes in the body (a hash list) that the listener has for
    /// `folder`, in order, possibly a prefix ([`PeerResponse::Objects`], a pack in the body).
    /// Needs read access.
    GetObjects {
        /// The folder.
        folder: FolderId,
    },
    /// Turns the connection into a notification stream: [`PeerResponse::Watching`], then one
    /// [`PeerResponse::Notification`] per change of a feed the peer may read, until either
    /// side closes. No more requests on this connection.
    Watch,
    /// Who the listener authenticated this connection as ([`PeerResponse::Identity`]).
    Whoami,
}

/// What the listener answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerResponse {
    /// The answer to a sync request.
    Sync {
        /// The response.
        response: Response,
    },
    /// The body holds the hashes the listener lacks.
    Missing,
    /// The objects were stored.
    Stored,
    /// The body holds a pack of objects.
    Objects,
    /// The notification stream starts.
    Watching,
    /// A feed the peer may read changed.
    Notification {
        /// What changed.
        notification: Notification,
    },
    /// The authenticated identity of the asking peer.
    Identity {
        /// Its user.
        user: UserId,
        /// Its device.
        device: DeviceId,
    },
    /// The request was refused or failed, with a stable code (the core's error codes, as in
    /// the hub's JSON error bodies: `permission_denied`, `not_found`, `invalid_blob`…).
    Error {
        /// The stable code.
        code: String,
        /// The explanation.
        message: String,
    },
}
