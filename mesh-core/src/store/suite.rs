//! A conformance suite every [`Store`] implementation must pass.
//!
//! Each function takes a *factory* that makes a fresh, empty store for a replica id, runs one
//! area of the contract against stores it makes, and panics with a message naming the broken
//! rule. [`run_all`] runs every check. An implementation's test calls it, for example:
//!
//! ```
//! use mesh_core::store::{suite, MemoryStore};
//! suite::run_all(MemoryStore::new);
//! ```
//!
//! Besides the documentation of [`Store`] and [`StoreTxn`], the suite pins down these rules,
//! which every store obeys so that replicas behave the same whatever holds them:
//!
//! - **Positions.** Each feed counts its own: the first change of a feed takes `Cursor(1)`,
//!   and every [`StoreTxn::put`] takes the position after the feed's head, whatever other
//!   feeds do. Positions taken inside a transaction that is rolled back (dropped without
//!   commit) are given out again, so a feed's committed positions are `1, 2, 3…` without gaps
//!   and a committed position is never given out twice, not even after
//!   [`Store::purge_feed`].
//! - **Replica-wide numbers.** Every put also takes the store's next replica-wide number
//!   ([`FeedMoved::seq`]), counted over all feeds by the same rules: `1, 2, 3…`, rolled-back
//!   numbers given out again.
//! - **Change log.** Each entry appears in its feed's log exactly once, at the number of its
//!   latest put; a put moves it to the end. A feed's head is its last log position.
//! - **Pages.** [`Store::changes_since`] returns at most `limit` changes, in order, all after
//!   `since`; `next` is the last log position examined (`since` when none was), and `more` is
//!   true exactly when the log holds a record after `next`. Records whose latest write came
//!   from `skip_origin` are not returned but still advance `next`, and a page that returns
//!   nothing while `more` is true still moves `next` forward, so paging always ends.
//! - **Order.** [`Store::feeds`] is sorted by [`FeedKey`]; [`Store::list`] by [`EntryId`]
//!   (byte order of the id's UTF-8 text).
//! - **Sync states** round-trip every field, including cursors up to `u64::MAX`.
//!
//! The suite is pure like the rest of the core: no files, clock or randomness.

use std::fmt::Debug;

use crate::content::JsonContent;
use crate::feedsync::{self, Stamp};
use crate::id::{DeviceId, EntryId, FolderId, RemoteId, ReplicaId, UserId};
use crate::model::{Entry, EntryData, FeedKey, MediaRef, Scope};
use crate::store::{Change, ChangePage, Cursor, FeedHead, FeedMoved, Store, StoreTxn, SyncState};
use crate::time::Timestamp;

/// Runs every check of the suite, each against fresh stores made by `factory`.
pub fn run_all<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    empty_store(&mut factory);
    replica_id(&mut factory);
    put_get_round_trip(&mut factory);
    sequence_numbers(&mut factory);
    changes_since_paging(&mut factory);
    pages_stop_at_their_byte_bound(&mut factory);
    skip_origin(&mut factory);
    skipped_changes_still_progress(&mut factory);
    heads_and_feeds(&mut factory);
    list_order(&mut factory);
    sync_states(&mut factory);
    rollback_on_drop(&mut factory);
    txn_reads_own_writes(&mut factory);
    prefetch_is_only_a_hint(&mut factory);
    commit_makes_writes_visible(&mut factory);
    purge_feed(&mut factory);
    scopes_and_member_records(&mut factory);
    last_moved_bounds_every_feed(&mut factory);
}

// ---- helpers ----------------------------------------------------------------------------------

fn ok<T, E: Debug>(r: std::result::Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store suite: {what} failed: {e:?}"),
    }
}

fn parsed<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: Debug,
{
    match s.parse() {
        Ok(v) => v,
        Err(e) => panic!("store suite: bad fixture id {s:?}: {e:?}"),
    }
}

fn replica(s: &str) -> ReplicaId {
    parsed(s)
}

fn eid(s: &str) -> EntryId {
    parsed(s)
}

fn remote(s: &str) -> RemoteId {
    parsed(s)
}

fn feed(s: &str) -> FeedKey {
    parsed(s)
}

fn t(secs: i64) -> Timestamp {
    ok(
        Timestamp::from_unix(1_700_000_000 + secs),
        "fixture timestamp",
    )
}

fn stamp(device: &str, secs: i64) -> Stamp {
    Stamp::new(parsed::<DeviceId>(device), t(secs))
}

fn data(title: &str, content: serde_json::Value) -> EntryData {
    EntryData {
        title: title.to_owned(),
        content: JsonContent::from(&content),
        media: None,
        author: parsed::<UserId>("ann"),
        published: t(0),
        updated: t(0),
    }
}

/// A fresh entry with one version.
fn entry(id: &str, title: &str) -> Entry {
    feedsync::create(
        eid(id),
        &stamp("dev-a", 0),
        data(title, serde_json::json!({ "title": title })),
    )
}

/// A new version of `e`.
fn edited(e: &Entry, title: &str, secs: i64) -> Entry {
    ok(
        feedsync::update(
            e,
            &stamp("dev-a", secs),
            data(title, serde_json::json!({ "title": title, "edited": secs })),
            false,
        ),
        "fixture update",
    )
}

/// An entry holding a conflict, both versions with media.
fn conflicted(id: &str) -> Entry {
    let mut d = data("base", serde_json::json!({"n": 0}));
    d.media = Some(MediaRef {
        hash: "blake3:00ff".into(),
        content_type: "image/png".into(),
        length: 1234,
    });
    let base = feedsync::create(eid(id), &stamp("dev-a", 0), d.clone());
    let mut da = d.clone();
    da.title = "on A".into();
    let mut db = d;
    db.title = "on B".into();
    db.media = Some(MediaRef {
        hash: "blake3:ff00".into(),
        content_type: "application/pdf".into(),
        length: u64::MAX,
    });
    let on_a = ok(
        feedsync::update(&base, &stamp("dev-a", 5), da, false),
        "fixture update",
    );
    let on_b = ok(
        feedsync::update(&base, &stamp("dev-b", 6), db, false),
        "fixture update",
    );
    let merged = ok(feedsync::merge(Some(&on_a), on_b), "fixture merge");
    let item = merged
        .item
        .unwrap_or_else(|| panic!("store suite: fixture merge produced no item"));
    assert!(
        item.has_conflicts(),
        "store suite: fixture entry should hold a conflict"
    );
    item
}

/// Puts `entries` into `feed` in one committed transaction; returns the numbers they took.
fn put_all<S: Store>(
    store: &mut S,
    feed: &FeedKey,
    entries: &[(Entry, Option<&ReplicaId>)],
) -> Vec<Cursor> {
    let mut tx = ok(store.begin(), "begin");
    let seqs = entries
        .iter()
        .map(|(e, origin)| ok(tx.put(feed, e.clone(), *origin), "put"))
        .collect();
    ok(tx.commit(), "commit");
    seqs
}

fn put_one<S: Store>(store: &mut S, feed: &FeedKey, e: &Entry) -> Cursor {
    put_all(store, feed, &[(e.clone(), None)])[0]
}

