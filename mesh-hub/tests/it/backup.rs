//! Backups and restores: a hub brought back from an older copy of its data directory (a cold
//! copy, or `mesh_hub::backup` made while it served) presents a new epoch, and the devices
//! that synced after the copy was made give it back everything it lacks and take what it
//! has, losing nothing, and say so with `Event::RemoteReset`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use mesh_client::{Event, MeshClient};
use mesh_core::id::{FeedName, FolderId};
use mesh_core::model::{EntryDraft, Query};
use mesh_hub::Hub;
use serde_json::json;

use crate::e2e::client;
use crate::hubs::TestHub;

/// Serves the hub of `data` on `addr` (the address the clients know).
async fn serve_at(addr: SocketAddr, data: &Path) -> TestHub {
    let hub = Hub::builder().data_dir(data).open().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    TestHub::start_on(hub, listener)
}

/// Syncs the clients until two rounds in a row move nothing; a request that fails on a
/// connection the previous server closed is tried again (at most 20 failures in all).
async fn settle(clients: &[&MeshClient]) {
    let (mut quiet, mut failures) = (0, 0);
    for _ in 0..40 {
        let mut moved = 0;
        for c in clients {
            match c.sync_now().await {
                Ok(reports) => {
                    moved += reports
                        .iter()
                        .map(|(_, r)| r.sent + r.received)
                        .sum::<usize>()
                }
                Err(e) => {
                    failures += 1;
                    assert!(failures < 20, "sync keeps failing: {e}");
                    moved += 1;
                }
            }
        }
        quiet = if moved == 0 { quiet + 1 } else { 0 };
        if quiet == 2 {
            return;
        }
    }
    panic!("clients did not settle");
}

