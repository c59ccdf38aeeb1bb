//! What the hub's notification streams hear when a feed moves: the feed's new head and, for a
//! small write, the changes themselves.
//!
//! A device told that a feed moved pulls it: one more round trip before the change is merged
//! there. When the write that moved the feed was small (a push through the sync protocol, or
//! a REST write), its changes travel in the notification (`changes`, see `docs/protocol.md`,
//! "Notifications"), read back from the store under the folder's lock right after the write
//! committed. A device whose pull cursor stands where they start merges them as the answer to
//! that pull and skips the request. The changes are exactly what the pull would answer:
//! everything the feed's change log holds between the head before the write and the head
//! after it (the pushing device, which a pull would skip them for, gets the notification
//! without them). Pages are optional: a device that is behind, a hub on PostgreSQL (whose
//! notifications come from the database) or a write too large just announce the head, as
//! before.

use std::sync::Arc;

use mesh_core::id::DeviceId;
use mesh_core::model::FeedKey;
use mesh_core::store::{Cursor, FeedMoved, Store};
use serde_json::value::RawValue;

/// The most changes a notification carries.
pub(crate) const PAGE_MAX_CHANGES: usize = 16;

/// The most bytes of entries (their JSON, as the replica keeps it) a notification carries.
pub(crate) const PAGE_MAX_BYTES: usize = 16 << 10;

/// Announcements not yet taken by every stream beyond which a push carries no changes: the
/// broadcast holds what waits in memory (up to its capacity), and a stream that far behind
/// would not use them anyway. So pages held stay under about this many times
/// [`PAGE_MAX_BYTES`], whoever pushes.
pub(crate) const PAGED_BACKLOG: usize = 256;

/// A feed of the hub's replica moved to a new head: the head, and the replica-wide number
/// that orders the move among all others (notification cursors count those; they never leave
/// the hub in clear).
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    /// The feed, its new head and the replica-wide number.
    pub moved: FeedMoved,
    /// The changes that moved it, when they are few and small.
    pub page: Option<Arc<Page>>,
}

impl From<FeedMoved> for Changed {
    fn from(moved: FeedMoved) -> Self {
        Changed { moved, page: None }
    }
}

/// The changes of one write, from the head before it to [`FeedMoved::head`].
#[derive(Debug)]
pub(crate) struct Page {
    /// The head before the write: the pull cursor they follow.
    pub since: Cursor,
    /// The device that pushed them through the sync protocol, whose notification goes without
    /// them (its pull would skip them); `None` for the hub's own writes (REST), which every
    /// device's pull returns.
    pub by: Option<DeviceId>,
    /// The entries, in change order, each as the replica keeps it: what a pull answer holds.
    pub entries: Vec<Box<RawValue>>,
}

impl Changed {
    /// The page to send to `device`'s streams: none to the device that pushed it.
    pub fn page_for(&self, device: &DeviceId) -> Option<&Page> {
        self.page
            .as_deref()
            .filter(|p| p.by.as_ref() != Some(device))
    }
}