fn changes<S: Store>(
    store: &S,
    feed: &FeedKey,
    since: u64,
    limit: usize,
    skip: Option<&ReplicaId>,
) -> ChangePage {
    let page = ok(
        store.changes_since(feed, Cursor(since), limit, skip),
        "changes_since",
    );
    check_page_shape(&page, since, limit);
    check_encoded_page(store, feed, since, limit, skip, &page);
    page
}

/// `encoded_changes_since` answers what `changes_since` does, each entry as its JSON: the
/// same changes, except that a page cut by bytes may hold more (JSON is never longer than
/// the bound `changes_since` counts), and never past the bound by its JSON.
fn check_encoded_page<S: Store>(
    store: &S,
    feed: &FeedKey,
    since: u64,
    limit: usize,
    skip: Option<&ReplicaId>,
    page: &ChangePage,
) {
    let encoded = ok(
        store.encoded_changes_since(feed, Cursor(since), limit, skip),
        "encoded_changes_since",
    );
    assert!(
        encoded.changes.len() <= limit && encoded.next >= Cursor(since),
        "encoded_changes_since(since {since}, limit {limit}): {} changes, next {}",
        encoded.changes.len(),
        encoded.next
    );
    let n = page.changes.len();
    assert!(
        encoded.changes.len() >= n,
        "an encoded page holds fewer changes ({}) than the decoded one ({n})",
        encoded.changes.len()
    );
    for (i, e) in encoded.changes.iter().enumerate() {
        let entry: Entry = ok(
            serde_json::from_str(e.entry.get()),
            "decoding an encoded entry",
        );
        if let Some(c) = page.changes.get(i) {
            assert_eq!(e.seq, c.seq, "encoded change {i} at another position");
            assert_eq!(entry, c.entry, "encoded change {i} holds another entry");
            assert_eq!(
                e.entry.get(),
                ok(serde_json::to_string(&c.entry), "encoding an entry"),
                "an entry's stored JSON is its wire form"
            );
        }
    }
    if encoded.changes.len() == n {
        assert_eq!(
            (encoded.next, encoded.more),
            (page.next, page.more),
            "an encoded page of the same changes ends where the decoded one does"
        );
    } else {
        assert!(page.more, "a decoded page cut short says more");
    }
    let json: Vec<usize> = encoded
        .changes
        .iter()
        .map(|c| c.entry.get().len())
        .collect();
    let before_last: usize = json.iter().rev().skip(1).sum();
    assert!(
        before_last <= crate::sync::MAX_PAGE_BYTES,
        "an encoded page read on after its JSON passed the bound: {json:?}"
    );
}

/// The rules every page obeys whatever the log holds.
fn check_page_shape(page: &ChangePage, since: u64, limit: usize) {
    assert!(
        page.changes.len() <= limit,
        "changes_since(since {since}, limit {limit}) returned {} changes",
        page.changes.len()
    );
    assert!(
        page.next >= Cursor(since),
        "changes_since(since {since}) returned next {} before since",
        page.next
    );
    let mut prev = Cursor(since);
    for c in &page.changes {
        assert!(
            c.seq > prev,
            "changes_since(since {since}) returned seq {} after {prev}: not increasing or not after since",
            c.seq
        );
        prev = c.seq;
    }
    assert!(
        page.next >= prev,
        "changes_since(since {since}) returned next {} before its last change {prev}",
        page.next
    );
}

fn seqs(page: &ChangePage) -> Vec<u64> {
    page.changes.iter().map(|c| c.seq.0).collect()
}

fn ids(page: &ChangePage) -> Vec<String> {
    page.changes
        .iter()
        .map(|c| c.entry.sync.id.to_string())
        .collect()
}

fn list_ids<S: Store>(store: &S, feed: &FeedKey, after: Option<&str>, limit: usize) -> Vec<String> {
    let after = after.map(eid);
    ok(store.list(feed, after.as_ref(), limit), "list")
        .iter()
        .map(|e| e.sync.id.to_string())
        .collect()
}

fn get<S: Store>(store: &S, feed: &FeedKey, id: &str) -> Option<Entry> {
    ok(store.get(feed, &eid(id)), "get")
}

fn txn_get<T: StoreTxn>(tx: &mut T, feed: &FeedKey, id: &str) -> Option<Entry> {
    ok(tx.get(feed, &eid(id)), "txn get").map(|c| c.into_owned())
}

// ---- checks -----------------------------------------------------------------------------------

/// A new store holds nothing: no feeds, zero heads, empty pages and lists, default sync states.
pub fn empty_store<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let store = factory(replica("suite-empty"));
    let f = feed("folder:f1/todos");
    assert_eq!(
        ok(store.feeds(), "feeds"),
        Vec::<FeedHead>::new(),
        "a new store lists no feeds"
    );
    assert_eq!(
        ok(store.head(&f), "head"),
        Cursor::ZERO,
        "an unknown feed's head is zero"
    );
    assert_eq!(get(&store, &f, "x"), None, "a new store holds no entry");
    for since in [0, 5, u64::MAX] {
        let page = changes(&store, &f, since, 10, None);
        assert_eq!(
            page,
            ChangePage {
                changes: Vec::new(),
                next: Cursor(since),
                more: false
            },
            "an unknown feed's page from {since} is empty, keeps next at since and has no more"
        );
    }
    assert!(
        list_ids(&store, &f, None, 10).is_empty(),
        "a new store lists no entries"
    );
    assert!(
        list_ids(&store, &f, Some("a"), 10).is_empty(),
        "a new store lists no entries after an id"
    );
    assert_eq!(
        ok(store.sync_state(&remote("hub"), &f), "sync_state"),
        SyncState::default(),
        "a never-synced feed has the default sync state"
    );
}

/// `replica_id` is the id the store was made for.
pub fn replica_id<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    for name in ["device-a", "hub", "réplica ☃ 42"] {
        let store = factory(replica(name));
        assert_eq!(
            store.replica_id(),
            replica(name),
            "replica_id() is the id the store was made for"
        );
    }
}

