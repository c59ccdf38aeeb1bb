//! The sans-I/O sync session, driven in memory.

use mesh_core::feedsync::MergeOutcome;
use mesh_core::replica::{Replica, Resolution};
use mesh_core::store::{Cursor, MemoryStore, Store, SyncState};
use mesh_core::sync::{
    respond, Epoch, Request, Response, SessionConfig, SessionEvent, Step, SyncReport, SyncSession,
};
use mesh_core::ErrorCode;

use crate::common::*;

type R = Replica<MemoryStore>;

fn config(page: u32) -> SessionConfig {
    let mut c = SessionConfig::new("hub".parse().unwrap());
    c.page_size = page;
    c
}

/// Runs a whole session of `local` against `hub`; returns the report and the events.
fn sync(local: &mut R, hub: &mut R, page: u32) -> (SyncReport, Vec<SessionEvent>) {
    let mut s = SyncSession::new(config(page));
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match s.poll(local).unwrap() {
            Step::Send(req) => {
                let resp = respond(hub, req).unwrap();
                events.extend(s.receive(local, resp).unwrap());
            }
            Step::Done(report) => return (report, events),
        }
    }
    panic!("session did not finish");
}

fn titles(r: &R) -> Vec<(String, String, usize)> {
    r.store()
        .list(&feed(), None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.sync.id.to_string(),
                e.content.title.clone(),
                e.conflicts.len(),
            )
        })
        .collect()
}

#[test]
fn two_devices_converge_through_a_hub_and_see_the_conflict() {
    let (mut a, mut b, mut hub) = (replica("a"), replica("b"), replica("hub"));
    let (ann_a, ann_b) = (actor("ann", "a"), actor("ann", "b"));
    let f = feed();
    a.create(&f, id("t1"), draft("milk"), &ann_a, t(0)).unwrap();
    b.create(&f, id("t2"), draft("eggs"), &ann_b, t(0)).unwrap();
    let (ra, _) = sync(&mut a, &mut hub, 100);
    assert_eq!((ra.sent, ra.received), (1, 0));
    let (rb, ev) = sync(&mut b, &mut hub, 100);
    assert_eq!((rb.sent, rb.received, rb.added), (1, 1, 1));
    assert!(ev.iter().any(|e| matches!(e, SessionEvent::Acknowledged { result, .. } if result.outcome == MergeOutcome::Added)));
    sync(&mut a, &mut hub, 100);
    assert_eq!(titles(&a), titles(&b));
    assert_eq!(titles(&a).len(), 2);

    // Concurrent edits of t1: the later one wins everywhere, the other is kept as a conflict.
    a.update(&f, &id("t1"), draft("milk (A)"), &ann_a, t(10))
        .unwrap();
    b.update(&f, &id("t1"), draft("milk (B)"), &ann_b, t(11))
        .unwrap();
    sync(&mut a, &mut hub, 100);
    let (_, ev) = sync(&mut b, &mut hub, 100);
    let conflict = ev.iter().any(|e| matches!(e, SessionEvent::Merged { report, .. } if report.outcome == MergeOutcome::Conflict));
    assert!(conflict, "b must see a conflict event: {ev:?}");
    sync(&mut a, &mut hub, 100);
    assert_eq!(titles(&a), titles(&b));
    assert!(titles(&a).contains(&("t1".into(), "milk (B)".into(), 1)));

    // Resolve on a; it reaches b without a new conflict.
    a.resolve(
        &f,
        &id("t1"),
        Resolution::Write(draft("milk (A+B)")),
        &ann_a,
        t(20),
    )
    .unwrap();
    sync(&mut a, &mut hub, 100);
    let (_, ev) = sync(&mut b, &mut hub, 100);
    assert!(titles(&b).contains(&("t1".into(), "milk (A+B)".into(), 0)));
    // The merge says it cleared b's conflict; no other merge says so.
    let resolved: Vec<bool> = ev
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Merged { report, .. } => Some(report.resolved),
            _ => None,
        })
        .collect();
    assert_eq!(resolved, vec![true], "{ev:?}");
    a.update(&f, &id("t1"), draft("milk (A+B), 2"), &ann_a, t(30))
        .unwrap();
    sync(&mut a, &mut hub, 100);
    let (_, ev) = sync(&mut b, &mut hub, 100);
    assert!(
        ev.iter()
            .any(|e| matches!(e, SessionEvent::Merged { report, .. }
            if report.outcome == MergeOutcome::Updated && !report.resolved)),
        "a plain update clears nothing: {ev:?}"
    );
    assert_eq!(titles(&a), titles(&b));
    assert_eq!(titles(&hub), titles(&b));
}

