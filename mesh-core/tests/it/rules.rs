//! One test (or more) per rule of DESIGN §3, plus bad input.

use mesh_core::feedsync::{
    create, delete, merge, resolve, resolve_with_version, update, HistoryItem, Item, MergeOutcome,
    Stamp,
};
use mesh_core::replica::{ReplicaOptions, Resolution};
use mesh_core::store::{Cursor, MemoryStore, Store};
use mesh_core::ErrorCode;

use crate::common::*;

#[test]
fn create_starts_at_one() {
    let item = create(id("a"), &stamp("A", 0), "x");
    assert_eq!(item.sync.updates, 1);
    assert_eq!(
        item.sync.history,
        vec![HistoryItem::new(1, Some(t(0)), Some(dev("A")))]
    );
    assert!(!item.sync.deleted && !item.sync.noconflicts && item.conflicts.is_empty());
}

#[test]
fn update_and_delete_add_a_topmost_history_item() {
    let item = create(id("a"), &stamp("A", 0), "x");
    let u = update(&item, &stamp("B", 5), "y", false).unwrap();
    assert_eq!(u.sync.updates, 2);
    assert_eq!(
        u.sync.history[0],
        HistoryItem::new(2, Some(t(5)), Some(dev("B")))
    );
    assert_eq!(u.sync.history[1], item.sync.history[0]);
    let d = delete(&u, &stamp("A", 9)).unwrap();
    assert!(d.sync.deleted);
    assert_eq!(d.content, "y", "a tombstone keeps the content");
    assert_eq!(d.sync.updates, 3);
}

#[test]
fn update_drops_conflicts_by_the_same_endpoint() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let on_a = update(&base, &stamp("A", 1), "a", false).unwrap();
    let on_b = update(&base, &stamp("B", 2), "b", false).unwrap();
    let on_c = update(&base, &stamp("C", 1), "c", false).unwrap();
    let m = merge(Some(&on_a), on_b).unwrap().item.unwrap();
    let m = merge(Some(&m), on_c).unwrap().item.unwrap();
    assert_eq!(m.conflicts.len(), 2);
    // A edits again: its own conflict is subsumed, C's stays.
    let again = update(&m, &stamp("A", 3), "a2", false).unwrap();
    assert_eq!(tops(&again), vec![("A".into(), 3), ("C".into(), 2)]);
    assert!(again.sync.knows(&on_a.sync));
}

#[test]
fn subsumption_is_by_endpoint_and_sequence() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let newer = update(&base, &stamp("B", 1), "y", false).unwrap();
    assert!(newer.sync.knows(&base.sync));
    assert!(!base.sync.knows(&newer.sync));
    // Without `by`, only an identical when + sequence covers.
    let s1 = Stamp::partial(None, Some(t(7))).unwrap();
    let anon = create(id("b"), &s1, "x");
    let anon2 = update(&anon, &s1, "y", false).unwrap();
    assert!(anon2.sync.knows(&anon.sync));
    assert!(!anon.sync.knows(&anon2.sync));
}

#[test]
fn winner_order() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let more_updates = update(
        &update(&base, &stamp("A", 1), "", false).unwrap(),
        &stamp("A", 1),
        "",
        false,
    )
    .unwrap();
    let later = update(&base, &stamp("A", 50), "", false).unwrap();
    assert!(
        more_updates.sync.winner_cmp(&later.sync).is_gt(),
        "updates first"
    );
    let b = update(&base, &stamp("B", 5), "", false).unwrap();
    let a = update(&base, &stamp("A", 5), "", false).unwrap();
    assert!(b.sync.winner_cmp(&a.sync).is_gt(), "then by, by code point");
    let lower = update(&base, &stamp("a", 5), "", false).unwrap();
    assert!(
        lower.sync.winner_cmp(&b.sync).is_gt(),
        "case-sensitive: 'a' > 'B'"
    );
}

