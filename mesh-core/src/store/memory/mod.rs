//! The in-memory store.
//!
//! Per feed, the entries are kept packed ([`slot::Slot`], 104 bytes each) in an arena of
//! chunks ([`chunked::Chunked`]) and found by a key-less hash index of the slot numbers
//! ([`index::Index`], 8 bytes per bucket); the change log is 12-byte records in chunks
//! ([`log::Log`]); authors, devices and origins are interned store-wide ([`who::Whos`]).
//! Entries are rebuilt on read. See `docs/benchmarks.md` for the bytes per entry.

mod chunked;
mod index;
mod log;
mod slot;
mod who;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use crate::error::{CoreError, Result};
use crate::id::{EntryId, FeedName, FolderId, RemoteId, ReplicaId, UserId};
use crate::model::{Entry, FeedKey, Scope};
use crate::store::{Change, ChangePage, Cursor, FeedHead, FeedMoved, Store, StoreTxn, SyncState};

use chunked::Chunked;
use index::Index;
use log::Log;
use slot::Slot;
use who::Whos;

/// The entries of one feed.
#[derive(Default)]
struct FeedState {
    /// Slots, numbered by their position; only the last can ever be removed (by a rollback).
    slots: Chunked<Slot>,
    /// Slot numbers by the hash of the slot's id.
    index: Index,
    /// One live record per entry, at the position of its latest change.
    log: Log,
    /// The replica-wide number of the latest change.
    seq: u64,
    /// The head the feed had when it was last purged (positions continue after it).
    base: u64,
}

impl FeedState {
    /// The slot number of entry `id`, given the index's hash of it.
    #[inline]
    fn find(&self, hash: u32, id: &EntryId) -> Option<u32> {
        self.index.find(hash, |s| {
            self.slots.get(s).is_some_and(|slot| slot.id == *id)
        })
    }

    fn slot(&self, feed: &FeedKey, i: u32) -> Result<&Slot> {
        self.slots
            .get(i)
            .ok_or_else(|| CoreError::Store(format!("memory store: {feed} has no slot {i}")))
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The position of the latest change.
    fn head(&self) -> u64 {
        self.log.head().max(self.base)
    }
}

/// A [`Store`] held in memory: for tests, the quickstart, and applications that keep nothing
/// on disk. Transactions keep an undo log and roll back when dropped uncommitted.
///
/// ```
/// use mesh_core::store::{MemoryStore, Store};
/// let store = MemoryStore::new("device-a".parse().unwrap());
/// assert!(store.feeds().unwrap().is_empty());
/// ```
pub struct MemoryStore {
    replica: ReplicaId,
    /// The replica-wide number of the latest change.
    seq: u64,
    feeds: HashMap<FeedKey, FeedState>,
    /// The names of the feeds in `feeds`, by scope.
    scopes: HashMap<Scope, BTreeSet<FeedName>>,
    /// The folders whose `members` feed holds an entry, by the entry's id (its user's).
    members: HashMap<EntryId, BTreeSet<FolderId>>,
    /// The heads of purged feeds, where their positions continue should they be written again.
    purged: HashMap<FeedKey, u64>,
    whos: Whos,
    sync: HashMap<(RemoteId, FeedKey), SyncState>,
}

impl MemoryStore {
    /// An empty store for replica `replica`.
    pub fn new(replica: ReplicaId) -> Self {
        MemoryStore {
            replica,
            seq: 0,
            feeds: HashMap::new(),
            scopes: HashMap::new(),
            members: HashMap::new(),
            purged: HashMap::new(),
            whos: Whos::default(),
            sync: HashMap::new(),
        }
    }

