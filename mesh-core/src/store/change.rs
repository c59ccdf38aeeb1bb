//! Change-log positions and pages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
        let keep = kept_within(&self.changes, bytes, |c| c.entry.wire_len_bound());
        if keep < self.changes.len() {
            self.changes.truncate(keep);
            self.next = self.changes[keep - 1].seq;
            self.more = true;
        }
        self
    }
}

/// One change as its store keeps it: the position, and the entry's JSON as the store holds
/// it, which is the entry's wire form (stores keep what [`Entry`]'s `Serialize` writes). A
/// responder passes it on without decoding and encoding the entry again.
#[derive(Debug, Clone)]
pub struct EncodedChange {
    /// The change's position.
    pub seq: Cursor,
    /// The entry after the change, as JSON: checked to be one JSON value, not decoded.
    pub entry: Box<RawValue>,
}

/// A page of [`EncodedChange`]s from
/// [`Store::encoded_changes_since`](crate::store::Store::encoded_changes_since): the same
/// changes, `next` and `more` as [`ChangePage`], except that its byte bound counts the
/// entries' JSON itself rather than their [`Entry::wire_len_bound`]s.
#[derive(Debug, Clone, Default)]
pub struct EncodedPage {
    /// The changes, in sequence order.
    pub changes: Vec<EncodedChange>,
    /// Where the next page starts (as [`ChangePage::next`]).
    pub next: Cursor,
    /// Whether more changes may follow `next`.
    pub more: bool,
}

impl EncodedPage {
    /// `page` with each entry encoded: what a store that keeps entries decoded answers.
    pub fn encode(page: ChangePage) -> Result<EncodedPage> {
        let changes = page
            .changes
            .into_iter()
            .map(|c| {
                let entry = serde_json::value::to_raw_value(&c.entry).map_err(|e| {
                    CoreError::Store(format!("encoding entry {}: {e}", c.entry.sync.id))
                })?;
                Ok(EncodedChange { seq: c.seq, entry })
            })
            .collect::<Result<_>>()?;
        Ok(EncodedPage {
            changes,
            next: page.next,
            more: page.more,
        })
    }

    /// The page cut to its changes whose JSON adds up to at most `bytes`, and always its
    /// first, as [`ChangePage::within`] cuts.
    ///
    /// ```
    /// use mesh_core::store::{Cursor, EncodedChange, EncodedPage};
    /// use serde_json::value::RawValue;
    /// let change = |seq, json: &str| EncodedChange {
    ///     seq: Cursor(seq),
    ///     entry: RawValue::from_string(json.to_owned()).unwrap(),
    /// };
    /// let page = EncodedPage {
    ///     changes: vec![change(3, "[1,2]"), change(5, "[3,4]"), change(6, "[5]")],
    ///     next: Cursor(9),
    ///     more: false,
    /// };
    /// let cut = page.clone().within(10);
    /// assert_eq!((cut.changes.len(), cut.next, cut.more), (2, Cursor(5), true));
    /// let first = page.clone().within(0);
    /// assert_eq!((first.changes.len(), first.next, first.more), (1, Cursor(3), true));
    /// let whole = page.within(13);
    /// assert_eq!((whole.changes.len(), whole.next, whole.more), (3, Cursor(9), false));
    /// ```
    pub fn within(mut self, bytes: usize) -> EncodedPage {
        let keep = kept_within(&self.changes, bytes, |c| c.entry.get().len());
        if keep < self.changes.len() {
            self.changes.truncate(keep);
            self.next = self.changes[keep - 1].seq;
            self.more = true;
        }
        self
    }
}

/// How many of `changes` a page cut to `bytes` keeps: those whose sizes add up to at most
/// `bytes`, and always the first.
fn kept_within<T>(changes: &[T], bytes: usize, size: impl Fn(&T) -> usize) -> usize {
    let mut total = 0usize;
    changes
        .iter()
        .position(|c| {
            total = total.saturating_add(size(c));
            total > bytes
        })
        .map_or(changes.len(), |i| i.max(1))
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