/// Entries come back exactly as put: conflicts, media, tombstones, unusual ids and content.
pub fn put_get_round_trip<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-round-trip"));
    let f = feed("folder:f1/todos");
    let other = replica("peer");

    let plain = entry("plain", "Buy milk");
    let conflict = conflicted("conflict");
    let tomb = ok(
        feedsync::delete(&entry("tomb", "gone"), &stamp("dev-b", 9)),
        "fixture delete",
    );
    let mut odd = feedsync::create(
        eid("ünï cødé 日本 / ?#&\" '"),
        &ok(Stamp::partial(None, Some(t(3))), "fixture stamp"),
        data(
            "Ünïcode — \"quotes\" \\ and\nnew lines",
            serde_json::json!({
                "nested": {"list": [1, 2.5, -3, null, true, "x"], "empty": {}},
                "big": u64::MAX,
                "text": "\u{0}\u{1f}é"
            }),
        ),
    );
    odd.sync.noconflicts = true;
    let large = feedsync::create(
        eid("large"),
        &stamp("dev-a", 1),
        data("large", serde_json::json!({ "blob": "x".repeat(200_000) })),
    );
    let all = [plain, conflict, tomb, odd, large];

    let mut tx = ok(store.begin(), "begin");
    for (i, e) in all.iter().enumerate() {
        let origin = (i % 2 == 0).then_some(&other);
        ok(tx.put(&f, e.clone(), origin), "put");
        assert_eq!(
            txn_get(&mut tx, &f, e.sync.id.as_str()).as_ref(),
            Some(e),
            "a transaction reads back exactly the entry it put ({})",
            e.sync.id
        );
    }
    ok(tx.commit(), "commit");

    for e in &all {
        assert_eq!(
            get(&store, &f, e.sync.id.as_str()).as_ref(),
            Some(e),
            "get returns exactly the entry that was put ({})",
            e.sync.id
        );
    }
    let page = changes(&store, &f, 0, 100, None);
    let logged: Vec<Entry> = page.changes.into_iter().map(|c| c.entry).collect();
    assert_eq!(
        logged, all,
        "changes_since returns exactly the entries that were put, in put order"
    );
    let mut sorted = all.to_vec();
    sorted.sort_by(|a, b| a.sync.id.cmp(&b.sync.id));
    assert_eq!(
        ok(store.list(&f, None, 100), "list"),
        sorted,
        "list returns exactly the entries that were put, in id order"
    );
    assert_eq!(
        get(&store, &feed("folder:f2/todos"), "plain"),
        None,
        "an entry belongs to the feed it was put in"
    );
}

/// Positions start at 1 and increase by one per put in each feed; replica-wide numbers
/// increase by one per put across all feeds; a put moves the entry to the end of its feed's
/// log.
pub fn sequence_numbers<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-seq"));
    let a = feed("folder:f1/todos");
    let b = feed("mesh:ann/devices");
    let e1 = entry("e1", "one");
    let e2 = entry("e2", "two");
    let e3 = entry("e3", "three");

    assert_eq!(
        put_one(&mut store, &a, &e1),
        Cursor(1),
        "the first put takes 1"
    );
    assert_eq!(
        put_one(&mut store, &b, &e2),
        Cursor(1),
        "each feed counts its own positions"
    );
    let batch = put_all(
        &mut store,
        &a,
        &[(e3.clone(), None), (entry("e4", "four"), None)],
    );
    assert_eq!(
        batch,
        vec![Cursor(2), Cursor(3)],
        "each put of a transaction takes the next position"
    );
    assert_eq!(ok(store.head(&a), "head"), Cursor(3));
    assert_eq!(ok(store.head(&b), "head"), Cursor(1));

    let e1b = edited(&e1, "one, edited", 10);
    assert_eq!(
        put_one(&mut store, &a, &e1b),
        Cursor(4),
        "replacing an entry takes the next position"
    );
    let page = changes(&store, &a, 0, 100, None);
    assert_eq!(
        (seqs(&page), ids(&page)),
        (vec![2, 3, 4], vec!["e3".into(), "e4".into(), "e1".into()]),
        "a replaced entry appears once, at the end of the log"
    );
    assert_eq!(
        page.changes[2].entry, e1b,
        "the log holds the latest version"
    );
    assert_eq!(ok(store.head(&a), "head"), Cursor(4));

    // Putting the same entry twice in one transaction leaves one record, at the later position.
    let mut tx = ok(store.begin(), "begin");
    let s1 = ok(tx.put(&b, e2.clone(), None), "put");
    let s2 = ok(tx.put(&b, e2.clone(), None), "put");
    ok(tx.commit(), "commit");
    assert_eq!((s1, s2), (Cursor(2), Cursor(3)));
    let page = changes(&store, &b, 0, 100, None);
    assert_eq!(
        seqs(&page),
        vec![3],
        "an entry put twice in one transaction appears once, at the later position"
    );
    assert_eq!(
        put_one(&mut store, &a, &e3),
        Cursor(5),
        "positions keep increasing"
    );

    // Eight puts in all: a's latest was the eighth, b's the seventh.
    let moved = |head: u64, seq: u64, feed: &FeedKey| FeedMoved {
        feed: feed.clone(),
        head: Cursor(head),
        seq,
    };
    assert_eq!(
        ok(store.feed_moved(&a), "feed_moved"),
        Some(moved(5, 8, &a)),
        "every put takes the next replica-wide number, across feeds"
    );
    assert_eq!(
        ok(store.feed_moved(&b), "feed_moved"),
        Some(moved(3, 7, &b))
    );
    assert_eq!(
        ok(store.feed_moved(&feed("folder:f9/todos")), "feed_moved"),
        None,
        "an unknown feed has not moved"
    );
    let mut all = ok(store.moved_feeds(), "moved_feeds");
    all.sort_by_key(|m| m.seq);
    assert_eq!(
        all,
        vec![moved(3, 7, &b), moved(5, 8, &a)],
        "moved_feeds lists every feed with its head and latest replica-wide number"
    );
}

/// `changes_since` pages: `limit`, `next`, `more`, and positions at or past the head.
pub fn changes_since_paging<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-paging"));
    let a = feed("folder:f1/todos");
    let b = feed("folder:f1/notes");
    // Ten entries in `a` interleaved with five in `b`: a's log is 1..=10, b's 1..=5.
    let mut expected = Vec::new();
    for i in 0..15 {
        if i % 3 == 2 {
            put_one(&mut store, &b, &entry(&format!("b{i}"), "b"));
        } else {
            let s = put_one(&mut store, &a, &entry(&format!("a{i:02}"), "a"));
            expected.push(s.0);
        }
    }
    assert_eq!(
        expected,
        (1..=10).collect::<Vec<_>>(),
        "writes to another feed take no position of this one"
    );

    let mut since = 0;
    let mut got = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = changes(&store, &a, since, 3, None);
        got.extend(seqs(&page));
        pages.push((page.changes.len(), page.next.0, page.more));
        since = page.next.0;
        if !page.more {
            break;
        }
        assert!(pages.len() < 10, "paging with limit 3 does not end");
    }
    assert_eq!(got, expected, "paging visits the feed's log in order, once");
    assert_eq!(
        pages,
        vec![(3, 3, true), (3, 6, true), (3, 9, true), (1, 10, false)],
        "pages of 3: next is the last change returned, more until the log is exhausted"
    );
    let last = changes(&store, &a, 10, 3, None);
    assert_eq!(
        (last.changes.len(), last.next, last.more),
        (0, Cursor(10), false),
        "a page from the head is empty"
    );

    let page = changes(&store, &a, 5, 4, None);
    assert_eq!(
        (seqs(&page), page.next, page.more),
        (vec![6, 7, 8, 9], Cursor(9), true),
        "a page starts after since"
    );
    let page = changes(&store, &a, 3, 100, None);
    assert_eq!(
        (seqs(&page), page.next, page.more),
        (vec![4, 5, 6, 7, 8, 9, 10], Cursor(10), false)
    );
    let page = changes(&store, &a, 7, 2, None);
    assert_eq!(
        (seqs(&page), page.next, page.more),
        (vec![8, 9], Cursor(9), true)
    );
    let page = changes(&store, &a, 8, 2, None);
    assert_eq!(
        (seqs(&page), page.next, page.more),
        (vec![9, 10], Cursor(10), false),
        "a page that takes exactly the rest has no more"
    );
    let page = changes(&store, &a, 0, 0, None);
    assert_eq!(
        (page.changes.len(), page.next, page.more),
        (0, Cursor(0), true),
        "limit 0 returns nothing, keeps next and reports more"
    );
    for since in [10, 11, 1_000, u64::MAX] {
        let page = changes(&store, &a, since, 10, None);
        assert_eq!(
            (page.changes.len(), page.next, page.more),
            (0, Cursor(since), false),
            "a page from {since}, at or past the head, is empty and keeps next at since"
        );
    }
    let page = changes(&store, &b, 0, 100, None);
    assert_eq!(
        seqs(&page),
        vec![1, 2, 3, 4, 5],
        "each feed has its own log"
    );

    // A replaced entry leaves its old position and is seen again by a reader past it.
    let a04 = ok(store.get(&a, &eid("a04")), "get")
        .unwrap_or_else(|| panic!("store suite: entry a04 missing"));
    assert_eq!(put_one(&mut store, &a, &edited(&a04, "new", 3)), Cursor(11));
    let page = changes(&store, &a, 6, 100, None);
    assert_eq!(
        (seqs(&page), ids(&page).last().cloned()),
        (vec![7, 8, 9, 10, 11], Some("a04".to_owned())),
        "a reader past the old position sees the replaced entry at its new one"
    );
    let page = changes(&store, &a, 0, 100, None);
    assert!(
        !seqs(&page).contains(&4),
        "a replaced entry's old position leaves the log"
    );
    assert_eq!(page.changes.len(), 10, "the log holds each entry once");
}

