//! What an application relies on: one client per store, typed errors.

use std::process::Command;

use futures::StreamExt;

use mesh_client::store::{lock_path, StoreConfig};
use mesh_client::ErrorKind;

use crate::common::builder;

/// Set in a child process of this test binary: the store it tries to open.
const CHILD_STORE: &str = "MESH_TEST_LOCK_CHILD_STORE";

#[tokio::test]
async fn a_store_is_opened_by_one_client_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let open = || {
        builder("ann", "laptop")
            .store(StoreConfig::Sqlite(path.clone()))
            .build()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Locked, "{second}");
    assert!(lock_path(&path).exists());

    // Another process is refused too.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sdk::lock_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_STORE, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("child: locked"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Once the first client is gone, the store opens again, with its data.
    let f = first
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    first.close();
    drop(first);
    let again = open().await.unwrap();
    assert!(again.folder(&f.id).await.unwrap().is_some());
}

/// A client keeps its store's files to itself while it runs (SQLite's exclusive locking
/// mode, which spares every transaction the file-locking system calls): another connection
/// cannot read them, and can again once the client is gone.
#[tokio::test]
async fn a_client_keeps_its_store_files_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let blobs = mesh_client::store::BlobStore::path_beside(&path);
    let read = |file: &std::path::Path| {
        let c = rusqlite::Connection::open(file).unwrap();
        c.busy_timeout(std::time::Duration::ZERO).unwrap();
        c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    let client = builder("ann", "laptop")
        .store(StoreConfig::Sqlite(path.clone()))
        .build()
        .await
        .unwrap();
    let f = client
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    client
        .put_blob(&f.id, vec![7u8; 1000], "application/octet-stream")
        .await
        .unwrap();
    assert!(read(&path).is_err(), "the replica was readable");
    assert!(read(&blobs).is_err(), "the blob store was readable");
    client.close();
    drop(client);
    assert!(read(&path).unwrap() > 0);
    assert!(read(&blobs).unwrap() > 0);
}

/// Not a test of its own: the other process of the test above (does nothing otherwise).
#[tokio::test]
async fn lock_child() {
    let Some(path) = std::env::var_os(CHILD_STORE) else {
        return;
    };
    let r = builder("ann", "laptop")
        .store(StoreConfig::Sqlite(path.into()))
        .build()
        .await;
    match r {
        Err(e) if e.kind() == ErrorKind::Locked => println!("child: locked"),
        Err(e) => println!("child: other error {e}"),
        Ok(_) => println!("child: opened"),
    }
}

fn manual() -> mesh_client::SyncOptions {
    mesh_client::SyncOptions::default().with_auto(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_online_last_sync_pending_and_the_last_error() {
    use mesh_client::transport::{InProcessHub, SimConfig, SimNetwork};
    use mesh_core::model::EntryDraft;

    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let (link, control) = net.wrap(hub.connect("ann".parse().unwrap()));
    let c = builder("ann", "laptop")
        .remote("hub".parse().unwrap(), link)
        .sync_options(manual())
        .build()
        .await
        .unwrap();
    let mut changes = c.status_changes();
    let first = changes.next().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].online, None, "no contact yet");
    assert_eq!(first[0].last_sync, None);

    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = c
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    c.sync_now().await.unwrap();
    let s = &c.status()[0];
    assert_eq!(s.remote.as_str(), "hub");
    assert_eq!(s.online, Some(true));
    assert!(s.last_sync.is_some());
    assert_eq!((s.pending_up, s.pending_down), (0, 0));
    assert_eq!(s.last_error, None);

    control.set_online(false);
    for i in 0..3 {
        c.put(
            &f.id,
            &feed,
            EntryDraft::new(format!("{i}"), serde_json::json!(i)),
        )
        .await
        .unwrap();
    }
    let mut events = c.events();
    assert!(c.sync_now().await.is_err());
    let s = &c.status()[0];
    assert_eq!(s.online, Some(false));
    assert_eq!(s.last_error.as_ref().unwrap().kind, ErrorKind::Offline);
    // The change is an event too.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(e) = events.next().await {
            if let mesh_client::Event::Status { status } = e {
                if status.last_error.is_some() {
                    return status;
                }
            }
        }
        panic!("events ended");
    })
    .await
    .unwrap();
    assert_eq!(seen.online, Some(false));
    // And the watchers of changes see the latest.
    let latest = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let v = changes.next().await.unwrap();
            if v[0].last_error.is_some() {
                return v;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(latest[0].online, Some(false));

    control.set_online(true);
    c.sync_now().await.unwrap();
    let s = &c.status()[0];
    assert_eq!((s.online, s.pending_up), (Some(true), 0));
    assert_eq!(s.last_error, None);
    c.close();
}

