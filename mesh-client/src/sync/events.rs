//! What a client reports: entry changes, conflicts, sync progress, errors, connectivity.

use mesh_core::id::{DeviceId, EntryId, FolderId, RemoteId, UserId};
use mesh_core::model::FeedKey;

/// Where a change came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSource {
    /// A write through this client.
    Local,
    /// A sync with this remote.
    Remote(RemoteId),
}

/// How an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new entry.
    Added,
    /// A new version.
    Updated,
    /// A tombstone.
    Deleted,
    /// A conflicting version arrived; the entry now lists it.
    Conflict,
    /// Conflicts were resolved.
    Resolved,
}

/// An event of a [`MeshClient`](crate::MeshClient).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An entry changed.
    EntryChanged {
        /// The feed.
        feed: FeedKey,
        /// The entry.
        id: EntryId,
        /// How.
        kind: ChangeKind,
        /// Because of what.
        source: ChangeSource,
    },
    /// A sync session with a remote made progress or finished.
    SyncProgress {
        /// The remote.
        remote: RemoteId,
        /// Entries sent so far in this session.
        sent: usize,
        /// Entries received so far in this session.
        received: usize,
        /// Local changes not yet acknowledged by the remote (an upper bound).
        pending: u64,
        /// Whether the session finished (both sides caught up).
        done: bool,
    },
    /// The remote refused a pushed entry: the local role no longer allows the write
    /// ([`ErrorKind::PermissionDenied`]), a signature or certificate it does not accept, or
    /// an invitation of a user who has no account there ([`ErrorKind::NotFound`] on a
    /// folder's `members` feed: the client then withdraws its invitation, which reports an
    /// [`Event::EntryChanged`] deletion).
    ///
    /// [`ErrorKind::PermissionDenied`]: crate::ErrorKind::PermissionDenied
    /// [`ErrorKind::NotFound`]: crate::ErrorKind::NotFound
    Refused {
        /// The remote.
        remote: RemoteId,
        /// The feed.
        feed: FeedKey,
        /// The entry.
        id: EntryId,
        /// Why (readable, not stable).
        reason: String,
        /// What kind of refusal: match on this.
        kind: crate::ErrorKind,
    },
    /// This device refused an entry a remote sent and left it out: a peer relayed a version
    /// that fails the item-shape limits or its signatures, or that its signer may not write
    /// here ([`ErrorKind::PermissionDenied`]; [`ErrorKind::Protocol`] for a bad signature…).
    /// The rest of what the remote sent merged. Only peers' pages are judged: a hub is the
    /// mesh's authority and checked each version when it was pushed there.
    ///
    /// [`ErrorKind::PermissionDenied`]: crate::ErrorKind::PermissionDenied
    /// [`ErrorKind::Protocol`]: crate::ErrorKind::Protocol
    Rejected {
        /// The remote that sent it.
        remote: RemoteId,
        /// The feed.
        feed: FeedKey,
        /// The entry.
        id: EntryId,
        /// Why (readable, not stable).
        reason: String,
        /// What kind of refusal: match on this.
        kind: crate::ErrorKind,
    },
    /// A sync attempt failed; the engine retries with backoff when the error is transient.
    SyncError {
        /// The remote.
        remote: RemoteId,
        /// What went wrong: match on its [`kind`](crate::error::SyncError::kind).
        error: crate::error::SyncError,
        /// Whether it will be retried.
        retrying: bool,
    },
    /// The remote's change log is not the one this device synced with before: it was
    /// restored from an older copy (a backup), or it stopped without ending its epoch cleanly.
    /// The sync that reports this starts over with it on `feeds` feeds: it offers the remote
    /// everything held here (so what the remote lost comes back from this device) and pulls
    /// everything the remote holds; nothing is lost and nothing is applied twice.
    RemoteReset {
        /// The remote.
        remote: RemoteId,
        /// The remote's replica and epoch the device's cursors were for (`<replica>@<epoch>`).
        previous: String,
        /// Its replica and epoch now.
        now: String,
        /// How many feeds start over.
        feeds: usize,
    },
    /// A peer authenticated on one of this client's [`PeerListener`]s and may now send
    /// requests.
    ///
    /// [`PeerListener`]: crate::peer::PeerListener
    PeerConnected {
        /// The peer's user, as its certificate says.
        user: UserId,
        /// The peer's device, as its certificate says.
        device: DeviceId,
        /// Where the connection comes from.
        addr: std::net::SocketAddr,
    },
    /// An authenticated peer's connection to a [`PeerListener`] ended (closed by the peer,
    /// idle, failed, or the listener closed).
    ///
    /// [`PeerListener`]: crate::peer::PeerListener
    PeerLeft {
        /// The peer's user.
        user: UserId,
        /// The peer's device.
        device: DeviceId,
        /// Where the connection came from.
        addr: std::net::SocketAddr,
    },
    /// A device announced on the local network proved, at the handshake, to be who it
    /// announced, and is now synced with as the remote `lan:<device>` (see
    /// [`MeshClient::discover_peers`](crate::MeshClient::discover_peers)).
    PeerDiscovered {
        /// Its user.
        user: UserId,
        /// Its device.
        device: DeviceId,
        /// Where it listens.
        addr: std::net::SocketAddr,
    },
    /// A device discovery added is no longer announced (it said goodbye, or was not heard
    /// within its time to live); its remote was removed.
    PeerLost {
        /// Its user.
        user: UserId,
        /// Its device.
        device: DeviceId,
        /// Where it listened.
        addr: std::net::SocketAddr,
    },
    /// The client learned, from a hub or a peer, the mesh authority's signed statement that
    /// a device is revoked: from `at` on its handshakes, requests and versions are refused on
    /// every peer connection (this device's own revocation is reported too).
    DeviceRevoked {
        /// The device's user.
        user: UserId,
        /// The revoked device.
        device: DeviceId,
        /// From when on it is revoked.
        at: mesh_core::time::Timestamp,
    },
    /// The remote became reachable.
    Online {
        /// The remote.
        remote: RemoteId,
    },
    /// The remote became unreachable.
    Offline {
        /// The remote.
        remote: RemoteId,
    },
    /// A remote's status changed (see [`MeshClient::status`](crate::MeshClient::status)).
    Status {
        /// Its new status.
        status: crate::sync::RemoteStatus,
    },
    /// This subscriber fell behind and `missed` events were dropped for it (the client keeps
    /// the latest 4096 per subscriber): re-read what it shows (a query, `status()`).
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
    /// Blob bytes moved to or from a remote: one event per batch of objects.
    Transfer {
        /// The remote.
        remote: RemoteId,
        /// The folder the blob belongs to.
        folder: FolderId,
        /// Which way.
        direction: TransferDirection,
        /// Bytes moved so far in this transfer.
        done_bytes: u64,
        /// Bytes this transfer moves in all (objects already on the other side are not
        /// counted).
        total_bytes: u64,
    },
    /// A mapped directory did something worth telling: a file written or published, a conflict
    /// copy kept, a remote entry refused for an unsafe path…
    Mapping {
        /// The folder.
        folder: FolderId,
        /// What happened.
        event: MappingEvent,
    },
    /// A mapping stopped publishing and applying because its directory is not (or no longer)
    /// the one it was mapped onto; see [`PauseReason`]. It resumes by itself only when the
    /// same marked directory is back ([`MappingEvent::Resumed`]); otherwise the user acts
    /// (maps the folder again).
    MappingPaused {
        /// The folder.
        folder: FolderId,
        /// Why.
        reason: PauseReason,
    },
}