#[test]
fn nothing_is_sent_back_to_where_it_came_from() {
    let (mut a, mut hub) = (replica("a"), replica("hub"));
    let me = actor("ann", "a");
    for i in 0..50 {
        a.create(&feed(), id(&format!("e{i}")), draft("x"), &me, t(0))
            .unwrap();
    }
    let (r1, _) = sync(&mut a, &mut hub, 7);
    assert_eq!((r1.sent, r1.received), (50, 0));
    let (r2, _) = sync(&mut a, &mut hub, 7);
    assert_eq!(
        (r2.sent, r2.received),
        (0, 0),
        "the hub's copies came from a: nothing to move"
    );
    // The hub pulls from nobody; a second device gets everything exactly once.
    let mut b = replica("b");
    let (rb, _) = sync(&mut b, &mut hub, 7);
    assert_eq!((rb.sent, rb.received, rb.added), (0, 50, 50));
    let (rb2, _) = sync(&mut b, &mut hub, 7);
    assert_eq!((rb2.sent, rb2.received), (0, 0));
    assert!(
        rb2.requests <= 1,
        "caught up: only the feeds request ({} sent)",
        rb2.requests
    );
}

#[test]
fn an_interrupted_session_resumes_from_durable_cursors() {
    let (mut a, mut hub) = (replica("a"), replica("hub"));
    let me = actor("ann", "a");
    for i in 0..40 {
        hub.create(&feed(), id(&format!("h{i}")), draft("from hub"), &me, t(0))
            .unwrap();
        a.create(&feed(), id(&format!("a{i}")), draft("from a"), &me, t(0))
            .unwrap();
    }
    // Cut sessions off after a few exchanges, and lose some responses on the way.
    for cut in [3, 4, 5, 6, 2] {
        let mut s = SyncSession::new(config(5));
        for n in 0..cut {
            match s.poll(&mut a).unwrap() {
                Step::Send(req) => {
                    let resp = respond(&mut hub, req).unwrap();
                    if n + 1 == cut && cut % 2 == 0 {
                        break; // the response never arrives: the session is abandoned
                    }
                    s.receive(&mut a, resp).unwrap();
                }
                Step::Done(_) => break,
            }
        }
    }
    let (report, _) = sync(&mut a, &mut hub, 5);
    assert!(
        report.received < 40 || report.sent < 40,
        "some progress was kept: {report:?}"
    );
    assert_eq!(titles(&a), titles(&hub));
    assert_eq!(titles(&a).len(), 80);
    let state = a
        .store()
        .sync_state(&"hub".parse().unwrap(), &feed())
        .unwrap();
    assert_eq!(
        state.remote_replica.as_ref().map(|r| r.as_str()),
        Some("hub")
    );
    // The hub's head moved past `pulled` with a's own pushes; the next session only skips them.
    let (again, _) = sync(&mut a, &mut hub, 5);
    assert_eq!((again.received, again.sent), (0, 0));
    let state = a
        .store()
        .sync_state(&"hub".parse().unwrap(), &feed())
        .unwrap();
    assert_eq!(state.pulled, hub.store().head(&feed()).unwrap());
    assert_eq!(state.pushed, a.store().head(&feed()).unwrap());
}

#[test]
fn a_replaced_hub_gets_everything_again() {
    let (mut a, mut hub) = (replica("a"), replica("hub"));
    let me = actor("ann", "a");
    for i in 0..10 {
        a.create(&feed(), id(&format!("e{i}")), draft("x"), &me, t(0))
            .unwrap();
    }
    sync(&mut a, &mut hub, 100);
    let mut new_hub = replica("hub-restored-empty");
    let (r, _) = sync(&mut a, &mut new_hub, 100);
    assert_eq!(r.sent, 10);
    assert_eq!(titles(&new_hub), titles(&a));
}