async fn titles(c: &MeshClient, folder: &FolderId, feed: &FeedName) -> Vec<String> {
    let mut t: Vec<String> = c
        .query(folder, feed, Query::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.content.title)
        .collect();
    t.sort();
    t
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != mesh_hub::LOCK_FILE {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// How the older copy of the data directory is made.
#[derive(Clone, Copy)]
enum Copy {
    /// Files copied while the hub is stopped.
    Cold,
    /// `mesh_hub::backup` while the hub serves.
    Online,
}

async fn restored_hub_loses_nothing(how: Copy) {
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    let hub = TestHub::start(Hub::builder().data_dir(&data).open().unwrap()).await;
    let addr = hub.addr;
    let a = client(&hub, "ann", "ann-a").await;
    let b = client(&hub, "ann", "ann-b").await;
    let witness = client(&hub, "ann", "ann-c").await;
    let folder = a
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let note = |n: u32| EntryDraft::new(format!("note {n}"), json!({ "n": n }));
    for n in 1..=3 {
        a.put(&folder.id, &notes, note(n)).await.unwrap();
    }
    settle(&[&a, &b]).await;

    // The copy holds notes 1-3.
    let hub = match how {
        Copy::Cold => {
            hub.stop().await;
            copy_dir(&data, &copy);
            serve_at(addr, &data).await
        }
        Copy::Online => {
            let report = mesh_hub::backup(&data, &copy).unwrap();
            assert!(report.bytes > 0);
            hub
        }
    };
    // Written after the copy: notes 4-6, which both devices hold and the copy does not.
    for n in 4..=6 {
        a.put(&folder.id, &notes, note(n)).await.unwrap();
    }
    settle(&[&a, &b]).await;
    hub.stop().await;

    // The operator restores the copy.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&copy, &data);
    let hub = serve_at(addr, &data).await;
    let mut events = a.events();
    b.put(&folder.id, &notes, note(7)).await.unwrap();
    settle(&[&a, &b, &witness]).await;

    let all: Vec<String> = (1..=7).map(|n| format!("note {n}")).collect();
    assert_eq!(titles(&a, &folder.id, &notes).await, all, "device a");
    assert_eq!(titles(&b, &folder.id, &notes).await, all, "device b");
    // The witness syncs only with the restored hub: what it holds, the hub holds.
    assert_eq!(titles(&witness, &folder.id, &notes).await, all, "the hub");
    let reset = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if let Event::RemoteReset { feeds, .. } = e {
                return feeds;
            }
        }
        0
    })
    .await
    .expect("device a reports the reset");
    assert!(reset > 0);
    // No entry was applied twice: each note is one entry with no conflict.
    for c in [&a, &b] {
        let entries = c.query(&folder.id, &notes, Query::default()).await.unwrap();
        assert_eq!(entries.len(), 7);
        assert!(entries.iter().all(|e| e.conflicts.is_empty()));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restored_from_a_cold_copy_after_further_writes_loses_nothing() {
    restored_hub_loses_nothing(Copy::Cold).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restored_from_an_online_backup_loses_nothing() {
    restored_hub_loses_nothing(Copy::Online).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_keeps_the_devices_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = TestHub::start(Hub::builder().data_dir(&data).open().unwrap()).await;
    let addr = hub.addr;
    let a = client(&hub, "ann", "ann-a").await;
    let folder = a
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    for n in 0..20 {
        a.put(
            &folder.id,
            &notes,
            EntryDraft::new(format!("n{n}"), json!({})),
        )
        .await
        .unwrap();
    }
    settle(&[&a]).await;
    hub.stop().await;
    let hub = serve_at(addr, &data).await;
    let mut events = a.events();
    a.put(&folder.id, &notes, EntryDraft::new("one more", json!({})))
        .await
        .unwrap();
    settle(&[&a]).await;
    hub.stop().await;
    drop(a);
    // Sessions with the restarted hub sent the new entry only, and nothing was reset.
    let mut sent = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        match e {
            Event::RemoteReset { .. } => panic!("{e:?}"),
            Event::SyncProgress {
                sent: s,
                done: true,
                ..
            } => sent += s,
            _ => {}
        }
    }
    assert_eq!(sent, 1, "only the new entry travels after a clean restart");
}

#[test]
fn a_backup_refuses_a_non_empty_destination_and_a_missing_hub() {
    let dir = tempfile::tempdir().unwrap();
    let err = mesh_hub::backup(&dir.path().join("nothing"), &dir.path().join("out")).unwrap_err();
    assert!(err.to_string().contains("no hub replica"), "{err}");
    let data = dir.path().join("data");
    drop(Hub::builder().data_dir(&data).open().unwrap());
    let dest = dir.path().join("full");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("keep.txt"), "mine").unwrap();
    let err = mesh_hub::backup(&data, &dest).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dest.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn the_backup_command_copies_a_serving_hub() {
    use crate::e2e::{admin, HubProcess};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    admin(&data, &["user", "add", "ann"]);
    let serving = HubProcess::start(&data, "127.0.0.1:0");
    let dest = dir.path().join("backup");
    let out = admin(&data, &["backup", dest.to_str().unwrap()]);
    assert!(out.starts_with("backed up 4 files"), "{out}");
    drop(serving);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(dest.join("hub.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let restored = Hub::builder().data_dir(&dest).open().unwrap();
    assert!(restored
        .accounts()
        .has_user(&"ann".parse().unwrap())
        .unwrap());
}

async fn announced_epoch(hub: &TestHub, device: &str) -> Option<mesh_core::sync::Epoch> {
    use mesh_client::transport::Transport;
    let t = hub.transport("ann", device);
    let request = mesh_core::sync::Request::Feeds {
        from: device.parse().unwrap(),
        only: None,
        certificates: false,
    };
    match t.send(request).await.unwrap() {
        mesh_core::sync::Response::Feeds { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_log_can_be_restored_announces_its_epoch() {
    // The backend under test: memory (nothing to restore: no epoch) or PostgreSQL (one).
    let hub = TestHub::memory().await;
    let postgres = std::env::var("MESH_HUB_BACKEND").as_deref() == Ok("postgres");
    let epoch = announced_epoch(&hub, "ann-1").await;
    assert_eq!(epoch.is_some(), postgres, "{epoch:?}");
    hub.stop().await;
    // A data directory always has one; a clean restart continues it.
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(Hub::builder().data_dir(dir.path()).open().unwrap()).await;
    let first = announced_epoch(&hub, "ann-2").await.expect("an epoch");
    hub.stop().await;
    let hub = TestHub::start(Hub::builder().data_dir(dir.path()).open().unwrap()).await;
    let second = announced_epoch(&hub, "ann-3").await.expect("an epoch");
    assert_ne!(first.id, second.id);
    assert_eq!(second.continues, vec![first.id]);
    hub.stop().await;
}