/// The changes of `feed` after `since`, if they end at `moved`'s head, are at most
/// [`PAGE_MAX_CHANGES`] and [`PAGE_MAX_BYTES`]. Read in the same transaction scope as the
/// write (under the folder's lock), so nothing else lies in between; the entries are passed
/// on as the replica keeps them, not decoded and encoded again.
pub(crate) fn page<S: Store>(
    store: &S,
    feed: &FeedKey,
    since: Cursor,
    moved: &FeedMoved,
    by: Option<&DeviceId>,
) -> Result<Option<Page>, mesh_core::CoreError> {
    if moved.head <= since {
        return Ok(None);
    }
    let read = store.encoded_changes_since(feed, since, PAGE_MAX_CHANGES + 1, None)?;
    if read.more || read.next != moved.head || read.changes.len() > PAGE_MAX_CHANGES {
        return Ok(None);
    }
    let bytes: usize = read.changes.iter().map(|c| c.entry.get().len()).sum();
    if bytes > PAGE_MAX_BYTES {
        return Ok(None);
    }
    Ok(Some(Page {
        since,
        by: by.cloned(),
        entries: read.changes.into_iter().map(|c| c.entry).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use mesh_core::model::{Entry, EntryDraft};
    use mesh_core::replica::{Actor, Replica};
    use mesh_core::store::MemoryStore;
    use mesh_core::time::Timestamp;

    use super::*;

    fn feed() -> FeedKey {
        FeedKey::folder("f1".parse().unwrap(), "todos".parse().unwrap())
    }

    /// A replica whose feed holds `n` entries of `bytes` bytes of content each.
    fn replica(n: usize, bytes: usize) -> Replica<MemoryStore> {
        let mut r = Replica::new(MemoryStore::new("hub".parse().unwrap()));
        let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
        let now = Timestamp::from_unix(1_700_000_000).unwrap();
        for i in 0..n {
            let draft = EntryDraft::new(
                format!("t{i}"),
                serde_json::json!({ "x": "y".repeat(bytes) }),
            );
            r.create(&feed(), format!("t{i}").parse().unwrap(), draft, &ann, now)
                .unwrap();
        }
        r
    }

    fn moved(r: &Replica<MemoryStore>) -> FeedMoved {
        r.store().feed_moved(&feed()).unwrap().unwrap()
    }

    #[test]
    fn a_page_holds_exactly_the_changes_from_its_cursor_to_the_head() {
        let by: DeviceId = "laptop".parse().unwrap();
        let r = replica(3, 10);
        let m = moved(&r);
        let page = page(r.store(), &feed(), Cursor(1), &m, Some(&by))
            .unwrap()
            .unwrap();
        assert_eq!(page.since, Cursor(1));
        let entries: Vec<Entry> = page
            .entries
            .iter()
            .map(|e| serde_json::from_str(e.get()).unwrap())
            .collect();
        let titles: Vec<_> = entries.iter().map(|e| e.content.title.as_str()).collect();
        assert_eq!(titles, ["t1", "t2"]);
        // The head read does not follow the cursor: nothing.
        assert!(page_at(&r, Cursor(3)).is_none());
        assert!(page_at(&r, Cursor(4)).is_none());
    }

    fn page_at(r: &Replica<MemoryStore>, since: Cursor) -> Option<Page> {
        page(r.store(), &feed(), since, &moved(r), None).unwrap()
    }

    #[test]
    fn large_or_long_pushes_carry_no_changes() {
        let r = replica(PAGE_MAX_CHANGES + 1, 10);
        assert!(page_at(&r, Cursor::ZERO).is_none(), "too many changes");
        assert!(page_at(&r, Cursor(1)).is_some(), "the last 16 fit");
        let r = replica(2, PAGE_MAX_BYTES / 2);
        assert!(page_at(&r, Cursor::ZERO).is_none(), "too many bytes");
        assert!(page_at(&r, Cursor(1)).is_some());
    }

    #[test]
    fn a_backed_up_broadcast_carries_no_more_changes() {
        let r = replica(1, 10);
        let by: DeviceId = "laptop".parse().unwrap();
        let (tx, mut slow) = tokio::sync::broadcast::channel::<Changed>(4096);
        let announcer = crate::state::Announcer::listening(tx, 1);
        let mut paged = 0;
        for _ in 0..PAGED_BACKLOG * 2 {
            announcer
                .pushed(r.store(), &feed(), Cursor::ZERO, Some(&by))
                .unwrap();
        }
        while let Ok(c) = slow.try_recv() {
            paged += usize::from(c.page.is_some());
        }
        assert_eq!(paged, PAGED_BACKLOG, "pages stop once that many wait");
        // A stream that keeps up gets every one.
        for _ in 0..PAGED_BACKLOG * 2 {
            announcer
                .pushed(r.store(), &feed(), Cursor::ZERO, None)
                .unwrap();
            assert!(slow.try_recv().unwrap().page.is_some());
        }
    }
}