#[test]
fn merge_outcomes() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let m = merge(None, base.clone()).unwrap();
    assert_eq!(m.outcome, MergeOutcome::Added);
    assert!(m.verbatim);
    let m = merge(Some(&base), base.clone()).unwrap();
    assert_eq!((m.outcome, m.item), (MergeOutcome::Unchanged, None));
    let newer = update(&base, &stamp("B", 1), "y", false).unwrap();
    let m = merge(Some(&base), newer.clone()).unwrap();
    assert_eq!(m.outcome, MergeOutcome::Updated);
    assert_eq!(m.item.as_ref(), Some(&newer));
    // Learning nothing changes nothing, even when the incoming item is older.
    let m = merge(Some(&newer), base.clone()).unwrap();
    assert_eq!(m.outcome, MergeOutcome::Unchanged);
    let other = update(&base, &stamp("C", 1), "z", false).unwrap();
    let m = merge(Some(&newer), other.clone()).unwrap();
    assert_eq!(m.outcome, MergeOutcome::Conflict);
    assert!(!m.verbatim);
    let conflicted = m.item.unwrap();
    // The same conflict arriving again is a no-op; so is the loser alone.
    assert_eq!(
        merge(Some(&conflicted), conflicted.clone())
            .unwrap()
            .outcome,
        MergeOutcome::Unchanged
    );
    assert_eq!(
        merge(Some(&conflicted), newer).unwrap().outcome,
        MergeOutcome::Unchanged
    );
}

