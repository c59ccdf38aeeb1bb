//! Sync metadata, versions and items.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};
use crate::feedsync::history::{compact_history, history_covers, HistoryItem};
use crate::id::EntryId;

/// The `sx:sync` metadata of one version of an item (without its conflicts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMeta {
    /// The item's sync id, unique within its feed.
    pub id: EntryId,
    /// How many updates the item has seen.
    pub updates: u32,
    /// Whether this version is a tombstone.
    #[serde(default)]
    pub deleted: bool,
    /// Whether conflicts are suppressed: when this version wins a merge, the losers are dropped.
    #[serde(default)]
    pub noconflicts: bool,
    /// Update history, newest first.
    pub history: Vec<HistoryItem>,
}

impl SyncMeta {
    /// The topmost (newest) history item, if the history is not empty.
    #[inline]
    pub fn topmost(&self) -> Option<&HistoryItem> {
        self.history.first()
    }

    /// Checks the rules the specification puts on a single version's metadata.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(CoreError::invalid_sync(self.id.as_str(), reason));
        let Some(top) = self.history.first() else {
            return bad("the history is missing or empty".into());
        };
        if self.updates == 0 {
            return bad("updates must be at least 1".into());
        }
        for (i, h) in self.history.iter().enumerate() {
            if h.when.is_none() && h.by.is_none() {
                return bad(format!("history item {i} has neither when nor by"));
            }
            if h.sequence == 0 {
                return bad(format!("history item {i} has sequence 0"));
            }
        }
        if self.updates < top.sequence {
            return bad(format!(
                "updates {} is smaller than the topmost sequence {}",
                self.updates, top.sequence
            ));
        }
        Ok(())
    }

    /// Whether this version's history covers the topmost history item of `other`, i.e. whether
    /// `other` is already known to (subsumed by) this version.
    #[inline]
    pub fn knows(&self, other: &SyncMeta) -> bool {
        match other.topmost() {
            Some(top) => history_covers(&self.history, top),
            None => false,
        }
    }

    /// Whether the two are the same write: equal `updates` and topmost history item.
    #[inline]
    pub fn same_version(&self, other: &SyncMeta) -> bool {
        self.updates == other.updates && self.topmost() == other.topmost()
    }

    /// FeedSync's winner order: greater `updates`; then the later topmost `when`; then the
    /// present `when` over the absent; then the greater topmost `by` (by code point, present
    /// over absent). `Ordering::Greater` means `self` wins. The remaining fields break ties only
    /// between malformed versions, so that every replica still picks the same one.
    pub fn winner_cmp(&self, other: &SyncMeta) -> Ordering {
        let (a, b) = (self.topmost(), other.topmost());
        self.updates
            .cmp(&other.updates)
            .then_with(|| a.and_then(|h| h.when).cmp(&b.and_then(|h| h.when)))
            .then_with(|| {
                a.and_then(|h| h.by.as_ref())
                    .cmp(&b.and_then(|h| h.by.as_ref()))
            })
            .then_with(|| a.map(|h| h.sequence).cmp(&b.map(|h| h.sequence)))
            .then_with(|| self.deleted.cmp(&other.deleted))
            .then_with(|| self.noconflicts.cmp(&other.noconflicts))
            .then_with(|| self.history.len().cmp(&other.history.len()))
    }

    /// Compacts the history (see [`compact_history`]).
    pub fn compact(&mut self) {
        self.history = compact_history(&self.history);
    }
}

/// One version of an item: its sync metadata and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<T> {
    /// Sync metadata.
    pub sync: SyncMeta,
    /// Application content; opaque to the merge.
    pub content: T,
}

/// An item as a replica holds it: the winning version and the losing versions it conflicts
/// with (`sx:conflicts`).
///
/// Conflicts are kept in a canonical order (best first by [`SyncMeta::winner_cmp`]) by every
/// operation of this module, so that converged replicas hold identical items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<T> {
    /// Sync metadata of the winning version.
    pub sync: SyncMeta,
    /// Content of the winning version.
    pub content: T,
    /// The losing versions, each a full version.
    pub conflicts: Vec<Version<T>>,
}

impl<T> Item<T> {
    /// An item made of one version and no conflicts.
    pub fn from_version(v: Version<T>) -> Self {
        Item {
            sync: v.sync,
            content: v.content,
            conflicts: Vec::new(),
        }
    }

    /// The item's sync id.
    pub fn id(&self) -> &EntryId {
        &self.sync.id
    }