/// A page stops once its changes pass [`MAX_PAGE_BYTES`](crate::sync::MAX_PAGE_BYTES) by
/// [`Entry::wire_len_bound`], whatever `limit` asks, says `more`, and resumes where it ended:
/// a reader of a feed of large entries holds at most that plus one entry.
pub fn pages_stop_at_their_byte_bound<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-page-bytes"));
    let f = feed("folder:f1/large");
    let cap = crate::sync::MAX_PAGE_BYTES;
    // Twelve entries of about 1 MiB, then one larger than a whole page, then two small ones.
    let large = |id: &str, len: usize| {
        feedsync::create(
            eid(id),
            &stamp("dev-a", 0),
            data(id, serde_json::json!({ "blob": "x".repeat(len) })),
        )
    };
    let mut written = Vec::new();
    for i in 0..12 {
        written.push(large(&format!("m{i:02}"), 1 << 20));
    }
    written.push(large("huge", cap + (1 << 20)));
    written.push(entry("s1", "small"));
    written.push(entry("s2", "small"));
    let pairs: Vec<(Entry, Option<&ReplicaId>)> =
        written.iter().map(|e| (e.clone(), None)).collect();
    put_all(&mut store, &f, &pairs);

    let mut since = 0;
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = changes(&store, &f, since, 100, None);
        let bounds: Vec<usize> = page
            .changes
            .iter()
            .map(|c| c.entry.wire_len_bound())
            .collect();
        let before_last: usize = bounds.iter().rev().skip(1).sum();
        assert!(
            before_last <= cap,
            "a page read on after its changes passed {cap} bytes: {bounds:?}"
        );
        assert!(
            !page.changes.is_empty() || !page.more,
            "an empty page that says more"
        );
        if page.changes.len() < 100 && page.next.0 < written.len() as u64 {
            assert!(page.more, "a page cut by bytes says more");
        }
        sizes.push(page.changes.len());
        got.extend(page.changes.into_iter().map(|c| c.entry.sync.id));
        since = page.next.0;
        if !page.more {
            break;
        }
        assert!(
            sizes.len() <= written.len(),
            "paging by bytes does not end: {sizes:?}"
        );
    }
    let want: Vec<EntryId> = written.iter().map(|e| e.sync.id.clone()).collect();
    assert_eq!(
        got, want,
        "pages cut by bytes visit the log in order, once ({sizes:?})"
    );
    assert!(
        sizes.len() >= 3,
        "fifteen changes, 22 MiB, in one or two pages: {sizes:?}"
    );
    let alone = changes(&store, &f, 12, 100, None);
    assert_eq!(
        alone.changes.len(),
        1,
        "an entry larger than a page is read alone, and nothing after it"
    );
    assert!(alone.more, "and the page says more follow");
}

/// `skip_origin` passes over changes whose latest write came from that replica, and skipped
/// changes still advance `next`.
pub fn skip_origin<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-skip"));
    let f = feed("folder:f1/todos");
    let x = replica("x");
    let y = replica("y");
    let e: Vec<Entry> = (1..=5).map(|i| entry(&format!("e{i}"), "e")).collect();
    // Log: 1:x 2:- 3:x 4:y 5:x
    put_all(
        &mut store,
        &f,
        &[
            (e[0].clone(), Some(&x)),
            (e[1].clone(), None),
            (e[2].clone(), Some(&x)),
            (e[3].clone(), Some(&y)),
            (e[4].clone(), Some(&x)),
        ],
    );
    let page = changes(&store, &f, 0, 10, Some(&x));
    assert_eq!(
        (seqs(&page), page.next, page.more),
        (vec![2, 4], Cursor(5), false),
        "changes from the skipped origin are left out; next covers them"
    );
    assert_eq!(
        seqs(&changes(&store, &f, 0, 10, None)),
        vec![1, 2, 3, 4, 5],
        "without skip_origin every change is returned"
    );
    assert_eq!(
        seqs(&changes(&store, &f, 0, 10, Some(&replica("z")))),
        vec![1, 2, 3, 4, 5],
        "skipping an origin that wrote nothing skips nothing"
    );
    assert_eq!(
        seqs(&changes(&store, &f, 0, 10, Some(&y))),
        vec![1, 2, 3, 5]
    );

    let p1 = changes(&store, &f, 0, 1, Some(&x));
    assert_eq!((seqs(&p1), p1.next, p1.more), (vec![2], Cursor(2), true));
    let p2 = changes(&store, &f, 2, 1, Some(&x));
    assert_eq!((seqs(&p2), p2.next, p2.more), (vec![4], Cursor(4), true));
    let p3 = changes(&store, &f, 4, 1, Some(&x));
    assert_eq!(
        (seqs(&p3), p3.next, p3.more),
        (vec![], Cursor(5), false),
        "a page of only skipped changes returns none but advances next"
    );
    let p = changes(&store, &f, 2, 10, Some(&x));
    assert_eq!((seqs(&p), p.next, p.more), (vec![4], Cursor(5), false));

    // The origin is that of the latest write.
    put_all(
        &mut store,
        &f,
        &[
            (edited(&e[0], "local", 1), None),      // 6, was from x
            (edited(&e[1], "from x", 1), Some(&x)), // 7, was local
        ],
    );
    let page = changes(&store, &f, 0, 10, Some(&x));
    assert_eq!(
        (seqs(&page), ids(&page), page.next),
        (
            vec![4, 6],
            vec!["e4".to_owned(), "e1".to_owned()],
            Cursor(7)
        ),
        "skip_origin looks at the origin of each entry's latest write"
    );
}