#[tokio::test]
async fn a_slow_subscriber_is_told_how_many_events_it_missed() {
    use mesh_core::model::EntryDraft;

    let c = builder("ann", "laptop").build().await.unwrap();
    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = c
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let mut slow = c.events();
    let n = 4096 + 100;
    for i in 0..n {
        c.put(&f.id, &feed, EntryDraft::new("x", serde_json::json!(i)))
            .await
            .unwrap();
    }
    match slow.next().await.unwrap() {
        mesh_client::Event::Lagged { missed } => assert!(missed >= 100, "{missed}"),
        other => panic!("expected Lagged first, got {other:?}"),
    }
    assert!(matches!(
        slow.next().await.unwrap(),
        mesh_client::Event::EntryChanged { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_made_elsewhere_arrives_as_resolved() {
    use mesh_client::transport::InProcessHub;
    use mesh_client::{ChangeKind, ChangeSource, Event};
    use mesh_core::model::EntryDraft;
    use mesh_core::replica::Resolution;

    let hub = InProcessHub::new();
    let open = |device: &'static str| {
        builder("ann", device)
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .sync_options(manual())
            .build()
    };
    let a = open("a").await.unwrap();
    let b = open("b").await.unwrap();
    let f = a
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let id: mesh_core::id::EntryId = "note".parse().unwrap();
    a.put_with_id(
        &f.id,
        &feed,
        id.clone(),
        EntryDraft::new("a", serde_json::json!(1)),
    )
    .await
    .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    // Concurrent edits: a conflict on both sides.
    a.put_with_id(
        &f.id,
        &feed,
        id.clone(),
        EntryDraft::new("a2", serde_json::json!(2)),
    )
    .await
    .unwrap();
    b.put_with_id(
        &f.id,
        &feed,
        id.clone(),
        EntryDraft::new("b2", serde_json::json!(3)),
    )
    .await
    .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap();
    assert_eq!(a.conflicts(&f.id).await.unwrap().len(), 1);
    assert_eq!(b.conflicts(&f.id).await.unwrap().len(), 1);

    b.resolve(&f.id, &feed, &id, Resolution::Pick(0))
        .await
        .unwrap();
    b.sync_now().await.unwrap();
    let mut events = a.events();
    a.sync_now().await.unwrap();
    let mut kinds = Vec::new();
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if let Event::EntryChanged {
            id: got,
            kind,
            source: ChangeSource::Remote(_),
            ..
        } = e
        {
            if got == id {
                kinds.push(kind);
            }
        }
    }
    assert_eq!(kinds, vec![ChangeKind::Resolved]);
    assert!(a.conflicts(&f.id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_each_reports_every_remote_even_when_one_fails() {
    use mesh_client::prelude::*;
    use mesh_client::transport::{SimConfig, SimNetwork};

    let (good, bad) = (InProcessHub::new(), InProcessHub::new());
    let net = SimNetwork::new(SimConfig::default());
    let (down, control) = net.wrap(bad.connect("ann".parse().unwrap()));
    control.set_online(false);
    // The failing remote first: its failure must not hide the other one's report.
    let c = builder("ann", "laptop")
        .remote("down".parse().unwrap(), down)
        .remote("up".parse().unwrap(), good.connect("ann".parse().unwrap()))
        .sync_options(manual())
        .build()
        .await
        .unwrap();
    c.create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let each = c.sync_each().await.unwrap();
    assert_eq!(each.len(), 2);
    assert_eq!(each[0].0.as_str(), "down");
    assert_eq!(each[0].1.as_ref().unwrap_err().kind(), ErrorKind::Offline);
    assert_eq!(each[1].0.as_str(), "up");
    assert!(each[1].1.as_ref().unwrap().sent > 0);
    assert_eq!(c.sync_now().await.unwrap_err().kind(), ErrorKind::Offline);
}

#[tokio::test]
async fn put_if_writes_only_over_the_expected_version() {
    use mesh_client::prelude::*;

    let c = builder("ann", "laptop").build().await.unwrap();
    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = c
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let id: EntryId = "x".parse().unwrap();
    let v1 = c
        .put_if(
            &f.id,
            &feed,
            id.clone(),
            None,
            EntryDraft::new("v1", json!(1)),
        )
        .await
        .unwrap();
    // "Must not exist" fails now.
    let e = c
        .put_if(
            &f.id,
            &feed,
            id.clone(),
            None,
            EntryDraft::new("again", json!(0)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let top1 = v1.sync.topmost().unwrap().clone();
    let v2 = c
        .put_if(
            &f.id,
            &feed,
            id.clone(),
            Some(&top1),
            EntryDraft::new("v2", json!(2)),
        )
        .await
        .unwrap();
    assert_eq!(v2.content.title, "v2");
    // A writer still holding v1 is refused, and nothing is written.
    let e = c
        .put_if(
            &f.id,
            &feed,
            id.clone(),
            Some(&top1),
            EntryDraft::new("lost", json!(3)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let now = c.get(&f.id, &feed, &id).await.unwrap().unwrap();
    assert_eq!(now.content.title, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_keeps_a_version_by_its_top_and_is_refused_once_it_is_gone() {
    use mesh_client::prelude::*;

    let hub = InProcessHub::new();
    let open = |device: &'static str| {
        builder("ann", device)
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .sync_options(manual())
            .build()
    };
    let a = open("a").await.unwrap();
    let b = open("b").await.unwrap();
    let f = a
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let id: EntryId = "note".parse().unwrap();
    a.put_with_id(&f.id, &feed, id.clone(), EntryDraft::new("v0", json!(0)))
        .await
        .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    a.put_with_id(&f.id, &feed, id.clone(), EntryDraft::new("a's", json!(1)))
        .await
        .unwrap();
    b.put_with_id(&f.id, &feed, id.clone(), EntryDraft::new("b's", json!(2)))
        .await
        .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap();
    let (_, e) = a.conflicts(&f.id).await.unwrap().remove(0);
    // Keep the version whose title is "b's", wherever it sits.
    let versions: Vec<(String, HistoryItemOf)> =
        std::iter::once((e.content.title.clone(), e.sync.topmost().unwrap().clone()))
            .chain(
                e.conflicts
                    .iter()
                    .map(|c| (c.content.title.clone(), c.sync.topmost().unwrap().clone())),
            )
            .collect();
    let b_top = versions.iter().find(|(t, _)| t == "b's").unwrap().1.clone();
    let a_top = versions.iter().find(|(t, _)| t == "a's").unwrap().1.clone();
    let kept = a
        .resolve(&f.id, &feed, &id, Resolution::Keep(b_top.clone()))
        .await
        .unwrap();
    assert_eq!(kept.content.title, "b's");
    assert!(!kept.has_conflicts());
    // b learns of the resolution; a's version is gone for a resolution naming it there.
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    let e = b
        .resolve(&f.id, &feed, &id, Resolution::Keep(a_top))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound),
        "{e}"
    );
}

type HistoryItemOf = mesh_client::core::feedsync::HistoryItem;

#[tokio::test]
async fn put_many_takes_drafts_with_and_without_ids() {
    use mesh_client::prelude::*;

    let c = builder("ann", "laptop").build().await.unwrap();
    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    let feed = c
        .create_feed(&f.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    let fresh = c
        .put_many(
            &f.id,
            &feed,
            vec![
                EntryDraft::new("a", json!(1)),
                EntryDraft::new("b", json!(2)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(fresh.len(), 2);
    assert_ne!(
        fresh[0].entry_id(),
        fresh[1].entry_id(),
        "new ids, as put makes"
    );
    let id = fresh[0].entry_id().clone();
    let mixed: Vec<BatchItem> = vec![
        (id.clone(), EntryDraft::new("a2", json!(3))).into(),
        EntryDraft::new("c", json!(4)).into(),
    ];
    let written = c.put_many(&f.id, &feed, mixed).await.unwrap();
    assert_eq!(written[0].entry_id(), &id);
    assert_eq!(written[0].sync.updates, 2);
    assert_eq!(c.query(&f.id, &feed, Query::new()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn after_close_every_call_fails_with_closed_as_in_c() {
    use mesh_client::prelude::*;

    let c = builder("ann", "laptop").build().await.unwrap();
    let f = c
        .create_folder("F", "app/x".parse().unwrap())
        .await
        .unwrap();
    c.close();
    c.close(); // idempotent
    assert_eq!(c.folders().await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        c.create_folder("G", "app/x".parse().unwrap())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    assert_eq!(c.folder(&f.id).await.unwrap_err().kind(), ErrorKind::Closed);
}