#[test]
fn resolve_updates_first_then_folds_history() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let b = update(&base, &stamp("B", 1), "b", false).unwrap();
    let c = update(
        &update(&base, &stamp("C", 1), "c", false).unwrap(),
        &stamp("C", 2),
        "c2",
        false,
    )
    .unwrap();
    let m = merge(Some(&b), c.clone()).unwrap().item.unwrap();
    assert_eq!(tops(&m), vec![("C".into(), 3), ("B".into(), 2)]);
    let r = resolve(&m, &stamp("A", 9), "merged", false).unwrap();
    assert_eq!(r.sync.updates, 4);
    assert_eq!(
        r.sync.history[0],
        HistoryItem::new(4, Some(t(9)), Some(dev("A")))
    );
    assert_eq!(
        r.sync.history[1],
        HistoryItem::new(2, Some(t(1)), Some(dev("B"))),
        "folded just below the top"
    );
    assert!(r.conflicts.is_empty());
    assert!(r.sync.knows(&b.sync) && r.sync.knows(&c.sync));
    // Every replica that still holds either side accepts the resolution without conflict.
    assert_eq!(
        merge(Some(&b), r.clone()).unwrap().outcome,
        MergeOutcome::Updated
    );
    assert_eq!(
        merge(Some(&m), r.clone()).unwrap().outcome,
        MergeOutcome::Updated
    );
    // Picking a version keeps its content.
    let picked = resolve_with_version(&m, &stamp("A", 9), 1).unwrap();
    assert_eq!(picked.content, "b");
    assert_eq!(
        resolve_with_version(&m, &stamp("A", 9), 7)
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

#[test]
fn compaction_keeps_merge_results() {
    let base = create(id("a"), &stamp("A", 0), "x");
    let mut long = base.clone();
    for i in 1..20 {
        long = update(
            &long,
            &stamp(if i % 2 == 0 { "A" } else { "B" }, i),
            "v",
            false,
        )
        .unwrap();
    }
    let mut compact = long.clone();
    compact.compact();
    assert_eq!(compact.sync.history.len(), 2);
    let rival = update(&base, &stamp("C", 99), "c", false).unwrap();
    let m1 = merge(Some(&long), rival.clone()).unwrap();
    let m2 = merge(Some(&compact), rival.clone()).unwrap();
    assert_eq!(m1.outcome, m2.outcome);
    assert_eq!(tops(&m1.item.unwrap()), tops(&m2.item.unwrap()));
    assert_eq!(
        merge(Some(&compact), long.clone()).unwrap().outcome,
        MergeOutcome::Unchanged
    );
    assert_eq!(
        merge(Some(&long), compact).unwrap().outcome,
        MergeOutcome::Unchanged
    );
}

fn json_item(text: &str) -> Item<serde_json::Value> {
    serde_json::from_str(text).unwrap()
}

#[test]
fn bad_sync_metadata_is_a_typed_error() {
    let cases = [
        (
            r#"{"sync":{"id":"a","updates":1,"history":[]},"content":null}"#,
            "missing",
        ),
        (
            r#"{"sync":{"id":"a","updates":1},"content":null}"#,
            "missing",
        ),
        (
            r#"{"sync":{"id":"a","updates":1,"history":[{"sequence":1}]},"content":null}"#,
            "neither when nor by",
        ),
        (
            r#"{"sync":{"id":"a","updates":1,"history":[{"sequence":2,"by":"A"}]},"content":null}"#,
            "smaller than the topmost",
        ),
        (
            r#"{"sync":{"id":"a","updates":0,"history":[{"sequence":0,"by":"A"}]},"content":null}"#,
            "at least 1",
        ),
        (
            r#"{"sync":{"id":"a","updates":2,"history":[{"sequence":2,"by":"A"}],
             "conflicts":[{"sync":{"id":"b","updates":1,"history":[{"sequence":1,"by":"B"}]},"content":null}]},"content":null}"#,
            "different id",
        ),
    ];
    for (text, why) in cases {
        let item = json_item(text);
        let err = merge(None, item).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidSync, "{text}");
        assert!(
            err.to_string().contains(why),
            "{err} should mention {why:?}"
        );
    }
    let a = json_item(
        r#"{"sync":{"id":"a","updates":1,"history":[{"sequence":1,"by":"A"}]},"content":null}"#,
    );
    let b = json_item(
        r#"{"sync":{"id":"b","updates":1,"history":[{"sequence":1,"by":"A"}]},"content":null}"#,
    );
    assert_eq!(
        merge(Some(&a), b).unwrap_err().code(),
        ErrorCode::InvalidSync
    );
    let mut max = a.clone();
    max.sync.updates = u32::MAX;
    max.sync.history[0].sequence = u32::MAX;
    assert_eq!(
        update(&max, &stamp("A", 1), serde_json::Value::Null, false)
            .unwrap_err()
            .code(),
        ErrorCode::LimitExceeded
    );
    assert!(Stamp::partial(None, None).is_err());
    // Ids are typed and checked.
    assert!(serde_json::from_str::<Item<serde_json::Value>>(
        r#"{"sync":{"id":"","updates":1,"history":[]},"content":1}"#
    )
    .is_err());
}

#[test]
fn replica_writes_take_sequence_numbers_and_unknown_ids_fail() {
    let mut r = replica("r1");
    let me = actor("ann", "laptop");
    let f = feed();
    let w1 = r.create(&f, id("e1"), draft("one"), &me, t(0)).unwrap();
    let w2 = r.create(&f, id("e2"), draft("two"), &me, t(0)).unwrap();
    let w3 = r.update(&f, &id("e1"), draft("one!"), &me, t(1)).unwrap();
    assert_eq!((w1.seq, w2.seq, w3.seq), (Cursor(1), Cursor(2), Cursor(3)));
    assert_eq!(w3.entry.content.author.as_str(), "ann");
    assert_eq!(w3.entry.content.published, t(0));
    assert_eq!(w3.entry.content.updated, t(1));
    // e1's change moved to the end of the log: the log holds each entry once.
    let page = r.changes_since(&f, Cursor::ZERO, 10).unwrap();
    let ids: Vec<_> = page
        .changes
        .iter()
        .map(|c| c.entry.sync.id.to_string())
        .collect();
    assert_eq!(ids, ["e2", "e1"]);
    assert_eq!(page.next, Cursor(3));
    assert!(!page.more);
    let page = r.changes_since(&f, Cursor::ZERO, 1).unwrap();
    assert!(page.more && page.next == Cursor(2));

    let code = |e: mesh_core::CoreError| e.code();
    assert_eq!(
        code(r.create(&f, id("e1"), draft("dup"), &me, t(2)).unwrap_err()),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            r.update(&f, &id("nope"), draft("x"), &me, t(2))
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(r.delete(&f, &id("nope"), &me, t(2)).unwrap_err()),
        ErrorCode::NotFound
    );
    r.delete(&f, &id("e2"), &me, t(2)).unwrap();
    assert_eq!(
        code(r.delete(&f, &id("e2"), &me, t(3)).unwrap_err()),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            r.resolve(&f, &id("e1"), Resolution::Delete, &me, t(3))
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        r.store().head(&f).unwrap(),
        Cursor(4),
        "refused writes take no sequence number"
    );
}