/// Paging over many skipped changes always makes progress and ends at the head.
pub fn skipped_changes_still_progress<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-skip-many"));
    let f = feed("folder:f1/todos");
    let x = replica("x");
    let mut batch: Vec<(Entry, Option<&ReplicaId>)> = Vec::new();
    for i in 0..3000 {
        let origin = if i == 1500 || i >= 2998 {
            None
        } else {
            Some(&x)
        };
        batch.push((entry(&format!("e{i:04}"), "e"), origin));
    }
    put_all(&mut store, &f, &batch);
    let head = ok(store.head(&f), "head");
    assert_eq!(head, Cursor(3000));

    for limit in [1, 2, 100] {
        let mut since = 0;
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let page = changes(&store, &f, since, limit, Some(&x));
            pages += 1;
            assert!(
                pages <= 3000,
                "paging over skipped changes does not end (limit {limit})"
            );
            if page.more {
                assert!(
                    page.next.0 > since || !page.changes.is_empty(),
                    "a page with more must make progress (since {since}, limit {limit})"
                );
            }
            got.extend(ids(&page));
            since = page.next.0;
            if !page.more {
                break;
            }
        }
        assert_eq!(
            got,
            vec!["e1500".to_owned(), "e2998".to_owned(), "e2999".to_owned()],
            "paging past skipped changes returns every other change once (limit {limit})"
        );
        assert_eq!(
            Cursor(since),
            head,
            "paging ends at the head (limit {limit})"
        );
    }
}

/// `head` and `feeds`: heads, entry counts (tombstones included) and order.
pub fn heads_and_feeds<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-feeds"));
    let todos = feed("folder:f2/todos");
    let notes = feed("folder:f1/notes");
    let devices = feed("mesh:zed/devices");
    let news = feed("mesh:ann/news");
    let e = entry("e", "e");
    put_one(&mut store, &todos, &e); // todos 1 (replica-wide 1)
    put_one(&mut store, &devices, &entry("d", "d")); // devices 1 (2)
    put_all(
        &mut store,
        &notes,
        &[
            (entry("n1", "n"), None),
            (
                ok(
                    feedsync::delete(&entry("n2", "n"), &stamp("dev-a", 1)),
                    "fixture delete",
                ),
                None,
            ),
        ],
    ); // notes 1, 2 (3, 4)
    put_one(&mut store, &todos, &edited(&e, "e2", 1)); // todos 2 (5)
    put_one(&mut store, &news, &entry("x", "x")); // news 1 (6)

    let expect = |feed: &FeedKey, head: u64, entries: u64| FeedHead {
        feed: feed.clone(),
        head: Cursor(head),
        entries,
    };
    let mut want = vec![
        expect(&todos, 2, 1),
        expect(&devices, 1, 1),
        expect(&notes, 2, 2),
        expect(&news, 1, 1),
    ];
    want.sort_by(|a, b| a.feed.cmp(&b.feed));
    assert_eq!(
        ok(store.feeds(), "feeds"),
        want,
        "feeds lists every feed with its head and entry count (tombstones included, replaced entries once), sorted by key"
    );
    for w in &want {
        assert_eq!(
            ok(store.head(&w.feed), "head"),
            w.head,
            "head of {}",
            w.feed
        );
        assert_eq!(
            ok(store.feed_head(&w.feed), "feed_head").as_ref(),
            Some(w),
            "feed_head gives what feeds lists for {}",
            w.feed
        );
    }
    assert_eq!(
        ok(store.head(&feed("folder:f9/todos")), "head"),
        Cursor::ZERO,
        "an unknown feed's head is zero"
    );
    assert_eq!(
        ok(store.feed_head(&feed("folder:f9/todos")), "feed_head"),
        None,
        "an unknown feed has no head to list"
    );
    let mut moved = ok(store.moved_feeds(), "moved_feeds");
    moved.sort_by_key(|m| m.seq);
    assert_eq!(
        moved
            .iter()
            .map(|m| (m.feed.clone(), m.head.0, m.seq))
            .collect::<Vec<_>>(),
        vec![
            (devices.clone(), 1, 2),
            (notes.clone(), 2, 4),
            (todos.clone(), 2, 5),
            (news.clone(), 1, 6),
        ],
        "moved_feeds gives each feed's head and the replica-wide number of its latest change"
    );
}

/// `list` returns entries in id order, from after `after`, at most `limit`.
pub fn list_order<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-list"));
    let f = feed("folder:f1/todos");
    let ids = [
        "b", "a-1", "é", "Z", "a", "日本", "a1", "aa", "0", "~", "a\u{a0}x",
    ];
    let batch: Vec<(Entry, Option<&ReplicaId>)> =
        ids.iter().map(|id| (entry(id, "t"), None)).collect();
    put_all(&mut store, &f, &batch);
    let tomb = ok(
        feedsync::delete(&entry("c", "t"), &stamp("dev-a", 1)),
        "fixture delete",
    );
    put_one(&mut store, &f, &tomb);
    put_one(&mut store, &feed("folder:f1/other"), &entry("ab", "t"));

    let mut want: Vec<EntryId> = ids.iter().chain(["c"].iter()).map(|s| eid(s)).collect();
    want.sort();
    let want: Vec<String> = want.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        list_ids(&store, &f, None, 100),
        want,
        "list returns every entry of the feed (tombstones included) in id order"
    );
    assert_eq!(
        list_ids(&store, &f, None, 3),
        want[..3].to_vec(),
        "list stops at limit"
    );
    assert_eq!(
        list_ids(&store, &f, Some("a"), 2),
        vec!["a-1".to_owned(), "a1".to_owned()],
        "list starts after `after`"
    );
    assert_eq!(
        list_ids(&store, &f, Some("ab"), 100),
        want.iter()
            .filter(|s| s.as_str() > "ab")
            .cloned()
            .collect::<Vec<_>>(),
        "`after` need not be an id of the feed"
    );
    // Paging with `after` visits everything once.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list_ids(&store, &f, after.as_deref(), 5);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
        assert!(paged.len() <= want.len(), "paging with list does not end");
    }
    assert_eq!(paged, want, "paging with list visits every entry once");
    assert!(
        list_ids(&store, &f, Some("日本"), 100).is_empty(),
        "nothing follows the last id"
    );
    assert!(
        list_ids(&store, &f, None, 0).is_empty(),
        "limit 0 lists nothing"
    );
}

