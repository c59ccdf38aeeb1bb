//! Change-log positions and pages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::id::ReplicaId;
use crate::model::{Entry, FeedKey};

/// A position in one feed's change log on one replica.
///
/// Every write or merge that changes an entry gives it the feed's next position (its head plus
/// one), so "everything after cursor C" is exactly what changed in that feed since a peer last
/// looked. `Cursor::ZERO` is before the feed's first change. Positions are counted per feed, so
/// the distance between two of them tells how much that feed changed and nothing about other
/// feeds. Cursors belong to one replica and one feed and mean nothing elsewhere.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cursor(pub u64);

impl Cursor {
    /// Before the first change.
    pub const ZERO: Cursor = Cursor(0);

    /// The position, as a number.
    pub fn seq(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<u64>()
            .map(Cursor)
            .map_err(|_| CoreError::InvalidId {
                kind: "cursor",
                reason: format!(
                    "{:?} is not a change position",
                    s.chars().take(32).collect::<String>()
                ),
            })
    }
}

/// One change: an entry as it is now, and the position its latest change took in its feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The change's position.
    pub seq: Cursor,
    /// The entry after the change.
    pub entry: Entry,
}

/// A page of [`Change`]s from [`Store::changes_since`](crate::store::Store::changes_since).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePage {
    /// The changes, in sequence order.
    pub changes: Vec<Change>,
    /// Where the next page starts: the last position examined (which may be past the last
    /// change returned, when changes were skipped), or the `since` asked for when nothing was.
    pub next: Cursor,
    /// Whether more changes may follow `next`.
    pub more: bool,
}

impl ChangePage {
    /// The page cut to its changes whose [`Entry::wire_len_bound`]s add up to at most
    /// `bytes`, and always its first: a cut page ends at its last change kept (`next` is that
    /// change's position) and says `more`.
    ///
    /// ```
    /// use mesh_core::store::{ChangePage, Cursor};
    /// let empty = ChangePage { changes: vec![], next: Cursor(4), more: false };
    /// assert_eq!(empty.clone().within(0), empty);
    /// ```
    pub fn within(mut self, bytes: usize) -> ChangePage {
        let mut total = 0usize;
        let keep = self
            .changes
            .iter()
            .position(|c| {
                total = total.saturating_add(c.entry.wire_len_bound());
                total > bytes
            })
            .map_or(self.changes.len(), |i| i.max(1));
        if keep < self.changes.len() {
            self.changes.truncate(keep);
            self.next = self.changes[keep - 1].seq;
            self.more = true;
        }
        self
    }
}

/// A feed and the newest position of its change log, as replicas tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHead {
    /// The feed.
    pub feed: FeedKey,
    /// The position of its latest change.
    pub head: Cursor,
    /// How many entries (tombstones included) it holds.
    pub entries: u64,
}

/// When a feed last moved, in the replica's own order of changes: its head, and the
/// replica-wide number of that latest change.
///
/// Replica-wide numbers grow by one with every change committed to any feed, so they order
/// the feeds' moves across the whole replica (a hub resumes its notification streams by them).
/// They reveal how much every feed changed, so they stay inside the replica: unlike
/// [`FeedHead`], this is never sent to another party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedMoved {
    /// The feed.
    pub feed: FeedKey,
    /// The position of its latest change.
    pub head: Cursor,
    /// The replica-wide number of that change.
    pub seq: u64,
}

/// What a replica remembers about syncing one feed with one remote.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncState {
    /// The remote replica the cursors below belong to; when the remote turns out to be another
    /// replica (a reset hub, say), both cursors start again from zero.
    pub remote_replica: Option<ReplicaId>,
    /// Position in the *remote's* change log up to which its changes have been merged here.
    pub pulled: Cursor,
    /// Position in the *local* change log up to which changes were acknowledged by the remote.
    pub pushed: Cursor,
}