#[test]
fn protocol_misuse_is_a_typed_error() {
    let (mut a, mut hub) = (replica("a"), replica("hub"));
    let me = actor("ann", "a");
    a.create(&feed(), id("e"), draft("x"), &me, t(0)).unwrap();
    let mut s = SyncSession::new(config(10));
    let Step::Send(req) = s.poll(&mut a).unwrap() else {
        panic!()
    };
    assert!(matches!(req, Request::Feeds { .. }));
    assert_eq!(
        s.poll(&mut a).unwrap_err().code(),
        ErrorCode::Protocol,
        "poll while waiting"
    );
    let wrong = Response::Pushed {
        feed: feed(),
        results: vec![],
    };
    assert_eq!(
        s.receive(&mut a, wrong).unwrap_err().code(),
        ErrorCode::Protocol
    );
    s.receive(&mut a, respond(&mut hub, req).unwrap()).unwrap();
    let Step::Send(Request::PushEncoded { .. }) = s.poll(&mut a).unwrap() else {
        panic!("expected a push")
    };
    // An acknowledgement of the wrong size is refused and moves no cursor.
    let short = Response::Pushed {
        feed: feed(),
        results: vec![],
    };
    assert_eq!(
        s.receive(&mut a, short).unwrap_err().code(),
        ErrorCode::Protocol
    );
    assert_eq!(
        a.store()
            .sync_state(&"hub".parse().unwrap(), &feed())
            .unwrap(),
        SyncState::default()
    );

    // A peer whose cursor goes backwards is refused too.
    let mut s = SyncSession::new(config(10));
    let Step::Send(req) = s.poll(&mut a).unwrap() else {
        panic!()
    };
    hub.create(&feed(), id("h"), draft("y"), &me, t(0)).unwrap();
    hub.create(&feed(), id("h2"), draft("y"), &me, t(0))
        .unwrap();
    s.receive(&mut a, respond(&mut hub, req).unwrap()).unwrap();
    let Step::Send(Request::Pull { since, .. }) = s.poll(&mut a).unwrap() else {
        panic!("expected a pull")
    };
    assert_eq!(since, Cursor::ZERO);
    let stuck = Response::Changes {
        feed: feed(),
        entries: vec![],
        next: Cursor::ZERO,
        more: true,
    };
    assert_eq!(
        s.receive(&mut a, stuck).unwrap_err().code(),
        ErrorCode::Protocol
    );
}

/// Runs a whole session of `local` against `hub`, which announces `epoch`.
fn sync_epoch(local: &mut R, hub: &mut R, epoch: &Epoch) -> (SyncReport, Vec<SessionEvent>) {
    let mut s = SyncSession::new(config(100));
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match s.poll(local).unwrap() {
            Step::Send(req) => {
                let resp = match respond(hub, req).unwrap() {
                    Response::Feeds { replica, feeds, .. } => Response::Feeds {
                        replica,
                        feeds,
                        epoch: Some(epoch.clone()),
                        revocations: Vec::new(),
                        certificates: Vec::new(),
                    },
                    other => other,
                };
                events.extend(s.receive(local, resp).unwrap());
            }
            Step::Done(report) => return (report, events),
        }
    }
    panic!("session did not finish");
}

fn epoch(id: &str, continues: &[&str]) -> Epoch {
    Epoch {
        id: id.into(),
        continues: continues.iter().map(|c| c.to_string()).collect(),
    }
}

fn resets(events: &[SessionEvent]) -> Vec<&SessionEvent> {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::RemoteReset { .. }))
        .collect()
}