    /// The total number of entries over all feeds.
    pub fn len(&self) -> usize {
        self.feeds.values().map(FeedState::len).sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The entry in slot `i` of `fs`.
    fn unpack(&self, feed: &FeedKey, fs: &FeedState, i: u32) -> Result<Entry> {
        let slot = fs.slot(feed, i)?;
        Ok(slot.unpack(self.whos.get(slot.who)?))
    }
}

/// Files `feed` under its scope, as it comes to hold entries.
fn scope_added(scopes: &mut HashMap<Scope, BTreeSet<FeedName>>, feed: &FeedKey) {
    match scopes.get_mut(&feed.scope) {
        Some(names) => {
            names.insert(feed.name.clone());
        }
        None => {
            scopes.insert(feed.scope.clone(), BTreeSet::from([feed.name.clone()]));
        }
    }
}

/// Takes `feed` out of its scope, as it is removed.
fn scope_removed(scopes: &mut HashMap<Scope, BTreeSet<FeedName>>, feed: &FeedKey) {
    if let Some(names) = scopes.get_mut(&feed.scope) {
        names.remove(&feed.name);
        if names.is_empty() {
            scopes.remove(&feed.scope);
        }
    }
}

/// Indexes entry `id` of `feed` if that is a `members` feed.
fn member_added(members: &mut HashMap<EntryId, BTreeSet<FolderId>>, feed: &FeedKey, id: &EntryId) {
    if let Some(folder) = feed.members_folder() {
        members
            .entry(id.clone())
            .or_default()
            .insert(folder.clone());
    }
}

/// Drops entry `id` of `feed` from the index if that is a `members` feed.
fn member_removed(
    members: &mut HashMap<EntryId, BTreeSet<FolderId>>,
    feed: &FeedKey,
    id: &EntryId,
) {
    let Some(folder) = feed.members_folder() else {
        return;
    };
    if let Some(folders) = members.get_mut(id) {
        folders.remove(folder);
        if folders.is_empty() {
            members.remove(id);
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("replica", &self.replica)
            .field("seq", &self.seq)
            .field("feeds", &self.feeds.len())
            .field("writers", &self.whos.len())
            .finish()
    }
}

impl Store for MemoryStore {
    type Txn<'a> = MemoryTxn<'a>;

    fn replica_id(&self) -> ReplicaId {
        self.replica.clone()
    }

    fn feeds(&self) -> Result<Vec<FeedHead>> {
        let mut out: Vec<FeedHead> = self
            .feeds
            .iter()
            .map(|(k, f)| FeedHead {
                feed: k.clone(),
                head: Cursor(f.head()),
                entries: f.len() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.feed.cmp(&b.feed));
        Ok(out)
    }

    fn moved_feeds(&self) -> Result<Vec<FeedMoved>> {
        Ok(self
            .feeds
            .iter()
            .map(|(k, f)| FeedMoved {
                feed: k.clone(),
                head: Cursor(f.head()),
                seq: f.seq,
            })
            .collect())
    }

    fn feed_moved(&self, feed: &FeedKey) -> Result<Option<FeedMoved>> {
        Ok(self.feeds.get(feed).map(|f| FeedMoved {
            feed: feed.clone(),
            head: Cursor(f.head()),
            seq: f.seq,
        }))
    }

    fn last_moved(&self) -> Result<u64> {
        Ok(self.seq)
    }

    fn feed_head(&self, feed: &FeedKey) -> Result<Option<FeedHead>> {
        Ok(self.feeds.get(feed).map(|f| FeedHead {
            feed: feed.clone(),
            head: Cursor(f.head()),
            entries: f.len() as u64,
        }))
    }

    fn scope_feeds(&self, scope: &Scope) -> Result<Vec<FeedHead>> {
        let Some(names) = self.scopes.get(scope) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let feed = FeedKey {
                scope: scope.clone(),
                name: name.clone(),
            };
            if let Some(h) = self.feed_head(&feed)? {
                out.push(h);
            }
        }
        Ok(out)
    }

    fn member_folders(&self, user: &UserId) -> Result<Vec<FolderId>> {
        Ok(self
            .members
            .get(user.as_str())
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn get(&self, feed: &FeedKey, id: &EntryId) -> Result<Option<Entry>> {
        let Some(fs) = self.feeds.get(feed) else {
            return Ok(None);
        };
        match fs.find(fs.index.hash(id.as_str()), id) {
            Some(i) => self.unpack(feed, fs, i).map(Some),
            None => Ok(None),
        }
    }

    fn changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> Result<ChangePage> {
        let mut page = ChangePage {
            changes: Vec::new(),
            next: since,
            more: false,
        };
        let Some(fs) = self.feeds.get(feed) else {
            return Ok(page);
        };
        let scan_cap = crate::store::scan_cap(limit);
        let mut bytes = 0usize;
        // Only live records are examined (and counted); outside a transaction no chunk of the
        // log is more than half dead, so the dead ones passed over are about as many at most
        // (plus those of the first and last chunks walked).
        for (scanned, (seq, i)) in fs.log.after(since.0).enumerate() {
            if page.changes.len() >= limit
                || scanned >= scan_cap
                || bytes > crate::sync::MAX_PAGE_BYTES
            {
                page.more = true;
                break;
            }
            let slot = fs.slot(feed, i)?;
            let who = self.whos.get(slot.who)?;
            page.next = Cursor(seq);
            if skip_origin.is_some() && who.origin.as_ref() == skip_origin {
                continue;
            }
            let entry = slot.unpack(who);
            bytes = bytes.saturating_add(entry.wire_len_bound());
            page.changes.push(Change {
                seq: Cursor(seq),
                entry,
            });
        }
        Ok(page)
    }

    fn list(&self, feed: &FeedKey, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>> {
        let Some(fs) = self.feeds.get(feed) else {
            return Ok(Vec::new());
        };
        let mut slots: Vec<&Slot> = fs
            .slots
            .iter()
            .filter(|s| after.is_none_or(|a| s.id > *a))
            .collect();
        slots.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        slots.truncate(limit);
        slots
            .into_iter()
            .map(|s| Ok(s.unpack(self.whos.get(s.who)?)))
            .collect()
    }

    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> Result<SyncState> {
        Ok(self
            .sync
            .get(&(remote.clone(), feed.clone()))
            .cloned()
            .unwrap_or_default())
    }

    fn purge_feed(&mut self, feed: &FeedKey) -> Result<u64> {
        self.sync.retain(|(_, f), _| f != feed);
        let Some(fs) = self.feeds.remove(feed) else {
            return Ok(0);
        };
        scope_removed(&mut self.scopes, feed);
        self.purged.insert(feed.clone(), fs.head());
        // The feed's writers are released with its slots.
        for slot in fs.slots.iter() {
            self.whos.release(slot.who);
            member_removed(&mut self.members, feed, &slot.id);
        }
        Ok(fs.len() as u64)
    }

    fn begin(&mut self) -> Result<MemoryTxn<'_>> {
        Ok(MemoryTxn {
            seq_before: self.seq,
            store: self,
            undo: Vec::new(),
            read: None,
            done: false,
        })
    }
}

enum Undo {
    /// Slot `slot` of `feed` was written: it held `prev`, or was appended when `None`.
    Put {
        feed: FeedKey,
        slot: u32,
        prev: Option<Slot>,
        /// The feed's replica-wide number before the put.
        prev_seq: u64,
    },
    Sync {
        key: (RemoteId, FeedKey),
        prev: Option<SyncState>,
    },
}

/// A transaction on a [`MemoryStore`]: writes apply at once and are undone if the transaction
/// is dropped without [`StoreTxn::commit`].
pub struct MemoryTxn<'a> {
    store: &'a mut MemoryStore,
    seq_before: u64,
    undo: Vec<Undo>,
    /// The entry [`StoreTxn::get`] last rebuilt; its buffers are reused by the next read.
    read: Option<Entry>,
    done: bool,
}

fn too_many(feed: &FeedKey) -> CoreError {
    CoreError::LimitExceeded(format!(
        "memory store: feed {feed} holds the most entries or changes it can"
    ))
}

impl StoreTxn for MemoryTxn<'_> {
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> Result<Option<Cow<'_, Entry>>> {
        let store = &*self.store;
        let Some(fs) = store.feeds.get(feed) else {
            return Ok(None);
        };
        let Some(i) = fs.find(fs.index.hash(id.as_str()), id) else {
            return Ok(None);
        };
        let slot = fs.slot(feed, i)?;
        let who = store.whos.get(slot.who)?;
        match &mut self.read {
            Some(e) => slot.unpack_into(who, e),
            None => self.read = Some(slot.unpack(who)),
        }
        Ok(self.read.as_ref().map(Cow::Borrowed))
    }

    fn put(&mut self, feed: &FeedKey, entry: Entry, origin: Option<&ReplicaId>) -> Result<Cursor> {
        let store = &mut *self.store;
        let seq = store.seq + 1;
        let base = store.purged.get(feed).copied().unwrap_or(0);
        let pos = store.feeds.get(feed).map_or(base, FeedState::head) + 1;
        let (mut slot, who) = Slot::pack(entry, pos, origin);
        slot.who = store.whos.intern(who)?;
        let fs = match store.feeds.get_mut(feed) {
            Some(fs) => fs,
            None => {
                scope_added(&mut store.scopes, feed);
                store
                    .feeds
                    .entry(feed.clone())
                    .or_insert_with(|| FeedState {
                        base,
                        ..FeedState::default()
                    })
            }
        };
        let hash = fs.index.hash(slot.id.as_str());
        let existing = fs.find(hash, &slot.id);
        let full =
            fs.log.is_full() || (existing.is_none() && fs.slots.len() >= Chunked::<Slot>::MAX);
        let cur = match existing {
            Some(i) if !full => fs.slots.get_mut(i).map(|cur| (i, cur)),
            _ => None,
        };
        let (i, prev) = match (existing, cur) {
            (Some(_), Some((i, cur))) => {
                let prev = std::mem::replace(cur, slot);
                fs.log.kill(prev.seq);
                (i, Some(prev))
            }
            (None, _) if !full => {
                let member = feed.members_folder().map(|_| slot.id.clone());
                let i = fs.slots.push(slot).map_err(|_| too_many(feed))?;
                fs.index.insert(hash, i);
                if let Some(id) = member {
                    member_added(&mut store.members, feed, &id);
                }
                (i, None)
            }
            _ => {
                // Nothing changed: give back what was taken.
                store.whos.release(slot.who);
                if fs.len() == 0 {
                    store.feeds.remove(feed);
                    scope_removed(&mut store.scopes, feed);
                }
                return Err(if full {
                    too_many(feed)
                } else {
                    CoreError::Store(format!("memory store: {feed}'s index names a missing slot"))
                });
            }
        };
        fs.log.append(pos, i);
        let prev_seq = std::mem::replace(&mut fs.seq, seq);
        store.seq = seq;
        self.undo.push(Undo::Put {
            feed: feed.clone(),
            slot: i,
            prev,
            prev_seq,
        });
        Ok(Cursor(pos))
    }

    fn set_sync_state(
        &mut self,
        remote: &RemoteId,
        feed: &FeedKey,
        state: &SyncState,
    ) -> Result<()> {
        let key = (remote.clone(), feed.clone());
        let prev = self.store.sync.insert(key.clone(), state.clone());
        self.undo.push(Undo::Sync { key, prev });
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        self.done = true;
        let store = &mut *self.store;
        let mut last: Option<FeedKey> = None;
        for u in self.undo.drain(..) {
            if let Undo::Put { feed, prev, .. } = u {
                // The replaced slots are gone for good: so are their writers and log records.
                if let Some(p) = prev {
                    store.whos.release(p.who);
                }
                if last.as_ref() != Some(&feed) {
                    if let Some(fs) = store.feeds.get_mut(&feed) {
                        fs.log.compact();
                    }
                    last = Some(feed);
                }
            }
        }
        Ok(())
    }
}

impl Drop for MemoryTxn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let store = &mut *self.store;
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Put {
                    feed,
                    slot,
                    prev,
                    prev_seq,
                } => {
                    let Some(fs) = store.feeds.get_mut(&feed) else {
                        continue;
                    };
                    fs.seq = prev_seq;
                    // Undone in reverse order, so this put's log record is the last one, and
                    // an appended slot is the last slot.
                    fs.log.pop();
                    let cur = match prev {
                        Some(p) => {
                            fs.log.revive(p.seq, slot);
                            fs.slots.get_mut(slot).map(|s| std::mem::replace(s, p))
                        }
                        None => {
                            let cur = fs.slots.pop();
                            if let Some(c) = &cur {
                                fs.index.remove(fs.index.hash(c.id.as_str()), slot);
                                member_removed(&mut store.members, &feed, &c.id);
                            }
                            cur
                        }
                    };
                    if let Some(c) = cur {
                        store.whos.release(c.who);
                    }
                    if fs.len() == 0 {
                        store.feeds.remove(&feed);
                        scope_removed(&mut store.scopes, &feed);
                    }
                }
                Undo::Sync { key, prev } => match prev {
                    Some(p) => {
                        store.sync.insert(key, p);
                    }
                    None => {
                        store.sync.remove(&key);
                    }
                },
            }
        }
        store.seq = self.seq_before;
    }
}
