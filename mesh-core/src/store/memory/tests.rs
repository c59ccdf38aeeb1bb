//! The packed memory store against a plain model (the store's former layout: a map of whole
//! entries and a `BTreeMap` change log), over random transactions that create, replace,
//! commit and roll back, with enough replacements to make the change log compact.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::MemoryStore;
use crate::content::JsonContent;
use crate::feedsync::{HistoryItem, Item, SyncMeta};
use crate::id::{EntryId, ReplicaId};
use crate::model::{Entry, EntryData, FeedKey};
use crate::store::{scan_cap, Change, ChangePage, Cursor, Store, StoreTxn};
use crate::time::Timestamp;

/// One put: feed (0..2), id (0..12), author (0..2), device (0..3), origin (none or 0..2).
#[derive(Debug, Clone)]
struct Put {
    feed: u8,
    id: u8,
    author: u8,
    device: u8,
    origin: Option<u8>,
    deleted: bool,
}

fn put() -> impl Strategy<Value = Put> {
    (
        0u8..2,
        0u8..12,
        0u8..2,
        0u8..3,
        proptest::option::of(0u8..2),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(feed, id, author, device, origin, deleted)| Put {
            feed,
            id,
            author,
            device,
            origin,
            deleted,
        })
}

fn feed(n: u8) -> FeedKey {
    format!("folder:f{n}/todos").parse().unwrap()
}

fn origin(n: u8) -> ReplicaId {
    format!("peer-{n}").parse().unwrap()
}

fn entry(p: &Put, n: u64) -> Entry {
    let at = Timestamp::from_unix(n as i64).unwrap();
    Item {
        sync: SyncMeta {
            id: format!("e{}", p.id).parse().unwrap(),
            updates: n as u32,
            deleted: p.deleted,
            noconflicts: false,
            history: vec![HistoryItem::new(
                n as u32,
                Some(at),
                Some(format!("dev-{}", p.device).parse().unwrap()),
            )],
        },
        content: EntryData {
            title: format!("version {n}"),
            content: JsonContent::from(&serde_json::json!({ "n": n })),
            media: None,
            author: format!("user-{}", p.author).parse().unwrap(),
            published: Timestamp::EPOCH,
            updated: at,
        },
        conflicts: Vec::new(),
    }
}

/// A model feed: id → (position, origin, entry), the log position → id, and the
/// replica-wide number of the latest change.
type ModelFeed = (
    HashMap<EntryId, (u64, Option<ReplicaId>, Entry)>,
    BTreeMap<u64, EntryId>,
    u64,
);

/// The model: the store's former layout.
#[derive(Default, Clone)]
struct Model {
    /// The replica-wide number of the latest change.
    seq: u64,
    feeds: BTreeMap<u8, ModelFeed>,
}

impl Model {
    /// Returns the change's position in its feed.
    fn put(&mut self, p: &Put, e: Entry) -> u64 {
        self.seq += 1;
        let (entries, log, last) = self.feeds.entry(p.feed).or_default();
        let pos = log.keys().last().copied().unwrap_or(0) + 1;
        *last = self.seq;
        let id = e.sync.id.clone();
        if let Some((old, _, _)) = entries.insert(id.clone(), (pos, p.origin.map(origin), e)) {
            log.remove(&old);
        }
        log.insert(pos, id);
        pos
    }

    fn page(&self, f: u8, since: u64, limit: usize, skip: Option<&ReplicaId>) -> ChangePage {
        let mut page = ChangePage {
            changes: Vec::new(),
            next: Cursor(since),
            more: false,
        };
        let Some((entries, log, _)) = self.feeds.get(&f) else {
            return page;
        };
        for (scanned, (&seq, id)) in log.range(since + 1..).enumerate() {
            if page.changes.len() >= limit || scanned >= scan_cap(limit) {
                page.more = true;
                break;
            }
            let (_, o, e) = &entries[id];
            page.next = Cursor(seq);
            if skip.is_some() && o.as_ref() == skip {
                continue;
            }
            page.changes.push(Change {
                seq: Cursor(seq),
                entry: e.clone(),
            });
        }
        page
    }
}