#[test]
fn a_hub_restored_from_an_older_copy_gets_everything_it_lost_back() {
    // Device a wrote ten entries; the hub took them in epoch e1. A copy of the hub taken after
    // the first five (here: a hub of the same name holding only those, fed by device c) is
    // restored and opens epoch e2, which does not continue e1.
    let mut a = replica("a");
    let me = actor("ann", "a");
    for i in 0..10 {
        a.create(&feed(), id(&format!("e{i}")), draft("x"), &me, t(0))
            .unwrap();
    }
    let mut hub = replica("hub");
    let (r, events) = sync_epoch(&mut a, &mut hub, &epoch("e1", &[]));
    assert_eq!(r.sent, 10);
    assert!(resets(&events).is_empty(), "a first sync is no reset");
    let mut restored = replica("hub");
    let mut only_five = replica("c");
    for e in a.store().list(&feed(), None, 5).unwrap() {
        only_five.merge_batch(&feed(), vec![e], None).unwrap();
    }
    sync(&mut only_five, &mut restored, 100);
    assert_eq!(restored.store().list(&feed(), None, 100).unwrap().len(), 5);

    // Without an epoch, a would trust its cursors and the restored hub would never get the
    // other five back.
    let (r, events) = sync_epoch(&mut a, &mut restored, &epoch("e2", &[]));
    assert_eq!(r.sent, 10, "everything is offered again");
    assert_eq!(titles(&restored), titles(&a));
    let reset = resets(&events);
    assert_eq!(reset.len(), 1);
    let SessionEvent::RemoteReset {
        previous,
        now,
        feeds,
    } = reset[0]
    else {
        unreachable!()
    };
    assert_eq!(previous.as_str(), "hub@e1");
    assert_eq!(now.as_str(), "hub@e2");
    assert_eq!(*feeds, 1);

    // The next session of the same epoch starts from where this one ended.
    let (r, events) = sync_epoch(&mut a, &mut restored, &epoch("e2", &[]));
    assert_eq!((r.sent, r.received), (0, 0));
    assert!(resets(&events).is_empty());
}

#[test]
fn a_cleanly_continued_epoch_keeps_the_cursors() {
    let mut a = replica("a");
    let mut hub = replica("hub");
    let me = actor("ann", "a");
    for i in 0..10 {
        a.create(&feed(), id(&format!("e{i}")), draft("x"), &me, t(0))
            .unwrap();
    }
    sync_epoch(&mut a, &mut hub, &epoch("e1", &[]));
    a.create(&feed(), id("e10"), draft("x"), &me, t(0)).unwrap();
    let (r, events) = sync_epoch(&mut a, &mut hub, &epoch("e2", &["e1"]));
    assert_eq!((r.sent, r.received), (1, 0), "only the new entry travels");
    assert!(resets(&events).is_empty());
    // An epoch that neither is nor continues the stored one starts over.
    let (r, events) = sync_epoch(&mut a, &mut hub, &epoch("e3", &["e1"]));
    assert_eq!(r.sent, 11);
    assert_eq!(resets(&events).len(), 1);
}

#[test]
fn a_malformed_epoch_is_a_protocol_error() {
    let mut a = replica("a");
    let me = actor("ann", "a");
    a.create(&feed(), id("e"), draft("x"), &me, t(0)).unwrap();
    let bad = [
        epoch("", &[]),
        epoch("a/b", &[]),
        epoch(&"x".repeat(65), &[]),
        Epoch {
            id: "ok".into(),
            continues: (0..65).map(|i| format!("c{i}")).collect(),
        },
    ];
    for e in bad {
        let mut s = SyncSession::new(config(10));
        let Step::Send(_) = s.poll(&mut a).unwrap() else {
            panic!()
        };
        let resp = Response::Feeds {
            replica: "hub".parse().unwrap(),
            feeds: Vec::new(),
            epoch: Some(e),
            revocations: Vec::new(),
            certificates: Vec::new(),
        };
        let err = s.receive(&mut a, resp).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Protocol, "{err}");
    }
}

/// Runs a session with `config`, recording the requests it sends.
fn sync_with(local: &mut R, hub: &mut R, config: SessionConfig) -> (SyncReport, Vec<Request>) {
    let mut s = SyncSession::new(config);
    let mut sent = Vec::new();
    for _ in 0..10_000 {
        match s.poll(local).unwrap() {
            Step::Send(req) => {
                sent.push(req.clone());
                let resp = respond(hub, req).unwrap();
                s.receive(local, resp).unwrap();
            }
            Step::Done(report) => return (report, sent),
        }
    }
    panic!("session did not finish");
}

