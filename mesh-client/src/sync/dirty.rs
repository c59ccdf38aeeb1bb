//! What the engine syncs next: every feed, or only the feeds that changed.
//!
//! A notification names the feed that moved, and a local write the feed it wrote: a sync
//! for them asks the remote about those feeds only (`feeds` with `only`), so that the
//! incremental path costs the same whether the user holds ten feeds or ten thousand. Anything
//! that may have missed changes (start, a reconnected stream, a lagging subscriber, an error,
//! the poll interval, `sync_now`) syncs every feed.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::model::FeedKey;
use mesh_core::store::Cursor;
use mesh_core::sync::FeedFilter;

use crate::sync::notified::Notified;
use crate::transport::Notification;

/// Past this many changed feeds, the next sync looks at every feed.
pub(crate) const MAX_TARGETED: usize = 64;

/// The feeds waiting to be synced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Dirty {
    all: bool,
    feeds: BTreeSet<FeedKey>,
    /// The heads the remote announced for some of `feeds` (the latest of each).
    heads: BTreeMap<FeedKey, Cursor>,
    /// The changes notifications carried for some of `feeds`.
    pages: Notified,
}

/// What the next sync covers: the feeds, the remote heads announced for them, and the
/// changes notifications carried.
pub(crate) type Next = (FeedFilter, BTreeMap<FeedKey, Cursor>, Notified);

impl Dirty {
    /// Every feed must be looked at.
    pub fn everything(&mut self) {
        self.all = true;
        self.feeds.clear();
        self.heads.clear();
        self.pages.clear();
    }

    /// The remote announced `n.head` as `n.feed`'s new head, maybe with its changes.
    pub fn announced(&mut self, n: &Notification) {
        self.feed(n.feed.clone());
        if !self.all {
            let h = self.heads.entry(n.feed.clone()).or_insert(n.head);
            *h = (*h).max(n.head);
            self.pages.add(n);
        }
    }

    /// Forgets the changes notifications carried (their stream ended: the remote may have
    /// restarted as another replica, whose cursors they are not).
    pub fn forget_pages(&mut self) {
        self.pages.clear();
    }

    /// `feed` changed (here or on the remote).
    pub fn feed(&mut self, feed: FeedKey) {
        if self.all {
            return;
        }
        self.feeds.insert(feed);
        if self.feeds.len() > MAX_TARGETED {
            self.everything();
        }
    }

    /// Whether anything waits.
    pub fn is_set(&self) -> bool {
        self.all || !self.feeds.is_empty()
    }

    /// What the next sync covers, leaving nothing waiting.
    pub fn take(&mut self) -> Next {
        let filter = if self.all {
            FeedFilter::All
        } else {
            FeedFilter::Only(std::mem::take(&mut self.feeds))
        };
        let heads = std::mem::take(&mut self.heads);
        let pages = std::mem::take(&mut self.pages);
        *self = Dirty::default();
        (filter, heads, pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(n: usize) -> FeedKey {
        format!("folder:f{n}/notes").parse().unwrap()
    }

    #[test]
    fn changed_feeds_are_targeted_until_there_are_too_many() {
        let mut d = Dirty::default();
        assert!(!d.is_set());
        d.feed(feed(1));
        d.feed(feed(1));
        d.feed(feed(2));
        assert_eq!(
            d.take().0,
            FeedFilter::Only([feed(1), feed(2)].into_iter().collect())
        );
        assert!(!d.is_set());
        for n in 0..=MAX_TARGETED {
            d.feed(feed(n));
        }
        assert_eq!(d.take().0, FeedFilter::All);
        d.everything();
        d.feed(feed(1));
        assert_eq!(d.take().0, FeedFilter::All, "everything stays everything");
    }

    #[test]
    fn announced_heads_are_kept_with_their_feeds() {
        let mut d = Dirty::default();
        d.announced(&Notification::new(feed(1), Cursor(7)));
        d.announced(&Notification::new(feed(1), Cursor(5)));
        d.feed(feed(2));
        let (filter, heads, _) = d.take();
        assert_eq!(
            filter,
            FeedFilter::Only([feed(1), feed(2)].into_iter().collect())
        );
        assert_eq!(heads, [(feed(1), Cursor(7))].into_iter().collect());
        d.announced(&Notification::new(feed(1), Cursor(9)));
        d.everything();
        assert_eq!(
            d.take(),
            (FeedFilter::All, BTreeMap::new(), Notified::default())
        );
    }
}