/// Sync states: default, set, overwrite, per remote and feed, every field round-trips.
pub fn sync_states<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-sync"));
    let hub = remote("hub");
    let peer = remote("peer ☃");
    let a = feed("folder:f1/todos");
    let b = feed("mesh:ann/devices");
    let s1 = SyncState {
        remote_replica: Some(replica("hub-replica-1")),
        pulled: Cursor(42),
        pushed: Cursor(7),
    };
    let s2 = SyncState {
        remote_replica: None,
        pulled: Cursor(u64::MAX),
        pushed: Cursor(u64::MAX - 1),
    };
    let s3 = SyncState {
        remote_replica: Some(replica("p")),
        pulled: Cursor(i64::MAX as u64 + 1),
        pushed: Cursor(0),
    };
    let mut tx = ok(store.begin(), "begin");
    ok(tx.set_sync_state(&hub, &a, &s1), "set_sync_state");
    ok(tx.set_sync_state(&hub, &b, &s2), "set_sync_state");
    ok(tx.set_sync_state(&peer, &a, &s3), "set_sync_state");
    ok(tx.commit(), "commit");
    let state = |store: &S, r: &RemoteId, f: &FeedKey| ok(store.sync_state(r, f), "sync_state");
    assert_eq!(state(&store, &hub, &a), s1, "a sync state round-trips");
    assert_eq!(
        state(&store, &hub, &b),
        s2,
        "sync state cursors round-trip up to u64::MAX"
    );
    assert_eq!(
        state(&store, &peer, &a),
        s3,
        "sync states are kept per remote"
    );
    assert_eq!(
        state(&store, &peer, &b),
        SyncState::default(),
        "an unset sync state is the default"
    );
    let s1b = SyncState {
        remote_replica: Some(replica("hub-replica-2")),
        pulled: Cursor(0),
        pushed: Cursor(0),
    };
    let mut tx = ok(store.begin(), "begin");
    ok(tx.set_sync_state(&hub, &a, &s1), "set_sync_state");
    ok(tx.set_sync_state(&hub, &a, &s1b), "set_sync_state");
    ok(tx.commit(), "commit");
    assert_eq!(
        state(&store, &hub, &a),
        s1b,
        "setting a sync state again replaces it"
    );
    assert_eq!(
        state(&store, &hub, &b),
        s2,
        "other sync states are untouched"
    );
    assert!(
        ok(store.feeds(), "feeds").is_empty(),
        "sync states do not create feeds"
    );
}

/// Dropping a transaction without commit rolls every write back; its positions and
/// replica-wide numbers are given out again.
pub fn rollback_on_drop<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-rollback"));
    let a = feed("folder:f1/todos");
    let c = feed("folder:f3/new");
    let hub = remote("hub");
    let e1 = entry("e1", "one");
    let synced = SyncState {
        remote_replica: Some(replica("hub")),
        pulled: Cursor(3),
        pushed: Cursor(1),
    };
    put_one(&mut store, &a, &e1);
    let mut tx = ok(store.begin(), "begin");
    ok(tx.set_sync_state(&hub, &a, &synced), "set_sync_state");
    ok(tx.commit(), "commit");

    {
        let mut tx = ok(store.begin(), "begin");
        assert_eq!(ok(tx.put(&a, entry("e2", "two"), None), "put"), Cursor(2));
        assert_eq!(
            ok(tx.put(&a, edited(&e1, "changed", 1), None), "put"),
            Cursor(3)
        );
        ok(tx.put(&c, entry("e9", "nine"), None), "put");
        ok(
            tx.set_sync_state(&hub, &a, &SyncState::default()),
            "set_sync_state",
        );
        ok(tx.set_sync_state(&hub, &c, &synced), "set_sync_state");
        assert!(txn_get(&mut tx, &a, "e2").is_some());
        // Dropped without commit.
    }
    assert_eq!(get(&store, &a, "e2"), None, "a rolled-back put is gone");
    assert_eq!(
        get(&store, &a, "e1"),
        Some(e1.clone()),
        "a rolled-back replacement restores the previous version"
    );
    assert_eq!(get(&store, &c, "e9"), None, "a rolled-back put is gone");
    assert_eq!(
        ok(store.head(&a), "head"),
        Cursor(1),
        "a rolled-back transaction leaves the head"
    );
    assert_eq!(
        ok(store.feeds(), "feeds"),
        vec![FeedHead {
            feed: a.clone(),
            head: Cursor(1),
            entries: 1
        }],
        "a feed created by a rolled-back transaction does not exist"
    );
    let page = changes(&store, &a, 0, 10, None);
    assert_eq!(
        page.changes,
        vec![Change {
            seq: Cursor(1),
            entry: e1.clone()
        }],
        "a rolled-back transaction leaves the log as it was"
    );
    assert_eq!(
        ok(store.sync_state(&hub, &a), "sync_state"),
        synced,
        "a rolled-back sync state restores the previous one"
    );
    assert_eq!(
        ok(store.sync_state(&hub, &c), "sync_state"),
        SyncState::default(),
        "a rolled-back sync state is gone"
    );

    // A transaction that only read, and one that did nothing, roll back harmlessly.
    {
        let mut tx = ok(store.begin(), "begin");
        assert_eq!(txn_get(&mut tx, &a, "e1"), Some(e1.clone()));
    }
    drop(ok(store.begin(), "begin"));

    assert_eq!(
        put_one(&mut store, &a, &entry("e3", "three")),
        Cursor(2),
        "positions of a rolled-back transaction are given out again: committed positions have no gaps"
    );
    assert_eq!(
        seqs(&changes(&store, &a, 0, 10, None)),
        vec![1, 2],
        "the log after a rollback and a commit"
    );
    assert_eq!(
        ok(store.feed_moved(&a), "feed_moved").map(|m| m.seq),
        Some(2),
        "replica-wide numbers of a rolled-back transaction are given out again"
    );
    assert_eq!(
        ok(store.feed_moved(&c), "feed_moved"),
        None,
        "a feed created by a rolled-back transaction has not moved"
    );
}

/// A transaction reads its own writes, and only those of its feed.
pub fn txn_reads_own_writes<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-own-writes"));
    let a = feed("folder:f1/todos");
    let b = feed("folder:f1/notes");
    let e = entry("e", "first");
    let e2 = edited(&e, "second", 1);
    let other = entry("e", "in b");
    put_one(&mut store, &a, &entry("old", "old"));

    let mut tx = ok(store.begin(), "begin");
    assert_eq!(txn_get(&mut tx, &a, "e"), None);
    assert!(
        txn_get(&mut tx, &a, "old").is_some(),
        "a transaction reads committed entries"
    );
    ok(tx.put(&a, e.clone(), None), "put");
    assert_eq!(
        txn_get(&mut tx, &a, "e"),
        Some(e.clone()),
        "a transaction reads its own put"
    );
    ok(tx.put(&a, e2.clone(), None), "put");
    assert_eq!(
        txn_get(&mut tx, &a, "e"),
        Some(e2.clone()),
        "a transaction reads its latest put"
    );
    assert_eq!(
        txn_get(&mut tx, &b, "e"),
        None,
        "a put in one feed is not seen in another"
    );
    ok(tx.put(&b, other.clone(), None), "put");
    assert_eq!(txn_get(&mut tx, &b, "e"), Some(other.clone()));
    assert_eq!(
        txn_get(&mut tx, &a, "e"),
        Some(e2.clone()),
        "same id in two feeds: two entries"
    );
    ok(tx.commit(), "commit");
    assert_eq!(get(&store, &a, "e"), Some(e2));
    assert_eq!(get(&store, &b, "e"), Some(other));
}

