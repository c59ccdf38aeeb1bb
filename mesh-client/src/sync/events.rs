//! What a client reports: entry changes, conflicts, sync progress, errors, connectivity.

use mesh_core::id::{EntryId, RemoteId};
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
    /// The remote refused a pushed entry (the local role no longer allows the write).
    Refused {
        /// The remote.
        remote: RemoteId,
        /// The feed.
        feed: FeedKey,
        /// The entry.
        id: EntryId,
        /// Why.
        reason: String,
    },
    /// A sync attempt failed; the engine retries with backoff when the error is transient.
    SyncError {
        /// The remote.
        remote: RemoteId,
        /// What went wrong.
        error: String,
        /// Whether it will be retried.
        retrying: bool,
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