#[test]
fn merge_batch_is_atomic_and_refuses_duplicate_ids() {
    let mut src = replica("src");
    let me = actor("ann", "laptop");
    let f = feed();
    for i in 0..3 {
        src.create(&f, id(&format!("e{i}")), draft("x"), &me, t(0))
            .unwrap();
    }
    let entries: Vec<_> = src
        .changes_since(&f, Cursor::ZERO, 10)
        .unwrap()
        .changes
        .into_iter()
        .map(|c| c.entry)
        .collect();

    let mut dst = replica("dst");
    let mut dup = entries.clone();
    dup.push(entries[0].clone());
    assert_eq!(
        dst.merge_batch(&f, dup, None).unwrap_err().code(),
        ErrorCode::DuplicateId
    );
    let mut broken = entries.clone();
    broken[2].sync.history.clear();
    assert_eq!(
        dst.merge_batch(&f, broken, None).unwrap_err().code(),
        ErrorCode::InvalidSync
    );
    assert!(dst.store().is_empty(), "a refused batch writes nothing");
    assert_eq!(dst.store().head(&f).unwrap(), Cursor::ZERO);

    let reports = dst.merge_batch(&f, entries.clone(), None).unwrap();
    assert!(reports.iter().all(|r| r.outcome == MergeOutcome::Added));
    assert_eq!(
        reports.iter().map(|r| r.seq.unwrap().0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let again = dst.merge_batch(&f, entries, None).unwrap();
    assert!(again
        .iter()
        .all(|r| r.outcome == MergeOutcome::Unchanged && r.seq.is_none()));
    assert_eq!(dst.store().head(&f).unwrap(), Cursor(3));
}

#[test]
fn replica_resolution_and_compaction_option() {
    let f = feed();
    let mut a = mesh_core::replica::Replica::with_options(
        MemoryStore::new("a".parse().unwrap()),
        ReplicaOptions {
            compact_history: true,
        },
    );
    let mut b = replica("b");
    let ann = actor("ann", "phone");
    let bob = actor("bob", "desk");
    let e = a
        .create(&f, id("e"), draft("v0"), &ann, t(0))
        .unwrap()
        .entry;
    b.merge(&f, e, None).unwrap();
    for i in 1..6 {
        a.update(&f, &id("e"), draft(&format!("a{i}")), &ann, t(i))
            .unwrap();
    }
    let on_b = b
        .update(&f, &id("e"), draft("b"), &bob, t(3))
        .unwrap()
        .entry;
    assert_eq!(
        a.get(&f, &id("e")).unwrap().unwrap().sync.history.len(),
        1,
        "compacted to one item per device"
    );
    let report = a.merge(&f, on_b, None).unwrap();
    assert_eq!(report.outcome, MergeOutcome::Conflict);
    let r = a
        .resolve(&f, &id("e"), Resolution::Pick(1), &ann, t(9))
        .unwrap();
    assert_eq!(r.entry.content.title, "b");
    assert!(!r.entry.has_conflicts());
    let r = a.resolve(&f, &id("e"), Resolution::Pick(0), &ann, t(10));
    assert_eq!(r.unwrap_err().code(), ErrorCode::NotFound);
}
