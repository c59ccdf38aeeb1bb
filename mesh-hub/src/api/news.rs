//! The news lists of the REST API (`GET /mesh/news`, `GET /mesh/folders/{folder}/news`): the
//! newest activity, read from each news feed's latest changes only.
//!
//! A news feed takes an item for every write to its folder and is never trimmed, so reading
//! all of it for each listing would cost more with every write, whoever made them. A listing
//! of `top` items reads at most [`window`]`(top)` changes per feed instead.

use mesh_core::model::{FeedKey, NewsItem};
use mesh_core::store::{Cursor, Store};
use mesh_core::CoreError;

/// Changes read per store call.
const PAGE: usize = 1_000;

/// How many of a news feed's latest changes a listing of `top` items reads: four per item
/// asked for, at least 256. The listing shows the newest `top` items among them, so an item
/// that reached the hub long after it happened, with more than that many since, is left out.
pub(crate) fn window(top: usize) -> u64 {
    (top as u64).saturating_mul(4).max(256)
}

/// The live items among the latest [`window`]`(top)` changes of news feed `feed`, in change
/// order; an entry that is not a news item is skipped.
pub(crate) fn recent<S: Store>(
    store: &S,
    feed: &FeedKey,
    top: usize,
) -> Result<Vec<NewsItem>, CoreError> {
    let head = store.head(feed)?;
    let mut since = Cursor(head.0.saturating_sub(window(top)));
    let mut out = Vec::new();
    // Each page moves `since` forward; stopping at the head read first bounds the pages by
    // the window even while writes go on.
    while since < head {
        let page = store.changes_since(feed, since, PAGE, None)?;
        for c in &page.changes {
            if c.entry.is_deleted() {
                continue;
            }
            if let Ok(item) = c.entry.content.content.decode::<NewsItem>() {
                out.push(item);
            }
        }
        if !page.more || page.next <= since {
            break;
        }
        since = page.next;
    }
    Ok(out)
}

/// The newest `top` of `items`, newest first.
pub(crate) fn newest(mut items: Vec<NewsItem>, top: usize) -> Vec<NewsItem> {
    items.sort_by_key(|n| std::cmp::Reverse(n.at));
    items.truncate(top);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::content::JsonContent;
    use mesh_core::model::{EntryDraft, NewsKind};
    use mesh_core::replica::{Actor, Replica};
    use mesh_core::store::MemoryStore;
    use mesh_core::time::Timestamp;

    fn item(n: i64) -> EntryDraft {
        let item = NewsItem {
            kind: NewsKind::EntryAdded,
            actor: "ann".parse().unwrap(),
            device: None,
            folder: None,
            feed: None,
            entry: None,
            summary: format!("item {n}"),
            at: Timestamp::from_unix(1_700_000_000 + n).unwrap(),
        };
        EntryDraft {
            title: item.summary.clone(),
            content: JsonContent::from_serialize(&item).unwrap(),
            media: None,
        }
    }

    /// A listing reads the feed's latest changes only, however many it holds: an item
    /// beyond them is not listed, even one whose time says it is the newest.
    #[test]
    fn a_listing_reads_only_the_latest_changes() {
        let mut r = Replica::new(MemoryStore::new("hub".parse().unwrap()));
        let feed = FeedKey::folder_news(&"f@ann".parse().unwrap());
        let actor = Actor::new("ann".parse().unwrap(), "d".parse().unwrap());
        let at = Timestamp::from_unix(1_700_000_000).unwrap();
        // The first item claims to be from far in the future.
        r.create(&feed, "n0".parse().unwrap(), item(1_000_000), &actor, at)
            .unwrap();
        for n in 1..2_000 {
            let id = format!("n{n}").parse().unwrap();
            r.create(&feed, id, item(n), &actor, at).unwrap();
        }
        let read = recent(r.store(), &feed, 10).unwrap();
        assert_eq!(read.len() as u64, window(10), "the window and no more");
        let top = newest(read, 10);
        assert_eq!(top.len(), 10);
        assert_eq!(top[0].summary, "item 1999", "newest first");
        assert!(top.iter().all(|n| n.summary != "item 1000000"));

        // A deleted item is not listed; a feed shorter than the window is read whole.
        let short = FeedKey::folder_news(&"g@ann".parse().unwrap());
        for n in 0..3 {
            let id = format!("n{n}").parse().unwrap();
            r.create(&short, id, item(n), &actor, at).unwrap();
        }
        r.delete(&short, &"n1".parse().unwrap(), &actor, at)
            .unwrap();
        let read = recent(r.store(), &short, 10).unwrap();
        let names: Vec<_> = newest(read, 10).into_iter().map(|n| n.summary).collect();
        assert_eq!(names, ["item 2", "item 0"]);
    }
}
