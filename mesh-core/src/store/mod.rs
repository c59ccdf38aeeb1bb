//! Storage of a replica: the [`Store`] trait and the in-memory [`MemoryStore`].
//!
//! A store keeps, per feed, the entries and a change log in which each entry appears once, at
//! the position of its latest change (positions are counted per feed); plus the per-remote
//! [`SyncState`]. Besides, every change takes a replica-wide number that orders changes across
//! feeds for the replica's own use ([`Store::moved_feeds`]); it is never sent out. All writes go
//! through a transaction ([`Store::begin`]) that is applied whole by
//! [`StoreTxn::commit`] or not at all (dropping it rolls back), which is the shape a SQLite
//! store needs. The trait is synchronous: the core has no runtime; an async client runs store
//! calls on a blocking thread.
//!
//! Every implementation must pass the conformance [`suite`], which also pins down the rules the
//! trait's documentation leaves implicit (positions after a rollback, page shapes,
//! orders).

mod change;
mod incoming;
mod memory;
pub mod suite;

use std::borrow::Cow;

pub use change::{
    Change, ChangePage, Cursor, EncodedChange, EncodedPage, FeedHead, FeedMoved, SyncState,
};
pub use incoming::Incoming;
pub use memory::MemoryStore;

use crate::error::Result;
use crate::id::{EntryId, FolderId, RemoteId, ReplicaId, UserId};
use crate::model::{Entry, FeedKey, Scope};

/// How many change-log records [`Store::changes_since`] examines at most for a page of
/// `limit` changes: at least 1,024, and 8 per change asked for. It bounds the work of a page
/// whose records are mostly skipped (they came from the asking replica); every store obeys it,
/// so `next` and `more` mean the same whatever the store.
pub fn scan_cap(limit: usize) -> usize {
    limit.saturating_mul(8).max(1024)
}

/// A replica's storage.
pub trait Store {
    /// A write transaction.
    type Txn<'a>: StoreTxn
    where
        Self: 'a;

    /// The id of the replica this store holds; fixed when the store is created.
    fn replica_id(&self) -> ReplicaId;

    /// Every feed that holds at least one entry, with its head.
    fn feeds(&self) -> Result<Vec<FeedHead>>;

    /// The head of one feed (`Cursor::ZERO` for an empty or unknown feed): that of
    /// [`Store::feed_moved`].
    fn head(&self, feed: &FeedKey) -> Result<Cursor> {
        Ok(self.feed_moved(feed)?.map_or(Cursor::ZERO, |m| m.head))
    }

    /// Every feed that holds at least one entry, with its head and the replica-wide number of
    /// its latest change (in no particular order). For the replica's own use: see
    /// [`FeedMoved`].
    fn moved_feeds(&self) -> Result<Vec<FeedMoved>>;

    /// [`FeedMoved`] for one feed (`None` for an empty or unknown feed).
    fn feed_moved(&self, feed: &FeedKey) -> Result<Option<FeedMoved>>;

    /// The newest replica-wide number a committed change took (0 before the first): every
    /// feed's [`FeedMoved::seq`] is at most this, and the next change takes a larger one. It
    /// tells a hub where a new notification stream starts without going through its feeds.
    fn last_moved(&self) -> Result<u64>;

    /// The [`FeedHead`] that [`feeds`](Self::feeds) lists for one feed (`None` for an empty
    /// or unknown feed), looked up by its key: what answers a peer that asks about a few
    /// feeds, at a cost that does not grow with the replica's other feeds.
    fn feed_head(&self, feed: &FeedKey) -> Result<Option<FeedHead>>;

    /// Every feed of `scope` (one folder's, or one user's mesh feeds) that holds at least one
    /// entry, as [`feeds`](Self::feeds) lists it, in key order: found by the range of keys
    /// that start with the scope's [prefix](crate::model::Scope::key_prefix), at a cost that
    /// does not grow with the replica's other scopes.
    fn scope_feeds(&self, scope: &Scope) -> Result<Vec<FeedHead>>;

    /// The folders whose `members` feed holds a record for `user` (live or deleted: a
    /// member record's id is its user's id), in order, from an index the store keeps as it
    /// stores member records. Only feeds that hold entries count, so a purged folder is
    /// not listed. This is how a hub finds the folders a user may see without going through
    /// every folder it holds; the caller still reads the record to learn the user's role.
    fn member_folders(&self, user: &UserId) -> Result<Vec<FolderId>>;

    /// One entry.
    fn get(&self, feed: &FeedKey, id: &EntryId) -> Result<Option<Entry>>;

