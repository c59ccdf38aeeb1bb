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
