//! Local operations on items: create, update, delete and resolve.

use crate::error::{CoreError, Result};
use crate::feedsync::history::HistoryItem;
use crate::feedsync::item::{Item, SyncMeta, Version};
use crate::feedsync::limits::MAX_UPDATES;
use crate::feedsync::merge::{assemble, Coverage};
use crate::id::{DeviceId, EntryId};
use crate::time::Timestamp;

/// Who makes an update, and when: the `by` and `when` of the new history item.
///
/// mesh always sets both; FeedSync allows either to be absent (never both), which
/// [`Stamp::partial`] accepts for interoperability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    by: Option<DeviceId>,
    when: Option<Timestamp>,
}

impl Stamp {
    /// An update by device `by` at `when`.
    pub fn new(by: DeviceId, when: Timestamp) -> Self {
        Stamp {
            by: Some(by),
            when: Some(when),
        }
    }

    /// An update with `by` or `when` possibly absent; refuses both absent.
    pub fn partial(by: Option<DeviceId>, when: Option<Timestamp>) -> Result<Self> {
        if by.is_none() && when.is_none() {
            return Err(CoreError::invalid_sync(
                "",
                "an update needs a `by`, a `when`, or both",
            ));
        }
        Ok(Stamp { by, when })
    }

    /// The updating endpoint.
    pub fn by(&self) -> Option<&DeviceId> {
        self.by.as_ref()
    }

    /// The update's time.
    pub fn when(&self) -> Option<Timestamp> {
        self.when
    }

    fn history_item(&self, sequence: u32) -> HistoryItem {
        HistoryItem::new(sequence, self.when, self.by.clone())
    }
}

/// Creates an item: `updates = 1` and one history item `(1, when, by)`.
pub fn create<T>(id: EntryId, stamp: &Stamp, content: T) -> Item<T> {
    Item {
        sync: SyncMeta {
            id,
            updates: 1,
            deleted: false,
            noconflicts: false,
            history: vec![stamp.history_item(1)],
        },
        content,
        conflicts: Vec::new(),
    }
}

/// Updates an item (or deletes it, with `deleted = true`, keeping a tombstone): `updates`
/// grows by one and a new topmost history item `(updates, when, by)` is added.
///
/// Conflicts whose topmost `by` is the updating endpoint are subsumed by the new version and
/// dropped; their history items that the new history does not cover yet are folded in just
/// below the new topmost item, so that everything they knew stays known.
pub fn update<T: Clone>(
    item: &Item<T>,
    stamp: &Stamp,
    content: T,
    deleted: bool,
) -> Result<Item<T>> {
    let mine = |c: &Version<T>| {
        stamp.by.is_some() && c.sync.topmost().and_then(|h| h.by.as_ref()) == stamp.by.as_ref()
    };
    next_version(item, stamp, content, deleted, |c| !mine(c), Fold::InOrder)
}

/// Where folded history items go, below the new topmost item.
#[derive(Clone, Copy)]
enum Fold {
    /// In the order they come (an update subsuming its own conflicts).
    InOrder,
    /// Each immediately after the topmost item, as FeedSync 1.0.1 specifies for a resolve:
    /// the last one folded ends up highest.
    EachBelowTop,
}

/// The item's next version by `stamp`: the conflicts `keep` refuses are dropped, and their
/// history items the new history does not cover yet are folded in below the new topmost item.
fn next_version<T: Clone>(
    item: &Item<T>,
    stamp: &Stamp,
    content: T,
    deleted: bool,
    keep: impl Fn(&Version<T>) -> bool,
    how: Fold,
) -> Result<Item<T>> {
    let (next, mut history) = bump(item, stamp)?;
    let (kept, dropped): (Vec<&Version<T>>, Vec<&Version<T>>) =
        item.conflicts.iter().partition(|c| keep(c));
    fold(&mut history, dropped.into_iter().map(|c| &c.sync), how);
    Ok(Item {
        sync: SyncMeta {
            id: item.sync.id.clone(),
            updates: next,
            deleted,
            noconflicts: item.sync.noconflicts,
            history,
        },
        content,
        conflicts: kept.into_iter().cloned().collect(),
    })
}

/// Deletes an item: an update that sets `deleted` and keeps the content as a tombstone.
pub fn delete<T: Clone>(item: &Item<T>, stamp: &Stamp) -> Result<Item<T>> {
    update(item, stamp, item.content.clone(), true)
}

/// Resolves every conflict of `item`, keeping `content` (which the application picked or wrote).
///
/// The resolving endpoint first performs an update; then, conflict by conflict and history
/// item by history item, each item the new history does not cover yet is inserted
/// immediately after the new topmost item (FeedSync 1.0.1), and the conflicts are removed.
pub fn resolve<T: Clone>(
    item: &Item<T>,
    stamp: &Stamp,
    content: T,
    deleted: bool,
) -> Result<Item<T>> {
    next_version(item, stamp, content, deleted, |_| false, Fold::EachBelowTop)
}

/// Picks one of the item's versions (the winner or a conflict, by index: 0 is the winner, `n`
/// is conflict `n - 1`) as the resolution, keeping its content and deleted state.
pub fn resolve_with_version<T: Clone>(
    item: &Item<T>,
    stamp: &Stamp,
    index: usize,
) -> Result<Item<T>> {
    let (content, deleted) = match index {
        0 => (item.content.clone(), item.sync.deleted),
        n => match item.conflicts.get(n - 1) {
            Some(c) => (c.content.clone(), c.sync.deleted),
            None => {
                return Err(CoreError::NotFound {
                    kind: "conflict version",
                    id: format!("{}#{n}", item.sync.id),
                })
            }
        },
    };
    resolve(item, stamp, content, deleted)
}

/// Canonicalizes an item that came from elsewhere: the best version on top, conflicts in
/// winner order, duplicates removed.
pub fn canonicalize<T>(item: Item<T>) -> Item<T> {
    let (v, cs) = item.into_versions();
    let mut versions = Vec::with_capacity(1 + cs.len());
    versions.push(v);
    versions.extend(cs);
    assemble::<T>(versions)
}

fn bump<T>(item: &Item<T>, stamp: &Stamp) -> Result<(u32, Vec<HistoryItem>)> {
    let next = item
        .sync
        .updates
        .checked_add(1)
        .filter(|&n| n <= MAX_UPDATES)
        .ok_or_else(|| {
            CoreError::LimitExceeded(format!(
                "item {:?}: updates would pass {MAX_UPDATES}",
                item.sync.id.as_str()
            ))
        })?;
    let mut history = Vec::with_capacity(item.sync.history.len() + 1);
    history.push(stamp.history_item(next));
    history.extend(item.sync.history.iter().cloned());
    Ok((next, history))
}

/// Inserts below the topmost item every history item of `versions` that `history` does not
/// cover yet, in order or each right below the top (see [`Fold`]), in time linear in the
/// histories' lengths.
fn fold<'a>(
    history: &mut Vec<HistoryItem>,
    versions: impl Iterator<Item = &'a SyncMeta>,
    how: Fold,
) {
    let mut folded: Vec<HistoryItem> = Vec::new();
    {
        let mut cover = Coverage::of(std::iter::empty());
        for h in history.iter() {
            cover.add(h);
        }
        for v in versions {
            for h in &v.history {
                if !cover.covers(h) {
                    cover.add(h);
                    folded.push(h.clone());
                }
            }
        }
    }
    // Each inserted right below the top: the last one folded ends up highest.
    if let Fold::EachBelowTop = how {
        folded.reverse();
    }
    history.splice(1..1, folded);
}
