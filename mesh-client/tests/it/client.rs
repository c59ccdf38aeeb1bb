//! The client API against an in-process hub.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use mesh_client::transport::{
    InProcessHub, Notification, SimConfig, SimNetwork, Transport, TransportError,
};
use mesh_client::{ChangeKind, ChangeSource, ErrorKind, Event, SyncOptions};
use mesh_core::model::{EntryDraft, FeedKey, Field, Filter, Query, Role};
use mesh_core::replica::Resolution;
use mesh_core::store::Store;
use mesh_core::sync::{Request, Response};
use serde_json::json;

use crate::common::*;

fn draft(title: &str, v: serde_json::Value) -> EntryDraft {
    EntryDraft::new(title, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_locally_and_refusals_write_nothing() {
    let hub = InProcessHub::new();
    let ann = client("ann", "ann-1", hub.connect("ann".parse().unwrap())).await;
    let bob = client("bob", "bob-1", hub.connect("bob".parse().unwrap())).await;
    let eve = client("eve", "eve-1", hub.connect("eve".parse().unwrap())).await;
    let folder = ann
        .create_folder("Shared", "app/test".parse().unwrap())
        .await
        .unwrap();
    let feed = ann
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let note = ann
        .put(&folder.id, &feed, draft("ann's", json!(1)))
        .await
        .unwrap();
    ann.invite(&folder.id, &"bob".parse().unwrap(), Role::Reader)
        .await
        .unwrap();
    settle(&[&ann, &bob, &eve]).await;

    // Eve is no member: she sees nothing of the folder, and cannot write.
    assert!(eve.folders().await.unwrap().is_empty());
    assert_eq!(
        eve.put(&folder.id, &feed, draft("x", json!(0)))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    // Bob, invited as Reader, cannot read before accepting, then reads but never writes.
    assert_eq!(
        bob.query(&folder.id, &feed, Query::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    bob.accept(&folder.id).await.unwrap();
    settle(&[&bob, &ann, &bob]).await;
    assert_eq!(
        bob.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        1
    );
    let heads_before = hub.inspect(|r| r.store().feeds().unwrap());
    for refused in [
        bob.put(&folder.id, &feed, draft("bob's", json!(2))).await,
        bob.put_with_id(
            &folder.id,
            &feed,
            note.sync.id.clone(),
            draft("edited", json!(3)),
        )
        .await,
    ] {
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::PermissionDenied);
    }
    assert_eq!(
        bob.delete(&folder.id, &feed, &note.sync.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        bob.invite(&folder.id, &"eve".parse().unwrap(), Role::Reader)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    settle(&[&bob, &ann]).await;
    assert_eq!(
        hub.inspect(|r| r.store().feeds().unwrap()).len(),
        heads_before.len()
    );
    assert_eq!(
        ann.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        1,
        "nothing of bob's arrived"
    );

    // Promoted to Author, bob writes his own entries but not ann's.
    ann.set_role(&folder.id, &"bob".parse().unwrap(), Role::Author)
        .await
        .unwrap();
    settle(&[&ann, &bob]).await;
    bob.put(&folder.id, &feed, draft("bob's", json!(2)))
        .await
        .unwrap();
    assert_eq!(
        bob.delete(&folder.id, &feed, &note.sync.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    settle(&[&bob, &ann]).await;
    assert_eq!(
        ann.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        2
    );
    // The last owner cannot leave or be demoted.
    assert_eq!(
        ann.remove_member(&folder.id, &"ann".parse().unwrap())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        ann.set_role(&folder.id, &"ann".parse().unwrap(), Role::Full)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_queue_and_sync_on_reconnect_with_a_conflict_event() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let (t1, _) = net.wrap(hub.connect("ann".parse().unwrap()));
    let (t2, link2) = net.wrap(hub.connect("ann".parse().unwrap()));
    let a = client("ann", "a", t1).await;
    let b = client("ann", "b", t2).await;
    let folder = a
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let item = a
        .put(&folder.id, &feed, draft("v0", json!(0)))
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    assert_eq!(b.folders().await.unwrap().len(), 1);

    link2.set_online(false);
    let mut events = b.events();
    for i in 0..5 {
        b.put(&folder.id, &feed, draft(&format!("offline {i}"), json!(i)))
            .await
            .unwrap();
    }
    b.put_with_id(
        &folder.id,
        &feed,
        item.sync.id.clone(),
        draft("b's edit", json!(1)),
    )
    .await
    .unwrap();
    a.put_with_id(
        &folder.id,
        &feed,
        item.sync.id.clone(),
        draft("a's edit", json!(2)),
    )
    .await
    .unwrap();
    a.sync_now().await.unwrap();
    let err = b.sync_now().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Offline);
    assert_eq!(
        b.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        6,
        "local writes work offline"
    );

    link2.set_online(true);
    b.sync_now().await.unwrap();
    let mut conflict = false;
    let mut offline = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        match e {
            Event::EntryChanged {
                kind: ChangeKind::Conflict,
                ref id,
                source: ChangeSource::Remote(_),
                ..
            } if id == &item.sync.id => conflict = true,
            Event::Offline { .. } => offline = true,
            Event::Online { .. } if conflict => break,
            _ => {}
        }
    }
    assert!(offline && conflict);
    settle(&[&a, &b]).await;
    let conflicts = a.conflicts(&folder.id).await.unwrap();
    assert_eq!(conflicts.len(), 1);
    a.resolve(&folder.id, &feed, &item.sync.id, Resolution::Pick(1))
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    let qa = a.query(&folder.id, &feed, Query::new()).await.unwrap();
    assert_eq!(qa, b.query(&folder.id, &feed, Query::new()).await.unwrap());
    assert_eq!(qa.len(), 6);
    assert!(b.conflicts(&folder.id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_filter_and_queries_filter_order_and_page() {
    let hub = InProcessHub::new();
    let a = client("ann", "a", hub.connect("ann".parse().unwrap())).await;
    let folder = a
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let other = a
        .create_folder("G", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    a.create_feed(&other.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let mut sub = a.subscribe(&folder.id, Some(&feed));
    a.put(&other.id, &feed, draft("elsewhere", json!({})))
        .await
        .unwrap();
    for (t, n, done) in [
        ("c", 3, false),
        ("a", 1, true),
        ("b", 2, false),
        ("d", 4, true),
    ] {
        a.put(&folder.id, &feed, draft(t, json!({"n": n, "done": done})))
            .await
            .unwrap();
    }
    let first = sub.next().await.unwrap();
    assert!(
        matches!(first, Event::EntryChanged { ref feed, kind: ChangeKind::Added, .. } if feed.scope == mesh_core::model::Scope::Folder(folder.id.clone()))
    );
    drop(sub);

    let q = Query::new()
        .filter(
            Filter::eq(Field::content("done"), json!(false))
                .or(Filter::gt(Field::content("n"), json!(3))),
        )
        .order_by(Field::content("n"), true);
    let titles = |v: Vec<mesh_core::model::Entry>| {
        v.into_iter().map(|e| e.content.title).collect::<Vec<_>>()
    };
    assert_eq!(
        titles(a.query(&folder.id, &feed, q.clone()).await.unwrap()),
        ["d", "c", "b"]
    );
    assert_eq!(
        titles(a.query(&folder.id, &feed, q.skip(1).top(1)).await.unwrap()),
        ["c"]
    );
    let by_title = Query::new()
        .order_by(Field::Title, false)
        .filter(Filter::lt(Field::Title, json!("c")));
    assert_eq!(
        titles(a.query(&folder.id, &feed, by_title).await.unwrap()),
        ["a", "b"]
    );
    // Reserved feed names are refused; an unknown folder is a permission error, not a crash.
    assert!(a
        .put(
            &folder.id,
            &"members".parse().unwrap(),
            draft("x", json!(0))
        )
        .await
        .is_err());
    let nowhere: mesh_core::id::FolderId = "no-such-folder".parse().unwrap();
    assert_eq!(
        a.query(&nowhere, &feed, Query::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
}

/// Counts calls and always fails: the engine must back off, not spin.
struct Unreachable(Arc<AtomicUsize>);

#[async_trait]
impl Transport for Unreachable {
    async fn send(&self, _: Request) -> Result<Response, TransportError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(TransportError::Offline("nobody home".into()))
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        Err(TransportError::Offline("nobody home".into()))
    }
    fn describe(&self) -> String {
        "unreachable".into()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_remote_is_retried_with_backoff_not_a_busy_loop() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = builder("ann", "a")
        .remote("hub".parse().unwrap(), Unreachable(calls.clone()))
        .sync_options(
            SyncOptions::default()
                .with_backoff_min(Duration::from_millis(100))
                .with_backoff_max(Duration::from_secs(10)),
        )
        .build()
        .await
        .unwrap();
    let mut events = c.events();
    // Ten virtual minutes pass in an instant with the paused clock.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let n = calls.load(Ordering::SeqCst);
    assert!(
        (20..=200).contains(&n),
        "{n} attempts in 10 minutes: expected backoff capped at 10 s"
    );
    // The first event that is not a status change.
    let first = loop {
        let e = events.next().await.unwrap();
        if !matches!(e, Event::Status { .. }) {
            break e;
        }
    };
    assert!(
        matches!(
            first,
            Event::SyncError { retrying: true, .. } | Event::Offline { .. }
        ),
        "{first:?}"
    );
    // Writes still work locally.
    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    assert!(c.folder(&f.id).await.unwrap().is_some());
    c.close();
    assert_eq!(c.sync_now().await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_mappings_and_news() {
    let hub = InProcessHub::new();
    let a = client("ann", "laptop", hub.connect("ann".parse().unwrap())).await;
    let b = client("ann", "phone", hub.connect("ann".parse().unwrap())).await;
    settle(&[&a, &b]).await;
    a.rename_device("Ann's laptop").await.unwrap();
    settle(&[&a, &b]).await;
    let mut names: Vec<_> = b
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.sort();
    assert_eq!(names, ["Ann's laptop", "phone"]);
    let f = a
        .create_folder("Photos", "files".parse().unwrap())
        .await
        .unwrap();
    a.record_mapping(&f.id, Some("/home/ann/Photos".into()))
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    b.record_mapping(&f.id, None).await.unwrap();
    settle(&[&a, &b]).await;
    assert_eq!(a.mappings(&f.id).await.unwrap().len(), 2);
    b.unmap_folder(&f.id).await.unwrap();
    settle(&[&a, &b]).await;
    assert_eq!(a.mappings(&f.id).await.unwrap().len(), 1);
    assert!(!a.folder_news(&f.id).await.unwrap().is_empty());
    let hub_feeds = hub.inspect(|r| r.store().feeds().unwrap());
    assert!(hub_feeds
        .iter()
        .any(|h| h.feed == FeedKey::devices(&"ann".parse().unwrap())));
    a.delete_folder(&f.id).await.unwrap();
    settle(&[&a, &b]).await;
    assert!(b.folders().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_durable_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcessHub::new();
    let manual = SyncOptions::default().with_auto(false);
    let open = |device: &str| {
        builder("ann", device)
            .store(mesh_client::store::StoreConfig::Sqlite(
                dir.path().join(format!("{device}.db")),
            ))
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .sync_options(manual.clone())
    };
    let a = open("a").build().await.unwrap();
    let folder = a
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let drafts = (0..50)
        .map(|i| {
            (
                format!("e{i}").parse().unwrap(),
                draft(&format!("{i}"), json!(i)),
            )
        })
        .collect();
    a.put_many(&folder.id, &feed, drafts).await.unwrap();
    let first = a.sync_now().await.unwrap()[0].1.clone();
    assert!(first.sent >= 50);
    // Ten more writes, then the process "restarts" before syncing them.
    for i in 50..60 {
        a.put_with_id(
            &folder.id,
            &feed,
            format!("e{i}").parse().unwrap(),
            draft("late", json!(i)),
        )
        .await
        .unwrap();
    }
    a.close();
    drop(a);
    let a = open("a").build().await.unwrap();
    let resumed = a.sync_now().await.unwrap()[0].1.clone();
    // Only what was not acknowledged before the restart: the ten late writes, plus the device
    // record whose `last_seen` every start refreshes.
    assert_eq!(resumed.sent, 11, "{resumed:?}");
    assert_eq!(resumed.received, 0);

    let b = open("b").build().await.unwrap();
    let r = b.sync_now().await.unwrap()[0].1.clone();
    assert!(r.received >= 60);
    b.close();
    drop(b);
    let b = open("b").build().await.unwrap();
    let again = b.sync_now().await.unwrap()[0].1.clone();
    assert_eq!(
        (again.sent, again.received),
        (1, 0),
        "only the device record: {again:?}"
    );
    assert_eq!(
        b.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_after_accepting_brings_the_folder() {
    let hub = InProcessHub::new();
    let manual = SyncOptions::default().with_auto(false);
    let open = |user: &str| {
        builder(user, &format!("{user}-1"))
            .remote("hub".parse().unwrap(), hub.connect(user.parse().unwrap()))
            .sync_options(manual.clone())
    };
    let ann = open("ann").build().await.unwrap();
    let bob = open("bob").build().await.unwrap();
    let folder = ann
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = ann
        .create_feed(&folder.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    ann.put(&folder.id, &feed, draft("hello", json!(1)))
        .await
        .unwrap();
    ann.invite(&folder.id, &"bob".parse().unwrap(), Role::Full)
        .await
        .unwrap();
    ann.sync_now().await.unwrap();
    bob.sync_now().await.unwrap();
    assert_eq!(bob.invitations().await.unwrap().len(), 1);
    bob.accept(&folder.id).await.unwrap();
    // Pushing the acceptance opens the folder's feeds; the engine pulls them in the same call.
    bob.sync_now().await.unwrap();
    assert_eq!(
        bob.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(bob.folders().await.unwrap().len(), 1);
}

/// New entries' ids (32 hex digits) sort in the order they were made, by `put` and by
/// `put_many` alike: every replica's index of entries by id then takes them at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entry_ids_sort_in_the_order_they_were_made() {
    let hub = InProcessHub::new();
    let ann = client("ann", "ann-1", hub.connect("ann".parse().unwrap())).await;
    let folder = ann
        .create_folder("Ordered", "app/test".parse().unwrap())
        .await
        .unwrap();
    let feed = ann
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let e = ann.put(&folder.id, &feed, draft("one", json!(i))).await;
        ids.push(e.unwrap().sync.id.to_string());
    }
    let many = (0..50).map(|i| draft("many", json!(i))).collect::<Vec<_>>();
    let written = ann.put_many(&folder.id, &feed, many).await.unwrap();
    ids.extend(written.iter().map(|e| e.sync.id.to_string()));
    for id in &ids {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} was made before {}", pair[0], pair[1]);
    }
}