    /// Several entries of one feed, in the order of `ids` (`None` for absent ones). The
    /// default asks [`get`](Self::get) for each; a store whose reads are round trips (a
    /// database server) answers in one.
    fn get_many(&self, feed: &FeedKey, ids: &[EntryId]) -> Result<Vec<Option<Entry>>> {
        ids.iter().map(|id| self.get(feed, id)).collect()
    }

    /// Up to `limit` changes after `since`, in order. Changes whose latest write came verbatim
    /// from replica `skip_origin` are passed over (that replica has them already), but still
    /// advance `next`. Costs O(changes examined), never O(feed size).
    ///
    /// A page also ends (with `more`) once the [`Entry::wire_len_bound`]s of the changes it
    /// holds add up to more than [`MAX_PAGE_BYTES`](crate::sync::MAX_PAGE_BYTES): no more is
    /// read, so a feed of large entries costs a reader at most that plus one entry, whatever
    /// `limit` asks ([`ChangePage::within`] then cuts the page to the bound).
    fn changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> Result<ChangePage>;

    /// [`changes_since`](Self::changes_since) with each entry as the store keeps it (its
    /// JSON), checked to be one JSON value but not decoded: what a responder sends on, so
    /// that it does not decode and encode again what it stored in its wire form. The page
    /// holds the same changes, except that the byte bound counts the entries' JSON (never
    /// more than their [`Entry::wire_len_bound`]s), so a page of large entries may hold more.
    /// The default encodes what `changes_since` answers.
    fn encoded_changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> Result<EncodedPage> {
        EncodedPage::encode(self.changes_since(feed, since, limit, skip_origin)?)
    }

    /// Entries of a feed in id order, starting after `after`, at most `limit`.
    fn list(&self, feed: &FeedKey, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>>;

    /// The sync state of one feed with one remote (default when never synced).
    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> Result<SyncState>;

    /// Starts a write transaction.
    fn begin(&mut self) -> Result<Self::Txn<'_>>;

    /// Starts a write transaction whose loss in a crash is harmless, because what it writes
    /// is worked out again (a sync session's cursors: losing them means asking for, or
    /// sending, a page again). A store may commit it without waiting for the disk, but in
    /// order: once a later transaction is durable, so is this one. The default is
    /// [`Store::begin`].
    fn begin_relaxed(&mut self) -> Result<Self::Txn<'_>> {
        self.begin()
    }

    /// Removes `feed` altogether, at once and atomically: its entries, its change log and the
    /// sync states kept for it; returns how many entries it held. Unlike a tombstone this
    /// leaves nothing to sync: it is for a replica that must stop holding a feed's data (a
    /// hub purging a deleted folder). Positions do not go back: should the feed be written
    /// again, its changes continue after its old head, so no cursor held elsewhere skips them.
    fn purge_feed(&mut self, feed: &FeedKey) -> Result<u64>;
}

/// A write transaction on a [`Store`]. Reads see the transaction's own writes.
pub trait StoreTxn {
    /// One entry, as the transaction sees it.
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> Result<Option<Cow<'_, Entry>>>;

    /// Tells the transaction which entries of `feed` it is about to read, so that a store
    /// whose reads are round trips (a database server) can fetch them in one. A hint only:
    /// the default does nothing, and `get` must answer the same with or without it.
    fn prefetch(&mut self, feed: &FeedKey, ids: &[EntryId]) -> Result<()> {
        let _ = (feed, ids);
        Ok(())
    }

    /// Stores `entry` (replacing any entry of the same id) and gives it the feed's next
    /// position, which is returned; the change also takes the replica's next replica-wide
    /// number. `origin` is the replica it came from verbatim, if any.
    fn put(&mut self, feed: &FeedKey, entry: Entry, origin: Option<&ReplicaId>) -> Result<Cursor>;

    /// [`StoreTxn::put`] of an [`Incoming`] entry: a store that keeps entries as their JSON
    /// stores the JSON made ahead, when there is one, instead of encoding the entry again.
    /// The default encodes as `put` does.
    fn put_incoming(
        &mut self,
        feed: &FeedKey,
        entry: Incoming,
        origin: Option<&ReplicaId>,
    ) -> Result<Cursor> {
        self.put(feed, entry.into_parts().0, origin)
    }

    /// Records the sync state of one feed with one remote.
    fn set_sync_state(
        &mut self,
        remote: &RemoteId,
        feed: &FeedKey,
        state: &SyncState,
    ) -> Result<()>;

    /// Makes every write of the transaction durable and visible, atomically.
    fn commit(self) -> Result<()>;
}