fn known_config(replica: &str, head: Option<u64>) -> SessionConfig {
    let mut c = config(100);
    c.feeds = mesh_core::sync::FeedFilter::Only([feed()].into_iter().collect());
    c.known = Some(mesh_core::sync::KnownRemote {
        replica: replica.parse().unwrap(),
        heads: head.map(|h| (feed(), Cursor(h))).into_iter().collect(),
    });
    c
}

#[test]
fn a_known_remote_is_not_asked_for_its_feeds() {
    let (mut a, mut b, mut hub) = (replica("a"), replica("b"), replica("hub"));
    let f = feed();
    a.create(&f, id("t1"), draft("milk"), &actor("ann", "a"), t(0))
        .unwrap();
    sync(&mut a, &mut hub, 100);
    sync(&mut b, &mut hub, 100);

    // A local write: one push, no `feeds`, no pull.
    a.create(&f, id("t2"), draft("eggs"), &actor("ann", "a"), t(1))
        .unwrap();
    let (report, sent) = sync_with(&mut a, &mut hub, known_config("hub", None));
    assert!(
        matches!(sent.as_slice(), [Request::PushEncoded { entries, .. }] if entries.len() == 1),
        "{sent:?}"
    );
    assert_eq!(report.sent, 1);

    // B told of the new head: one pull, nothing else.
    let head = hub.store().head(&f).unwrap();
    let (report, sent) = sync_with(&mut b, &mut hub, known_config("hub", Some(head.0)));
    assert!(
        matches!(sent.as_slice(), [Request::Pull { .. }]),
        "{sent:?}"
    );
    assert_eq!((report.received, report.added), (1, 1));
    assert_eq!(titles(&a), titles(&b));

    // Told of a head it has: nothing to send at all.
    let (_, sent) = sync_with(&mut b, &mut hub, known_config("hub", Some(head.0)));
    assert!(sent.is_empty(), "{sent:?}");

    // Cursors kept under another name (another replica or epoch): `feeds` is asked, and the
    // session starts over with the remote as usual.
    let (_, sent) = sync_with(&mut b, &mut hub, known_config("hub@old", Some(head.0)));
    assert!(
        matches!(sent.first(), Some(Request::Feeds { .. })),
        "{sent:?}"
    );
}

/// A session told a remote head pulls up to it and no further, even when answers say more
/// follow; `pull_ends` says where that is while the pull runs, so a caller asking for pages
/// ahead stops there too.
#[test]
fn a_pull_ends_at_the_head_the_session_was_told() {
    let (mut a, mut b, mut hub) = (replica("a"), replica("b"), replica("hub"));
    let f = feed();
    let write = |a: &mut R, hub: &mut R, from: i64, to: i64| {
        for i in from..to {
            let title = format!("n{i}");
            a.create(&f, id(&title), draft(&title), &actor("ann", "a"), t(i))
                .unwrap();
        }
        sync(a, hub, 100);
        hub.store().head(&f).unwrap()
    };
    write(&mut a, &mut hub, 0, 1);
    sync(&mut b, &mut hub, 100);
    // B is told of the head after four more writes; three more follow before it pulls.
    let told = write(&mut a, &mut hub, 1, 5);
    let head = write(&mut a, &mut hub, 5, 8);
    assert!(head > told);

    // And B has a change of its own to push after its pull.
    b.create(&f, id("mine"), draft("mine"), &actor("ann", "b"), t(9))
        .unwrap();
    let mut config = known_config("hub", Some(told.0));
    config.page_size = 2;
    let mut s = SyncSession::new(config);
    let mut pulled_from = Vec::new();
    let other: mesh_core::model::FeedKey = "folder:f9/other".parse().unwrap();
    while let Step::Send(req) = s.poll(&mut b).unwrap() {
        match &req {
            Request::Pull { since, .. } => {
                pulled_from.push(*since);
                assert_eq!(s.pull_ends(&f), Some(told), "while pulling");
                assert_eq!(s.pull_ends(&other), None, "another feed");
            }
            _ => assert_eq!(s.pull_ends(&f), None, "while pushing: {req:?}"),
        }
        let resp = respond(&mut hub, req).unwrap();
        s.receive(&mut b, resp).unwrap();
    }
    assert!(!pulled_from.is_empty());
    assert!(
        pulled_from.iter().all(|since| *since < told),
        "{pulled_from:?}"
    );
    assert_eq!(s.pull_ends(&f), None, "after the pull");
    assert!(b.store().head(&f).unwrap() < hub.store().head(&f).unwrap());
}