    /// Whether the winning version is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.sync.deleted
    }

    /// Whether the item holds unresolved conflicts.
    pub fn has_conflicts(&self) -> bool {
        !self.conflicts.is_empty()
    }

    /// Checks the item and each of its conflicts against the specification's rules.
    pub fn validate(&self) -> Result<()> {
        self.sync.validate()?;
        for c in &self.conflicts {
            if c.sync.id != self.sync.id {
                return Err(CoreError::invalid_sync(
                    self.sync.id.as_str(),
                    format!("conflict has a different id {:?}", c.sync.id.as_str()),
                ));
            }
            c.sync.validate()?;
        }
        Ok(())
    }

    /// Splits the item into its winning version and its conflicts.
    pub fn into_versions(self) -> (Version<T>, Vec<Version<T>>) {
        (
            Version {
                sync: self.sync,
                content: self.content,
            },
            self.conflicts,
        )
    }

    /// Compacts the history of the winning version and of every conflict.
    pub fn compact(&mut self) {
        self.sync.compact();
        for c in &mut self.conflicts {
            c.sync.compact();
        }
    }

    /// Maps the content of every version.
    pub fn map_content<U>(self, mut f: impl FnMut(T) -> U) -> Item<U> {
        Item {
            sync: self.sync,
            content: f(self.content),
            conflicts: self
                .conflicts
                .into_iter()
                .map(|c| Version {
                    sync: c.sync,
                    content: f(c.content),
                })
                .collect(),
        }
    }
}

// ---- serde: the JSON form of the conformance vectors ----------------------------------------
//
// {"sync": {"id", "updates", "deleted", "noconflicts", "history": [...], "conflicts": [item...]},
//  "content": ...}

#[derive(Serialize)]
struct SyncOut<'a, T> {
    id: &'a EntryId,
    updates: u32,
    deleted: bool,
    noconflicts: bool,
    history: &'a [HistoryItem],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<ItemOut<'a, T>>,
}

#[derive(Serialize)]
struct ItemOut<'a, T> {
    sync: SyncOut<'a, T>,
    content: &'a T,
}

impl<'a, T> ItemOut<'a, T> {
    fn new(sync: &'a SyncMeta, content: &'a T, conflicts: Vec<ItemOut<'a, T>>) -> Self {
        ItemOut {
            sync: SyncOut {
                id: &sync.id,
                updates: sync.updates,
                deleted: sync.deleted,
                noconflicts: sync.noconflicts,
                history: &sync.history,
                conflicts,
            },
            content,
        }
    }
}

#[derive(Deserialize)]
struct SyncIn<T> {
    id: EntryId,
    updates: u32,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    noconflicts: bool,
    #[serde(default)]
    history: Vec<HistoryItem>,
    #[serde(default = "Vec::new")]
    conflicts: Vec<ItemIn<T>>,
}

#[derive(Deserialize)]
struct ItemIn<T> {
    sync: SyncIn<T>,
    content: T,
}

impl<T> ItemIn<T> {
    /// Flattens nested conflicts (which FeedSync does not produce, but a foreign tool might):
    /// every version is kept, none is silently dropped.
    fn into_item(self) -> Item<T> {
        let mut conflicts = Vec::new();
        for c in self.sync.conflicts {
            let inner = c.into_item();
            conflicts.push(Version {
                sync: inner.sync,
                content: inner.content,
            });
            conflicts.extend(inner.conflicts);
        }
        Item {
            sync: SyncMeta {
                id: self.sync.id,
                updates: self.sync.updates,
                deleted: self.sync.deleted,
                noconflicts: self.sync.noconflicts,
                history: self.sync.history,
            },
            content: self.content,
            conflicts,
        }
    }
}

impl<T: Serialize> Serialize for Item<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let conflicts = self
            .conflicts
            .iter()
            .map(|c| ItemOut::new(&c.sync, &c.content, Vec::new()))
            .collect();
        ItemOut::new(&self.sync, &self.content, conflicts).serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(ItemIn::<T>::deserialize(d)?.into_item())
    }
}

impl<T: Serialize> Serialize for Version<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ItemOut::new(&self.sync, &self.content, Vec::new()).serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Version<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let item = ItemIn::<T>::deserialize(d)?.into_item();
        if !item.conflicts.is_empty() {
            return Err(serde::de::Error::custom(
                "a single version must not carry conflicts",
            ));
        }
        Ok(Version {
            sync: item.sync,
            content: item.content,
        })
    }
}