/// `prefetch` changes no answer: prefetched entries, absent ones, and writes made after it.
pub fn prefetch_is_only_a_hint<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-prefetch"));
    let a = feed("folder:f1/todos");
    let b = feed("folder:f1/notes");
    let old = entry("old", "old");
    put_one(&mut store, &a, &old);
    let mut tx = ok(store.begin(), "begin");
    ok(tx.prefetch(&a, &[eid("old"), eid("new")]), "prefetch");
    ok(tx.prefetch(&b, &[]), "an empty prefetch");
    assert_eq!(txn_get(&mut tx, &a, "old"), Some(old.clone()));
    assert_eq!(txn_get(&mut tx, &a, "new"), None);
    assert_eq!(txn_get(&mut tx, &b, "old"), None, "prefetch is per feed");
    let new = entry("new", "new");
    let old2 = edited(&old, "old, edited", 1);
    ok(tx.put(&a, new.clone(), None), "put");
    ok(tx.put(&a, old2.clone(), None), "put");
    assert_eq!(
        txn_get(&mut tx, &a, "new"),
        Some(new.clone()),
        "a write after the prefetch wins over its 'absent'"
    );
    assert_eq!(txn_get(&mut tx, &a, "old"), Some(old2.clone()));
    ok(tx.prefetch(&a, &[eid("old")]), "prefetch after a write");
    assert_eq!(
        txn_get(&mut tx, &a, "old"),
        Some(old2.clone()),
        "a later prefetch does not hide the transaction's own write"
    );
    ok(tx.prefetch(&a, &[eid("third")]), "prefetch");
    let third = entry("third", "third");
    ok(tx.put(&a, third.clone(), None), "put");
    assert_eq!(
        txn_get(&mut tx, &a, "third"),
        Some(third),
        "a write made before any read of a prefetched entry wins over its 'absent'"
    );
    ok(tx.commit(), "commit");
    assert_eq!(get(&store, &a, "old"), Some(old2.clone()));
    assert_eq!(get(&store, &a, "new"), Some(new.clone()));
    // get_many answers as get does, in the order asked, repeats and absences included.
    let ids = [eid("new"), eid("gone"), eid("old"), eid("new")];
    assert_eq!(
        ok(store.get_many(&a, &ids), "get_many"),
        vec![Some(new.clone()), None, Some(old2), Some(new)]
    );
    assert_eq!(
        ok(store.get_many(&b, &ids[..1]), "get_many"),
        vec![None],
        "get_many is per feed"
    );
    assert!(ok(store.get_many(&a, &[]), "get_many").is_empty());
    assert_eq!(
        ok(
            store.get_many(&feed("folder:nowhere/todos"), &ids),
            "get_many"
        ),
        vec![None; 4],
        "a feed never written holds nothing"
    );
}

/// After commit, every write is visible to reads and to later transactions.
pub fn commit_makes_writes_visible<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-commit"));
    let a = feed("folder:f1/todos");
    let hub = remote("hub");
    let e = entry("e", "e");
    let state = SyncState {
        remote_replica: Some(replica("hub")),
        pulled: Cursor(9),
        pushed: Cursor(1),
    };
    let mut tx = ok(store.begin(), "begin");
    let seq = ok(tx.put(&a, e.clone(), Some(&replica("peer"))), "put");
    ok(tx.set_sync_state(&hub, &a, &state), "set_sync_state");
    ok(tx.commit(), "commit");

    assert_eq!(get(&store, &a, "e"), Some(e.clone()), "committed put: get");
    assert_eq!(ok(store.head(&a), "head"), seq, "committed put: head");
    assert_eq!(
        ok(store.feeds(), "feeds"),
        vec![FeedHead {
            feed: a.clone(),
            head: seq,
            entries: 1
        }],
        "committed put: feeds"
    );
    assert_eq!(
        changes(&store, &a, 0, 10, None).changes,
        vec![Change {
            seq,
            entry: e.clone()
        }],
        "committed put: changes_since"
    );
    assert_eq!(
        ok(store.list(&a, None, 10), "list"),
        vec![e.clone()],
        "committed put: list"
    );
    assert_eq!(
        ok(store.sync_state(&hub, &a), "sync_state"),
        state,
        "committed sync state"
    );
    let mut tx = ok(store.begin(), "begin");
    assert_eq!(
        txn_get(&mut tx, &a, "e"),
        Some(e),
        "a later transaction sees committed writes"
    );
}

/// `purge_feed` removes one feed's entries, change log and sync states, leaves the others alone,
/// and positions never go back.
pub fn purge_feed<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-purge"));
    let gone = feed("folder:f1/todos");
    let kept = feed("folder:f1/members");
    put_all(
        &mut store,
        &gone,
        &[(entry("a", "a"), None), (entry("b", "b"), None)],
    ); // gone 1, 2 (replica-wide 1, 2)
    put_one(&mut store, &kept, &entry("ann", "ann")); // kept 1 (3)
    let state = SyncState {
        remote_replica: Some(replica("hub")),
        pulled: Cursor(7),
        pushed: Cursor(2),
    };
    {
        let mut tx = ok(store.begin(), "begin");
        ok(
            tx.set_sync_state(&remote("hub"), &gone, &state),
            "set state",
        );
        ok(
            tx.set_sync_state(&remote("hub"), &kept, &state),
            "set state",
        );
        ok(tx.commit(), "commit");
    }
    assert_eq!(
        ok(store.purge_feed(&gone), "purge"),
        2,
        "purge counts the entries"
    );
    assert_eq!(
        ok(store.get(&gone, &eid("a")), "get"),
        None,
        "a purged entry is gone"
    );
    assert!(
        ok(store.list(&gone, None, 10), "list").is_empty(),
        "a purged feed lists nothing"
    );
    assert_eq!(ok(store.head(&gone), "head"), Cursor::ZERO);
    let page = ok(
        store.changes_since(&gone, Cursor::ZERO, 10, None),
        "changes",
    );
    assert!(page.changes.is_empty(), "a purged feed has no change log");
    assert_eq!(
        ok(store.feeds(), "feeds")
            .into_iter()
            .map(|h| h.feed)
            .collect::<Vec<_>>(),
        vec![kept.clone()],
        "only the other feed is listed"
    );
    assert_eq!(
        ok(store.sync_state(&remote("hub"), &gone), "state"),
        SyncState::default(),
        "the purged feed's sync state is gone"
    );
    assert_eq!(ok(store.sync_state(&remote("hub"), &kept), "state"), state);
    assert!(ok(store.get(&kept, &eid("ann")), "get").is_some());
    assert_eq!(ok(store.purge_feed(&gone), "purge again"), 0);
    assert_eq!(
        ok(store.feed_moved(&gone), "feed_moved"),
        None,
        "a purged feed has not moved"
    );
    assert_eq!(
        ok(store.feed_head(&gone), "feed_head"),
        None,
        "a purged feed is not listed, by key either"
    );
    assert_eq!(
        ok(store.moved_feeds(), "moved_feeds")
            .into_iter()
            .map(|m| m.feed)
            .collect::<Vec<_>>(),
        vec![kept.clone()],
        "moved_feeds leaves the purged feed out"
    );
    // Positions do not go back: written again, the feed continues after its old head, so a
    // cursor a remote kept from before the purge does not skip the new change.
    put_one(&mut store, &gone, &entry("c", "c"));
    assert_eq!(ok(store.head(&gone), "head"), Cursor(3));
    assert_eq!(
        ok(store.feed_moved(&gone), "feed_moved").map(|m| m.seq),
        Some(4),
        "nor do replica-wide numbers"
    );
}

