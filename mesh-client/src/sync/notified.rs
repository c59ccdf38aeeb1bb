//! Changes that arrived inside notifications, kept until the next session asks for them.
//!
//! A hub sends a small push's changes along with the notification of the feed it moved (see
//! `docs/protocol.md`, "Notifications"). They are what a pull of that feed after `since`
//! would answer, up to the notification's head; the session that follows answers its pull
//! with them instead of asking the remote, when its cursor stands at `since`. Anything else
//! (the cursor elsewhere, the stream reopened, too many kept) simply pulls: the pages only
//! save a round trip, they never decide what is merged or how far the cursor moves, and they
//! go through the same checks as a pulled page.

use std::collections::BTreeMap;

use mesh_core::model::{Entry, FeedKey};
use mesh_core::store::Cursor;
use mesh_core::sync::{Request, Response, MAX_PAGE};

use crate::transport::Notification;

/// The most pages kept (one per feed and cursor).
pub(crate) const MAX_PAGES: usize = 64;

/// The most bytes of entries kept over all pages (by [`Entry::wire_len_bound`]).
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// One page: the changes after the key's cursor up to `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Page {
    head: Cursor,
    entries: Vec<Entry>,
    bytes: usize,
}

/// The pages notifications carried, by feed and the cursor they follow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notified {
    pages: BTreeMap<(FeedKey, Cursor), Page>,
    bytes: usize,
}

impl Notified {
    /// Keeps the changes `n` carries, if any, are well formed and fit the bounds.
    pub fn add(&mut self, n: &Notification) {
        let Some(changes) = &n.changes else {
            return;
        };
        if changes.since >= n.head
            || changes.entries.is_empty()
            || changes.entries.len() > MAX_PAGE as usize
            || changes.entries.len() as u64 > n.head.0 - changes.since.0
        {
            return;
        }
        let bytes: usize = changes.entries.iter().map(Entry::wire_len_bound).sum();
        let key = (n.feed.clone(), changes.since);
        if self.pages.len() >= MAX_PAGES && !self.pages.contains_key(&key) {
            return;
        }
        let replaced = self.pages.get(&key).map_or(0, |p| p.bytes);
        if self.bytes - replaced + bytes > MAX_BYTES {
            return;
        }
        self.bytes = self.bytes - replaced + bytes;
        self.pages.insert(
            key,
            Page {
                head: n.head,
                entries: changes.entries.clone(),
                bytes,
            },
        );
    }

    /// Whether no page is kept.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Whether a page follows `since` on `feed`.
    pub fn has(&self, feed: &FeedKey, since: Cursor) -> bool {
        self.pages.contains_key(&(feed.clone(), since))
    }

    /// The answer to `request` from a kept page, if it is a pull from where one starts (the
    /// page is used up). `heads`: the remote heads announced; more follows when one lies
    /// past the page.
    pub fn answer(
        &mut self,
        request: &Request,
        heads: &BTreeMap<FeedKey, Cursor>,
    ) -> Option<Response> {
        let Request::Pull { feed, since, .. } = request else {
            return None;
        };
        if self.pages.is_empty() {
            return None;
        }
        let page = self.pages.remove(&(feed.clone(), *since))?;
        self.bytes -= page.bytes;
        let more = heads.get(feed).is_some_and(|h| *h > page.head);
        Some(Response::Changes {
            feed: feed.clone(),
            entries: page.entries,
            next: page.head,
            more,
        })
    }

