//! The in-memory store.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::error::{CoreError, Result};
use crate::id::{EntryId, RemoteId, ReplicaId};
use crate::model::{Entry, FeedKey};
use crate::store::{Change, ChangePage, Cursor, FeedHead, Store, StoreTxn, SyncState};

struct Slot {
    seq: u64,
    origin: Option<ReplicaId>,
    entry: Entry,
}

#[derive(Default)]
struct FeedState {
    entries: HashMap<EntryId, Slot>,
    /// Sequence number of each entry's latest change → entry id; one record per entry.
    log: BTreeMap<u64, EntryId>,
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
    seq: u64,
    feeds: HashMap<FeedKey, FeedState>,
    sync: HashMap<(RemoteId, FeedKey), SyncState>,
}

impl MemoryStore {
    /// An empty store for replica `replica`.
    pub fn new(replica: ReplicaId) -> Self {
        MemoryStore {
            replica,
            seq: 0,
            feeds: HashMap::new(),
            sync: HashMap::new(),
        }
    }

    /// The total number of entries over all feeds.
    pub fn len(&self) -> usize {
        self.feeds.values().map(|f| f.entries.len()).sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("replica", &self.replica)
            .field("seq", &self.seq)
            .field("feeds", &self.feeds.len())
            .finish()
    }
}

fn inconsistent(feed: &FeedKey, id: &EntryId) -> CoreError {
    CoreError::Store(format!("change log of {feed} names missing entry {id}"))
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
                head: Cursor(f.log.last_key_value().map_or(0, |(s, _)| *s)),
                entries: f.entries.len() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.feed.cmp(&b.feed));
        Ok(out)
    }

    fn head(&self, feed: &FeedKey) -> Result<Cursor> {
        Ok(Cursor(
            self.feeds
                .get(feed)
                .and_then(|f| f.log.last_key_value())
                .map_or(0, |(s, _)| *s),
        ))
    }

    fn get(&self, feed: &FeedKey, id: &EntryId) -> Result<Option<Entry>> {
        Ok(self
            .feeds
            .get(feed)
            .and_then(|f| f.entries.get(id))
            .map(|s| s.entry.clone()))
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
        let log = fs.log.range((Bound::Excluded(since.0), Bound::Unbounded));
        for (scanned, (&seq, id)) in log.enumerate() {
            if page.changes.len() >= limit || scanned >= scan_cap {
                page.more = true;
                break;
            }
            let slot = fs.entries.get(id).ok_or_else(|| inconsistent(feed, id))?;
            page.next = Cursor(seq);
            if skip_origin.is_some() && slot.origin.as_ref() == skip_origin {
                continue;
            }
            page.changes.push(Change {
                seq: Cursor(seq),
                entry: slot.entry.clone(),
            });
        }
        Ok(page)
    }

    fn list(&self, feed: &FeedKey, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>> {
        let Some(fs) = self.feeds.get(feed) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<&EntryId> = fs
            .entries
            .keys()
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids
            .into_iter()
            .filter_map(|id| fs.entries.get(id).map(|s| s.entry.clone()))
            .collect())
    }

    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> Result<SyncState> {
        Ok(self
            .sync
            .get(&(remote.clone(), feed.clone()))
            .cloned()
            .unwrap_or_default())
    }

    fn purge_feed(&mut self, feed: &FeedKey) -> Result<u64> {
        let n = self
            .feeds
            .remove(feed)
            .map_or(0, |f| f.entries.len() as u64);
        self.sync.retain(|(_, f), _| f != feed);
        Ok(n)
    }

    fn begin(&mut self) -> Result<MemoryTxn<'_>> {
        Ok(MemoryTxn {
            seq_before: self.seq,
            store: self,
            undo: Vec::new(),
            done: false,
        })
    }
}

enum Undo {
    Put {
        feed: FeedKey,
        id: EntryId,
        prev: Option<Slot>,
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
    done: bool,
}

impl StoreTxn for MemoryTxn<'_> {
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> Result<Option<Cow<'_, Entry>>> {
        Ok(self
            .store
            .feeds
            .get(feed)
            .and_then(|f| f.entries.get(id))
            .map(|s| Cow::Borrowed(&s.entry)))
    }

    fn put(&mut self, feed: &FeedKey, entry: Entry, origin: Option<&ReplicaId>) -> Result<Cursor> {
        let store = &mut *self.store;
        let fs = match store.feeds.get_mut(feed) {
            Some(fs) => fs,
            None => store.feeds.entry(feed.clone()).or_default(),
        };
        store.seq += 1;
        let seq = store.seq;
        let id = entry.sync.id.clone();
        let prev = fs.entries.insert(
            id.clone(),
            Slot {
                seq,
                origin: origin.cloned(),
                entry,
            },
        );
        if let Some(p) = &prev {
            fs.log.remove(&p.seq);
        }
        fs.log.insert(seq, id.clone());
        self.undo.push(Undo::Put {
            feed: feed.clone(),
            id,
            prev,
        });
        Ok(Cursor(seq))
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
        self.undo.clear();
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
                Undo::Put { feed, id, prev } => {
                    let Some(fs) = store.feeds.get_mut(&feed) else {
                        continue;
                    };
                    if let Some(cur) = fs.entries.remove(&id) {
                        fs.log.remove(&cur.seq);
                    }
                    if let Some(p) = prev {
                        fs.log.insert(p.seq, id.clone());
                        fs.entries.insert(id, p);
                    }
                    if fs.entries.is_empty() {
                        store.feeds.remove(&feed);
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