/// [`Store::scope_feeds`] lists exactly one scope's feeds that hold entries, in key order, as
/// [`Store::feeds`] lists them, also where another scope's id starts with this one's or
/// goes on with a `/` (ids may hold one). [`Store::member_folders`] lists the folders whose
/// `members` feed holds an entry with the user's id, deleted ones too, in order, and nothing
/// a rollback undid, a purge removed or another feed holds.
pub fn scopes_and_member_records<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("hub"));
    let folder = |s: &str| parsed::<FolderId>(s);
    let user = |s: &str| parsed::<UserId>(s);
    let in_scope = |store: &S, scope: &Scope| -> Vec<String> {
        ok(store.scope_feeds(scope), "scope_feeds")
            .into_iter()
            .map(|h| h.feed.to_string())
            .collect()
    };
    let folders = |store: &S, u: &str| -> Vec<String> {
        ok(store.member_folders(&user(u)), "member_folders")
            .into_iter()
            .map(|f| f.to_string())
            .collect()
    };
    let writes: &[(&str, &[&str])] = &[
        ("folder:f1/todos", &["ann", "t1"]),
        ("folder:f1/members", &["ann", "bob"]),
        ("folder:f1/-x", &["x"]),
        ("folder:f1/.y", &["y"]),
        ("folder:f10/todos", &["t"]),
        ("folder:f1/x/todos", &["t"]),
        ("folder:f1/x/members", &["carol"]),
        ("folder:f/todos", &["t"]),
        ("folder:a-b/members", &["ann"]),
        ("folder:f2/members", &["ann"]),
        ("folder:f3/members", &["bob"]),
        ("folder:f3/todos", &["bob"]),
        ("mesh:ann/devices", &["d1"]),
        ("mesh:ann/news", &["n1"]),
        ("mesh:anna/devices", &["d1"]),
        ("mesh:ann/x/devices", &["d1"]),
    ];
    for (key, ids) in writes {
        for id in *ids {
            put_one(&mut store, &feed(key), &entry(id, id));
        }
    }
    for scope in [
        Scope::Folder(folder("f1")),
        Scope::Folder(folder("f1/x")),
        Scope::Folder(folder("f")),
        Scope::Folder(folder("nowhere")),
        Scope::Mesh(user("ann")),
        Scope::Mesh(user("ann/x")),
        Scope::Mesh(user("an")),
    ] {
        let mut listed: Vec<FeedHead> = ok(store.feeds(), "feeds")
            .into_iter()
            .filter(|h| h.feed.scope == scope)
            .collect();
        listed.sort_by(|a, b| a.feed.cmp(&b.feed));
        assert_eq!(
            ok(store.scope_feeds(&scope), "scope_feeds"),
            listed,
            "scope_feeds of {scope:?} is what feeds lists of it, in key order"
        );
    }
    assert_eq!(
        in_scope(&store, &Scope::Folder(folder("f1"))),
        [
            "folder:f1/-x",
            "folder:f1/.y",
            "folder:f1/members",
            "folder:f1/todos"
        ]
    );
    assert_eq!(
        in_scope(&store, &Scope::Mesh(user("ann"))),
        ["mesh:ann/devices", "mesh:ann/news"]
    );
    assert_eq!(folders(&store, "ann"), ["a-b", "f1", "f2"], "ann's folders");
    assert_eq!(folders(&store, "bob"), ["f1", "f3"], "bob's folders");
    assert_eq!(folders(&store, "carol"), ["f1/x"], "carol's folders");
    assert!(
        folders(&store, "t1").is_empty(),
        "only members feeds are indexed"
    );

    // A deleted member record still names its folder (it tells the user they were removed).
    let tomb = ok(
        feedsync::delete(&entry("ann", "ann"), &stamp("dev-b", 9)),
        "delete",
    );
    put_one(&mut store, &feed("folder:f2/members"), &tomb);
    assert_eq!(folders(&store, "ann"), ["a-b", "f1", "f2"]);

    // What a rollback undid is not indexed, in a feed that existed or one it made.
    {
        let mut tx = ok(store.begin(), "begin");
        for key in ["folder:f3/members", "folder:f4/members"] {
            ok(tx.put(&feed(key), entry("dave", "dave"), None), "put");
        }
    }
    assert!(folders(&store, "dave").is_empty(), "rolled back");
    assert!(in_scope(&store, &Scope::Folder(folder("f4"))).is_empty());

    // A purged members feed drops its records, and writing it again does not bring them back.
    ok(store.purge_feed(&feed("folder:f3/members")), "purge");
    assert_eq!(folders(&store, "bob"), ["f1"], "purged");
    assert_eq!(
        in_scope(&store, &Scope::Folder(folder("f3"))),
        ["folder:f3/todos"]
    );
    put_one(
        &mut store,
        &feed("folder:f3/members"),
        &entry("erin", "erin"),
    );
    assert_eq!(folders(&store, "erin"), ["f3"]);
    assert_eq!(folders(&store, "bob"), ["f1"], "not brought back");
}

/// [`Store::last_moved`] is the newest replica-wide number committed: 0 at first, then the
/// largest [`FeedMoved::seq`], unmoved by a rollback, kept when the feed that took it is
/// purged, and below the number the next change takes.
pub fn last_moved_bounds_every_feed<S: Store>(mut factory: impl FnMut(ReplicaId) -> S) {
    let mut store = factory(replica("suite-last-moved"));
    assert_eq!(ok(store.last_moved(), "last_moved"), 0, "nothing moved yet");
    let (a, b) = (feed("folder:f1/a"), feed("folder:f1/b"));
    put_one(&mut store, &a, &entry("1", "1"));
    put_one(&mut store, &b, &entry("2", "2"));
    put_one(&mut store, &a, &entry("3", "3"));
    let top = |store: &S| {
        ok(store.moved_feeds(), "moved_feeds")
            .iter()
            .map(|m| m.seq)
            .max()
            .unwrap_or(0)
    };
    assert_eq!(ok(store.last_moved(), "last_moved"), 3);
    assert_eq!(top(&store), 3);
    {
        let mut tx = ok(store.begin(), "begin");
        ok(tx.put(&b, entry("4", "4"), None), "put");
    }
    assert_eq!(
        ok(store.last_moved(), "last_moved"),
        3,
        "a rollback moves nothing"
    );
    ok(store.purge_feed(&a), "purge");
    assert_eq!(top(&store), 2);
    assert_eq!(
        ok(store.last_moved(), "last_moved"),
        3,
        "a purge does not take numbers back"
    );
    put_one(&mut store, &b, &entry("5", "5"));
    assert_eq!(
        ok(store.feed_moved(&b), "feed_moved").map(|m| m.seq),
        Some(4)
    );
    assert_eq!(ok(store.last_moved(), "last_moved"), 4);
}
