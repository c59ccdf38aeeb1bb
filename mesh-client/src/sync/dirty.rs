//! What the engine syncs next: every feed, or only the feeds that changed.
//!
//! A notification names the feed that moved, and a local write the feed it wrote: a sync
//! for them asks the remote about those feeds only (`feeds` with `only`), so that the
//! incremental path costs the same whether the user holds ten feeds or ten thousand. Anything
//! that may have missed changes (start, a reconnected stream, a lagging subscriber, an error,
//! the poll interval, `sync_now`) syncs every feed.

use std::collections::BTreeSet;

use mesh_core::model::FeedKey;
use mesh_core::sync::FeedFilter;

/// Past this many changed feeds, the next sync looks at every feed.
pub(crate) const MAX_TARGETED: usize = 64;

/// The feeds waiting to be synced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Dirty {
    all: bool,
    feeds: BTreeSet<FeedKey>,
}

impl Dirty {
    /// Every feed must be looked at.
    pub fn everything(&mut self) {
        self.all = true;
        self.feeds.clear();
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
    pub fn take(&mut self) -> FeedFilter {
        let filter = if self.all {
            FeedFilter::All
        } else {
            FeedFilter::Only(std::mem::take(&mut self.feeds))
        };
        *self = Dirty::default();
        filter
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
            d.take(),
            FeedFilter::Only([feed(1), feed(2)].into_iter().collect())
        );
        assert!(!d.is_set());
        for n in 0..=MAX_TARGETED {
            d.feed(feed(n));
        }
        assert_eq!(d.take(), FeedFilter::All);
        d.everything();
        d.feed(feed(1));
        assert_eq!(d.take(), FeedFilter::All, "everything stays everything");
    }
}