/// Why a mapping paused (see [`Event::MappingPaused`]). While paused a mapping publishes
/// nothing and writes nothing: an empty or different directory must never become deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PauseReason {
    /// The mapped directory does not exist (a drive not mounted, a folder moved or deleted).
    RootMissing {
        /// The directory.
        root: String,
    },
    /// The mapped directory, or its marker, could not be read.
    RootUnreadable {
        /// The directory.
        root: String,
        /// What went wrong.
        error: String,
    },
    /// The directory exists but its marker file
    /// ([`MARKER_FILE`](crate::mapping::MARKER_FILE)) is gone: it may be another directory.
    MarkerMissing {
        /// The directory.
        root: String,
    },
    /// The directory's marker names another folder, device or mapping.
    MarkerMismatch {
        /// The directory.
        root: String,
        /// What the marker holds.
        found: String,
    },
}

impl PauseReason {
    /// A stable name for the reason: `root_missing`, `root_unreadable`, `marker_missing` or
    /// `marker_mismatch`.
    pub fn kind(&self) -> &'static str {
        match self {
            PauseReason::RootMissing { .. } => "root_missing",
            PauseReason::RootUnreadable { .. } => "root_unreadable",
            PauseReason::MarkerMissing { .. } => "marker_missing",
            PauseReason::MarkerMismatch { .. } => "marker_mismatch",
        }
    }
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseReason::RootMissing { root } => {
                write!(f, "the mapped directory {root} is missing")
            }
            PauseReason::RootUnreadable { root, error } => {
                write!(f, "the mapped directory {root} cannot be read: {error}")
            }
            PauseReason::MarkerMissing { root } => {
                write!(f, "the mapped directory {root} has lost its marker file")
            }
            PauseReason::MarkerMismatch { root, found } => write!(
                f,
                "the marker of {root} belongs to another mapping ({found})"
            ),
        }
    }
}

/// Which way a blob transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDirection {
    /// From this device to the remote.
    Upload,
    /// From the remote to this device.
    Download,
}

/// What a mapped directory reports (see [`Event::Mapping`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingEvent {
    /// A scan of the directory finished and its local changes were published.
    Scanned {
        /// Files and directories seen.
        paths: usize,
        /// Of which published as new versions or tombstones.
        published: usize,
    },
    /// A remote change was written into the directory.
    Applied {
        /// The path, relative to the mapped directory.
        path: String,
        /// Whether it was a deletion.
        deleted: bool,
    },
    /// Two versions of a file were written concurrently; the losing one was kept beside it.
    ConflictCopy {
        /// The file.
        path: String,
        /// The copy holding the losing version.
        copy: String,
    },
    /// A remote entry was not applied: an unsafe or colliding path, a malformed entry.
    Refused {
        /// The entry's path as it came (or its id when it had none).
        path: String,
        /// Why.
        reason: String,
    },
    /// A local file was left out: a symlink, an unreadable file, a name other devices cannot
    /// hold.
    Skipped {
        /// The path, relative to the mapped directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A local directory or file could not be read (permissions, an I/O error, too many open
    /// files…): it, and everything below it, is left as it is on both sides for this pass —
    /// never taken for deleted.
    Unreadable {
        /// The path, relative to the mapped directory (empty for the directory itself).
        path: String,
        /// What went wrong.
        error: String,
    },
    /// Applying or publishing failed; the mapping retries at its next scan.
    Error {
        /// What went wrong.
        error: String,
    },
    /// A paused mapping found its marked directory again and runs again.
    Resumed,
}

impl Event {
    /// The feed the event is about, if any.
    pub fn feed(&self) -> Option<&FeedKey> {
        match self {
            Event::EntryChanged { feed, .. } | Event::Refused { feed, .. } => Some(feed),
            _ => None,
        }
    }
}