/// `next_push` names, while a push is awaited, exactly the request `poll` makes once that
/// push is acknowledged: the next page of the same feed, or nothing after its last page.
/// Sending it early and answering it out of turn loses nothing.
#[test]
fn the_next_push_is_what_the_session_asks_for_after_the_acknowledgement() {
    let (mut a, mut hub) = (replica("a"), replica("hub"));
    let ann = actor("ann", "a");
    for i in 0..7 {
        a.create(&feed(), id(&format!("t{i}")), draft("x"), &ann, t(i))
            .unwrap();
    }
    let mut s = SyncSession::new(config(2));
    let mut peeked: Option<Request> = None;
    let (mut checked, mut last_pages) = (0, 0);
    for _ in 0..100 {
        let step = s.poll(&mut a).unwrap();
        let Step::Send(req) = step else { break };
        if let Some(p) = peeked.take() {
            assert_eq!(p, req, "the peeked push is the one asked for");
            checked += 1;
        }
        let is_push = matches!(req, Request::PushEncoded { .. });
        // Answer the early push first, then the awaited one: merging is order-free.
        let resp = respond(&mut hub, req).unwrap();
        if is_push {
            peeked = s.next_push(&a).unwrap();
            if peeked.is_none() {
                last_pages += 1;
            }
            if let Some(p) = peeked.clone() {
                respond(&mut hub, p).unwrap();
            }
        }
        s.receive(&mut a, resp).unwrap();
    }
    // 7 entries in pages of 2: 4 pushes, the last 3 peeked ahead, 1 last page.
    assert_eq!((checked, last_pages), (3, 1));
    assert!(peeked.is_none());
    assert_eq!(titles(&hub).len(), 7);
    // A second session has nothing to push: the cursor covers all of it.
    let (r, _) = sync(&mut a, &mut hub, 2);
    assert_eq!(r.sent, 0);
}

/// `push_ahead`, chained `depth` deep while a push is awaited, names exactly the pushes
/// `poll` then asks for in turn, whatever the number of entries, the page size and the depth;
/// answering them in reverse order (as a remote merging them at once may) loses nothing, and
/// the cursor covers every entry at the end.
#[test]
fn pushes_sent_ahead_are_the_ones_the_session_asks_for_in_turn() {
    use proptest::prelude::*;
    proptest!(ProptestConfig::with_cases(48), |(n in 0usize..30, page in 1u32..6, depth in 1usize..4)| {
        let (mut a, mut hub) = (replica("a"), replica("hub"));
        let ann = actor("ann", "a");
        for i in 0..n {
            a.create(&feed(), id(&format!("t{i}")), draft("x"), &ann, t(i as i64))
                .unwrap();
        }
        let mut s = SyncSession::new(config(page));
        let mut ahead: std::collections::VecDeque<Request> = Default::default();
        let mut after = None;
        let (mut pushes, mut matched) = (0usize, 0usize);
        for _ in 0..500 {
            let Step::Send(req) = s.poll(&mut a).unwrap() else { break };
            let is_push = matches!(req, Request::PushEncoded { .. });
            if let Some(p) = ahead.pop_front() {
                prop_assert_eq!(&p, &req, "a push sent ahead is the one asked for");
                matched += 1;
            } else {
                after = None;
            }
            let resp = respond(&mut hub, req).unwrap();
            if is_push {
                pushes += 1;
                let mut sent = Vec::new();
                while ahead.len() < depth {
                    let Some((p, place)) = s.push_ahead(&a, after).unwrap() else { break };
                    after = Some(place);
                    sent.push(p.clone());
                    ahead.push_back(p);
                }
                for p in sent.into_iter().rev() {
                    respond(&mut hub, p).unwrap();
                }
            }
            s.receive(&mut a, resp).unwrap();
        }
        prop_assert!(ahead.is_empty(), "nothing is left sent ahead and not asked for");
        let want_pushes = n.div_ceil(page as usize);
        prop_assert_eq!(pushes, want_pushes);
        prop_assert_eq!(matched, want_pushes.saturating_sub(1));
        prop_assert_eq!(titles(&hub).len(), n);
        let (r, _) = sync(&mut a, &mut hub, page);
        prop_assert_eq!(r.sent, 0);
    });
}