    /// Drops every page.
    pub fn clear(&mut self) {
        *self = Notified::default();
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::feedsync::{create, Stamp};
    use mesh_core::id::ReplicaId;
    use mesh_core::model::EntryDraft;
    use mesh_core::time::Timestamp;

    use super::*;
    use crate::transport::NotifiedChanges;

    fn feed(n: usize) -> FeedKey {
        format!("folder:f{n}/notes").parse().unwrap()
    }

    fn entry(n: usize, bytes: usize) -> Entry {
        let when = Timestamp::from_unix(1_700_000_000).unwrap();
        let data = EntryDraft::new(
            format!("e{n}"),
            serde_json::json!({ "x": "y".repeat(bytes) }),
        )
        .into_new_data("ann".parse().unwrap(), when);
        create(
            format!("e{n}").parse().unwrap(),
            &Stamp::new("dev-a".parse().unwrap(), when),
            data,
        )
    }

    fn note(feed: FeedKey, since: u64, head: u64, entries: Vec<Entry>) -> Notification {
        Notification {
            feed,
            head: Cursor(head),
            changes: Some(NotifiedChanges {
                since: Cursor(since),
                entries,
            }),
        }
    }

    fn pull(feed: FeedKey, since: u64) -> Request {
        Request::Pull {
            from: "dev-b".parse::<ReplicaId>().unwrap(),
            feed,
            since: Cursor(since),
            limit: 100,
        }
    }

    #[test]
    fn a_page_answers_only_the_pull_from_its_cursor_and_only_once() {
        let mut n = Notified::default();
        n.add(&note(feed(1), 4, 6, vec![entry(1, 10), entry(2, 10)]));
        let heads = BTreeMap::from([(feed(1), Cursor(6))]);
        assert!(
            n.answer(&pull(feed(1), 3), &heads).is_none(),
            "another cursor"
        );
        assert!(
            n.answer(&pull(feed(2), 4), &heads).is_none(),
            "another feed"
        );
        assert!(n.has(&feed(1), Cursor(4)));
        let Some(Response::Changes {
            entries,
            next,
            more,
            ..
        }) = n.answer(&pull(feed(1), 4), &heads)
        else {
            panic!("the page answers its pull");
        };
        assert_eq!((entries.len(), next, more), (2, Cursor(6), false));
        assert!(n.answer(&pull(feed(1), 4), &heads).is_none(), "used up");
        assert_eq!(n, Notified::default(), "nothing left counted");
    }

    #[test]
    fn more_follows_when_a_later_head_was_announced() {
        let mut n = Notified::default();
        n.add(&note(feed(1), 4, 5, vec![entry(1, 10)]));
        let heads = BTreeMap::from([(feed(1), Cursor(9))]);
        let Some(Response::Changes { more, .. }) = n.answer(&pull(feed(1), 4), &heads) else {
            panic!("answered");
        };
        assert!(more, "the session pulls on from 5 up to 9");
    }

    #[test]
    fn malformed_pages_are_not_kept() {
        let mut n = Notified::default();
        // Not after its cursor, empty, more entries than changes, a page's worth too many.
        n.add(&note(feed(1), 6, 6, vec![entry(1, 10)]));
        n.add(&note(feed(2), 7, 6, vec![entry(1, 10)]));
        n.add(&note(feed(3), 5, 6, Vec::new()));
        n.add(&note(feed(4), 5, 6, vec![entry(1, 10), entry(2, 10)]));
        let many = MAX_PAGE as usize + 1;
        n.add(&note(
            feed(5),
            0,
            many as u64 + 10,
            (0..many).map(|i| entry(i, 1)).collect(),
        ));
        n.add(&Notification::new(feed(6), Cursor(3)));
        assert_eq!(n, Notified::default());
    }

    #[test]
    fn pages_are_bounded_in_number_and_bytes() {
        let mut n = Notified::default();
        for i in 0..MAX_PAGES + 10 {
            n.add(&note(feed(i), 0, 1, vec![entry(i, 10)]));
        }
        assert_eq!(n.pages.len(), MAX_PAGES);
        assert!(n.has(&feed(0), Cursor(0)));
        assert!(
            !n.has(&feed(MAX_PAGES), Cursor(0)),
            "past the bound: pulled instead"
        );

        let mut n = Notified::default();
        let big = MAX_BYTES / 4;
        for i in 0..8 {
            n.add(&note(feed(i), 0, 1, vec![entry(i, big)]));
        }
        assert!(n.bytes <= MAX_BYTES, "{} bytes kept", n.bytes);
        assert!(n.pages.len() < 8 && !n.pages.is_empty());
        // The same page again replaces itself rather than counting twice.
        let before = n.bytes;
        n.add(&note(feed(0), 0, 1, vec![entry(0, big)]));
        assert_eq!(n.bytes, before);
    }
}