fn check(store: &MemoryStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.len(),
        model.feeds.values().map(|f| f.0.len()).sum::<usize>()
    );
    prop_assert_eq!(store.feeds().unwrap().len(), model.feeds.len());
    let mut writers = HashSet::new();
    for f in 0..2u8 {
        let key = feed(f);
        let head = model.feeds.get(&f).and_then(|m| m.1.keys().last().copied());
        prop_assert_eq!(store.head(&key).unwrap(), Cursor(head.unwrap_or(0)));
        prop_assert_eq!(
            store.feed_moved(&key).unwrap().map(|m| (m.head.0, m.seq)),
            model.feeds.get(&f).map(|m| (head.unwrap_or(0), m.2))
        );
        for id in 0..12 {
            let id: EntryId = format!("e{id}").parse().unwrap();
            let want = model.feeds.get(&f).and_then(|m| m.0.get(&id));
            let got = store.get(&key, &id).unwrap();
            prop_assert_eq!(got.as_ref(), want.map(|w| &w.2));
            if let Some((_, o, e)) = want {
                writers.insert((
                    e.content.author.clone(),
                    e.sync.history[0].by.clone(),
                    o.clone(),
                ));
            }
        }
        let head = head.unwrap_or(0);
        for since in [0, head / 3, head / 2, head.saturating_sub(2), head] {
            for limit in [1, 3, 100] {
                for skip in [None, Some(origin(0))] {
                    prop_assert_eq!(
                        store
                            .changes_since(&key, Cursor(since), limit, skip.as_ref())
                            .unwrap(),
                        model.page(f, since, limit, skip.as_ref())
                    );
                }
            }
        }
        let mut ids: Vec<EntryId> = model
            .feeds
            .get(&f)
            .map(|m| m.0.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        let listed: Vec<EntryId> = store
            .list(&key, ids.get(2), 4)
            .unwrap()
            .into_iter()
            .map(|e| e.sync.id)
            .collect();
        let after = ids.get(2);
        let want: Vec<EntryId> = ids
            .iter()
            .filter(|i| after.is_none_or(|a| *i > a))
            .take(4)
            .cloned()
            .collect();
        prop_assert_eq!(listed, want);
    }
    // No writer outlives the last entry that names it.
    prop_assert_eq!(store.whos.len(), writers.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Transactions of puts, each committed or rolled back (sometimes reading in between),
    /// leave the store answering every read as the model does.
    #[test]
    fn packed_store_matches_the_model(
        txns in proptest::collection::vec((proptest::collection::vec(put(), 1..40), any::<bool>()), 1..25),
    ) {
        let mut store = MemoryStore::new("me".parse().unwrap());
        let mut model = Model::default();
        for (puts, commit) in txns {
            let mut next = model.clone();
            let mut tx = store.begin().unwrap();
            for p in &puts {
                let e = entry(p, next.seq + 1);
                let id = e.sync.id.clone();
                let pos = tx.put(&feed(p.feed), e.clone(), p.origin.map(origin).as_ref()).unwrap();
                prop_assert_eq!(pos, Cursor(next.put(p, e)));
                // The transaction reads its own write (through its reused read buffer).
                let read = tx.get(&feed(p.feed), &id).unwrap().map(|c| c.into_owned());
                prop_assert_eq!(read.as_ref(), Some(&next.feeds[&p.feed].0[&id].2));
            }
            if commit {
                tx.commit().unwrap();
                model = next;
                // After a commit, no chunk of a change log is more than half dead.
                prop_assert!(store.feeds.values().all(|f| f.log.is_compact()));
            } else {
                drop(tx);
            }
            check(&store, &model)?;
        }
    }
}

#[test]
fn replacements_compact_the_log_on_commit() {
    let mut store = MemoryStore::new("me".parse().unwrap());
    let p = Put {
        feed: 0,
        id: 0,
        author: 0,
        device: 0,
        origin: None,
        deleted: false,
    };
    let mut model = Model::default();
    for round in 0..3u8 {
        let mut tx = store.begin().unwrap();
        for id in 0..12 {
            for _ in 0..20 {
                let p = Put {
                    id,
                    author: round % 2,
                    ..p.clone()
                };
                let e = entry(&p, model.seq + 1);
                tx.put(&feed(0), e.clone(), None).unwrap();
                model.put(&p, e);
            }
        }
        tx.commit().unwrap();
        let fs = &store.feeds[&feed(0)];
        assert_eq!(
            fs.log.shape(),
            (0, 1),
            "the 228 or 240 dead records of the chunk are dropped on commit"
        );
        check(&store, &model).unwrap();
    }
}

#[test]
fn purging_a_feed_releases_its_writers() {
    let mut store = MemoryStore::new("purge".parse().unwrap());
    let mut tx = store.begin().unwrap();
    for (feed_n, author) in [(0u8, 0u8), (0, 1), (1, 1)] {
        let p = Put {
            feed: feed_n,
            id: author,
            author,
            device: author,
            origin: Some(author),
            deleted: false,
        };
        tx.put(&feed(feed_n), entry(&p, 1), p.origin.map(origin).as_ref())
            .unwrap();
    }
    tx.commit().unwrap();
    assert_eq!(store.whos.len(), 2);
    assert_eq!(store.purge_feed(&feed(0)).unwrap(), 2);
    // Only the writer of the other feed's entry is left.
    assert_eq!(store.whos.len(), 1);
    assert_eq!(store.purge_feed(&feed(1)).unwrap(), 1);
    assert_eq!(store.whos.len(), 0);
    assert!(store.is_empty());
}