/// Pages are bounded by bytes as well as by count: entries of 1.5 MiB travel in pushes and
/// pulls of at most `MAX_PAGE_BYTES` (by their JSON), one entry larger than that travels
/// alone, and everything arrives.
#[test]
fn pages_of_large_entries_are_cut_by_bytes() {
    use mesh_core::sync::MAX_PAGE_BYTES;
    let (mut a, mut hub, mut b) = (replica("a"), replica("hub"), replica("b"));
    let ann = actor("ann", "a");
    let big = "x".repeat(1_500_000);
    for i in 0..12 {
        let d = mesh_core::model::EntryDraft::new(format!("t{i}"), serde_json::json!({ "s": big }));
        a.create(&feed(), id(&format!("t{i}")), d, &ann, t(i))
            .unwrap();
    }
    let huge =
        mesh_core::model::EntryDraft::new("huge", serde_json::json!({ "s": "y".repeat(9 << 20) }));
    a.create(&feed(), id("huge"), huge, &ann, t(20)).unwrap();
    let mut largest = 0usize;
    for from in [&mut a, &mut b] {
        let to = &mut hub;
        let mut s = SyncSession::new(config(500));
        for _ in 0..100 {
            let Step::Send(req) = s.poll(from).unwrap() else {
                break;
            };
            let resp = respond(to, req.clone()).unwrap();
            let req = req.decoded().unwrap();
            for (entries, what) in [
                (
                    match &req {
                        Request::Push { entries, .. } => Some(entries),
                        _ => None,
                    },
                    "push",
                ),
                (
                    match &resp {
                        Response::Changes { entries, .. } => Some(entries),
                        _ => None,
                    },
                    "pull",
                ),
            ] {
                let Some(entries) = entries else { continue };
                let len = serde_json::to_string(entries).unwrap().len();
                if entries.len() > 1 {
                    assert!(
                        len <= MAX_PAGE_BYTES,
                        "a {what} of {} entries: {len} bytes",
                        entries.len()
                    );
                    largest = largest.max(entries.len());
                }
            }
            s.receive(from, resp).unwrap();
        }
    }
    assert!(largest >= 2, "pages still hold several entries");
    assert_eq!(titles(&hub).len(), 13);
    assert_eq!(titles(&b).len(), 13);
}

/// `ChangePage::within` keeps a prefix of the page whose bounds fit (always at least one
/// change), and a cut page ends at its last change kept and says more follow.
#[test]
fn a_page_cut_by_bytes_is_a_prefix_that_resumes_where_it_ends() {
    use proptest::prelude::*;
    proptest!(ProptestConfig::with_cases(64), |(sizes in proptest::collection::vec(0usize..5000, 0..12), budget in 0usize..20_000, more: bool)| {
        let mut r = replica("a");
        let ann = actor("ann", "a");
        for (i, n) in sizes.iter().enumerate() {
            let d = mesh_core::model::EntryDraft::new("t", serde_json::json!({ "s": "z".repeat(*n) }));
            r.create(&feed(), id(&format!("t{i}")), d, &ann, t(i as i64)).unwrap();
        }
        let mut page = r.changes_since(&feed(), Cursor::ZERO, 100).unwrap();
        page.more = more;
        let cut = page.clone().within(budget);
        prop_assert_eq!(&cut.changes[..], &page.changes[..cut.changes.len()]);
        let bounds: usize = cut.changes.iter().map(|c| c.entry.wire_len_bound()).sum();
        if cut.changes.len() > 1 {
            prop_assert!(bounds <= budget);
        }
        if page.changes.is_empty() {
            prop_assert_eq!(cut, page);
        } else if cut.changes.len() < page.changes.len() {
            prop_assert!(!cut.changes.is_empty());
            prop_assert_eq!(cut.next, cut.changes.last().unwrap().seq);
            prop_assert!(cut.more);
            let with_next = bounds + page.changes[cut.changes.len()].entry.wire_len_bound();
            prop_assert!(with_next > budget, "cut before a change that fits");
        } else {
            prop_assert_eq!(cut, page);
        }
    });
}

