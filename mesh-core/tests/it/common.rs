//! Helpers shared by the test modules.

use mesh_core::feedsync::{Item, Stamp};
use mesh_core::id::{DeviceId, EntryId};
use mesh_core::model::{EntryDraft, FeedKey};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::MemoryStore;
use mesh_core::time::Timestamp;

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix(1_200_000_000 + secs).unwrap()
}

pub fn dev(s: &str) -> DeviceId {
    s.parse().unwrap()
}

pub fn id(s: &str) -> EntryId {
    s.parse().unwrap()
}

pub fn stamp(by: &str, secs: i64) -> Stamp {
    Stamp::new(dev(by), t(secs))
}

pub fn feed() -> FeedKey {
    "folder:f1/todos".parse().unwrap()
}

pub fn replica(name: &str) -> Replica<MemoryStore> {
    Replica::new(MemoryStore::new(name.parse().unwrap()))
}

pub fn actor(user: &str, device: &str) -> Actor {
    Actor::new(user.parse().unwrap(), dev(device))
}

pub fn draft(title: &str) -> EntryDraft {
    EntryDraft::new(title, serde_json::json!({ "title": title }))
}

/// The versions of an item as (by, sequence) of their topmost history items.
pub fn tops<T>(item: &Item<T>) -> Vec<(String, u32)> {
    std::iter::once(&item.sync)
        .chain(item.conflicts.iter().map(|c| &c.sync))
        .map(|s| {
            let h = s.topmost().unwrap();
            (
                h.by.as_ref().map(|b| b.to_string()).unwrap_or_default(),
                h.sequence,
            )
        })
        .collect()
}

/// A [`MemoryStore`] that refuses to list its feeds: serving a request through it shows
/// the request was answered by looking feeds up by key, never by going through them all.
pub struct Unlisted(pub MemoryStore);

impl mesh_core::store::Store for Unlisted {
    type Txn<'a> = <MemoryStore as mesh_core::store::Store>::Txn<'a>;

    fn replica_id(&self) -> mesh_core::id::ReplicaId {
        self.0.replica_id()
    }
    fn feeds(&self) -> mesh_core::Result<Vec<mesh_core::store::FeedHead>> {
        Err(mesh_core::CoreError::Store("listed every feed".into()))
    }
    fn moved_feeds(&self) -> mesh_core::Result<Vec<mesh_core::store::FeedMoved>> {
        Err(mesh_core::CoreError::Store("listed every feed".into()))
    }
    fn feed_moved(&self, feed: &FeedKey) -> mesh_core::Result<Option<mesh_core::store::FeedMoved>> {
        self.0.feed_moved(feed)
    }
    fn last_moved(&self) -> mesh_core::Result<u64> {
        self.0.last_moved()
    }
    fn feed_head(&self, feed: &FeedKey) -> mesh_core::Result<Option<mesh_core::store::FeedHead>> {
        self.0.feed_head(feed)
    }
    fn scope_feeds(
        &self,
        scope: &mesh_core::model::Scope,
    ) -> mesh_core::Result<Vec<mesh_core::store::FeedHead>> {
        self.0.scope_feeds(scope)
    }
    fn member_folders(
        &self,
        user: &mesh_core::id::UserId,
    ) -> mesh_core::Result<Vec<mesh_core::id::FolderId>> {
        self.0.member_folders(user)
    }
    fn get(
        &self,
        feed: &FeedKey,
        id: &EntryId,
    ) -> mesh_core::Result<Option<mesh_core::model::Entry>> {
        self.0.get(feed, id)
    }
    fn changes_since(
        &self,
        feed: &FeedKey,
        since: mesh_core::store::Cursor,
        limit: usize,
        skip_origin: Option<&mesh_core::id::ReplicaId>,
    ) -> mesh_core::Result<mesh_core::store::ChangePage> {
        self.0.changes_since(feed, since, limit, skip_origin)
    }
    fn list(
        &self,
        feed: &FeedKey,
        after: Option<&EntryId>,
        limit: usize,
    ) -> mesh_core::Result<Vec<mesh_core::model::Entry>> {
        self.0.list(feed, after, limit)
    }
    fn sync_state(
        &self,
        remote: &mesh_core::id::RemoteId,
        feed: &FeedKey,
    ) -> mesh_core::Result<mesh_core::store::SyncState> {
        self.0.sync_state(remote, feed)
    }
    fn begin(&mut self) -> mesh_core::Result<Self::Txn<'_>> {
        self.0.begin()
    }
    fn purge_feed(&mut self, feed: &FeedKey) -> mesh_core::Result<u64> {
        self.0.purge_feed(feed)
    }
}