/// A peer that asks about a few feeds is answered by looking those up by key: the answer is
/// what the full listing says about them (each once, unknown ones left out), and it is given
/// without going through the replica's other feeds, which on a hub are every user's.
#[test]
fn feeds_asked_about_by_name_are_looked_up_by_key() {
    let mut hub = replica("hub");
    let ann = actor("ann", "a");
    let key =
        |n: u32| -> mesh_core::model::FeedKey { format!("folder:f{n}/todos").parse().unwrap() };
    for n in 0..20 {
        for e in 0..=n % 3 {
            hub.create(&key(n), id(&format!("e{e}")), draft("x"), &ann, t(0))
                .unwrap();
        }
    }
    let ask = |only: Option<Vec<mesh_core::model::FeedKey>>| Request::Feeds {
        from: "b".parse().unwrap(),
        only,
        certificates: false,
    };
    let Response::Feeds { feeds: all, .. } = respond(&mut hub, ask(None)).unwrap() else {
        panic!()
    };
    assert_eq!(all.len(), 20);
    let asked = vec![key(7), key(2), key(7), key(99), key(13)];
    let mut want: Vec<_> = all
        .iter()
        .filter(|h| asked.contains(&h.feed))
        .cloned()
        .collect();
    want.sort_by(|a, b| a.feed.cmp(&b.feed));

    let mut unlisted = Replica::new(Unlisted(hub.into_store()));
    let Response::Feeds { feeds, .. } = respond(&mut unlisted, ask(Some(asked))).unwrap() else {
        panic!()
    };
    assert_eq!(feeds, want);
    let Response::Feeds { feeds, .. } = respond(&mut unlisted, ask(Some(vec![]))).unwrap() else {
        panic!()
    };
    assert!(feeds.is_empty(), "{feeds:?}");
    // The wrapper is no pretence: a request for every feed does need the listing.
    assert_eq!(
        respond(&mut unlisted, ask(None)).unwrap_err().code(),
        ErrorCode::Store
    );
}

/// A `feeds` request naming more than `MAX_ONLY` feeds is refused before any is looked up;
/// a session limited to more feeds than that asks about every feed instead, and still syncs
/// only its own.
#[test]
fn a_feeds_request_names_at_most_max_only_feeds() {
    use mesh_core::sync::{FeedFilter, MAX_ONLY};
    let mut hub = replica("hub");
    let ann = actor("ann", "a");
    let key =
        |n: usize| -> mesh_core::model::FeedKey { format!("folder:f{n}/todos").parse().unwrap() };
    hub.create(&key(0), id("t"), draft("mine"), &ann, t(0))
        .unwrap();
    hub.create(&key(MAX_ONLY + 5), id("t"), draft("not mine"), &ann, t(0))
        .unwrap();
    let ask = |n: usize| Request::Feeds {
        from: "b".parse().unwrap(),
        only: Some((0..n).map(key).collect()),
        certificates: false,
    };
    assert!(respond(&mut hub, ask(MAX_ONLY)).is_ok());
    assert_eq!(
        respond(&mut hub, ask(MAX_ONLY + 1)).unwrap_err().code(),
        ErrorCode::Protocol
    );

    let mut b = replica("b");
    let mut c = config(100);
    c.feeds = FeedFilter::Only((0..=MAX_ONLY).map(key).collect());
    let (_, sent) = sync_with(&mut b, &mut hub, c);
    assert!(
        matches!(sent.first(), Some(Request::Feeds { only: None, .. })),
        "{:?}",
        sent.first().map(|r| matches!(r, Request::Feeds { .. }))
    );
    assert_eq!(b.store().feeds().unwrap().len(), 1, "only its own feed");
    assert!(b.get(&key(0), &id("t")).unwrap().is_some());
}
