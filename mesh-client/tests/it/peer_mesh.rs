//! Devices that sync with their hub and with each other at once: they converge through peers
//! while the hub is away, then with the hub again, with nothing duplicated and nothing echoed.

use mesh_client::peer::{PeerListener, PeerTransport};
use mesh_client::prelude::*;
use mesh_client::store::StoreConfig;
use mesh_client::transport::{InProcessHub, LinkControl, SimConfig, SimNetwork};

use crate::common::{builder, HubProxy};
use crate::mapping::{noise, quiet_mapping, snapshot};
use crate::peer::{loopback, notes_folder};

/// Ann's device `name` on a SQLite store in `dir`, syncing (when asked) with `hub` through a
/// link the test can cut.
pub(crate) async fn device(
    hub: &InProcessHub,
    net: &SimNetwork,
    dir: &std::path::Path,
    name: &str,
) -> (MeshClient, LinkControl) {
    device_of(hub, net, dir, "ann", name).await
}

/// [`device`], of `user`.
pub(crate) async fn device_of(
    hub: &InProcessHub,
    net: &SimNetwork,
    dir: &std::path::Path,
    user: &str,
    name: &str,
) -> (MeshClient, LinkControl) {
    let (to_hub, link) = net.wrap(hub.connect(user.parse().unwrap()));
    let client = builder(user, name)
        .store(StoreConfig::Sqlite(dir.join(format!("{name}.db"))))
        .sync_options(SyncOptions::default().with_auto(false))
        .remote("hub".parse().unwrap(), to_hub)
        .build()
        .await
        .unwrap();
    (client, link)
}

/// `c` listens for peers with the certificate its hub issued (it must have synced with it).
pub(crate) async fn listen(c: &MeshClient) -> PeerListener {
    let config = c
        .peer_config(&"hub".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    c.listen_peers(loopback(), config).await.unwrap()
}

/// `c` starts syncing with the peer listening at `addr`, as the remote `name`, with the
/// certificate its hub issued.
pub(crate) async fn add_peer(c: &MeshClient, name: &str, addr: std::net::SocketAddr) {
    let config = c
        .peer_config(&"hub".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let to_peer = PeerTransport::new(addr, config).unwrap();
    c.add_remote(name.parse().unwrap(), to_peer).unwrap();
}

/// Syncs `c` with every remote; the hub may be unreachable.
pub(crate) async fn sync(c: &MeshClient) {
    for (remote, outcome) in c.sync_each().await.unwrap() {
        if remote.as_str() != "hub" {
            outcome.unwrap_or_else(|e| panic!("sync with {remote}: {e}"));
        }
    }
}

pub(crate) async fn titles(c: &MeshClient, folder: &FolderId, notes: &FeedName) -> Vec<String> {
    let mut t: Vec<String> = c
        .query(folder, notes, Query::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.content.title)
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_converge_through_peers_while_the_hub_is_away_then_with_the_hub() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (laptop, laptop_link) = device(&hub, &net, dir.path(), "laptop").await;
    let (phone, phone_link) = device(&hub, &net, dir.path(), "phone").await;
    let (tablet, tablet_link) = device(&hub, &net, dir.path(), "tablet").await;
    // Each meets the hub once: enrolled, they hold the certificates peers exchange.
    for c in [&laptop, &phone, &tablet] {
        c.sync_now().await.unwrap();
    }
    let listener = listen(&laptop).await;
    for c in [&phone, &tablet] {
        add_peer(c, "laptop", listener.local_addr()).await;
        let names: Vec<String> = c
            .status()
            .into_iter()
            .map(|s| s.remote.to_string())
            .collect();
        assert_eq!(names, ["hub", "laptop"]);
    }

    // The hub goes away. The laptop founds a folder; everyone writes into it.
    for link in [&laptop_link, &phone_link, &tablet_link] {
        link.set_online(false);
    }
    let (folder, notes) = notes_folder(&laptop, "Trip").await;
    laptop
        .put(
            &folder,
            &notes,
            EntryDraft::new("from the laptop", serde_json::json!({})),
        )
        .await
        .unwrap();
    sync(&phone).await;
    sync(&tablet).await;
    phone
        .put(
            &folder,
            &notes,
            EntryDraft::new("from the phone", serde_json::json!({})),
        )
        .await
        .unwrap();
    tablet
        .put(
            &folder,
            &notes,
            EntryDraft::new("from the tablet", serde_json::json!({})),
        )
        .await
        .unwrap();
    sync(&phone).await;
    sync(&tablet).await;
    sync(&phone).await;
    let all = ["from the laptop", "from the phone", "from the tablet"];
    for c in [&laptop, &phone, &tablet] {
        assert_eq!(titles(c, &folder, &notes).await, all, "{c:?}");
    }

    // The hub comes back: it gets everything once, and then nothing moves any more.
    for link in [&laptop_link, &phone_link, &tablet_link] {
        link.set_online(true);
    }
    // (A device that only knows the hub, met first: its own device record travels too.)
    let (watcher, _) = device(&hub, &net, dir.path(), "watcher").await;
    watcher.sync_now().await.unwrap();
    for c in [&tablet, &phone, &laptop] {
        sync(c).await;
    }
    for c in [&laptop, &phone, &tablet] {
        sync(c).await;
    }
    watcher.sync_now().await.unwrap();
    assert_eq!(
        titles(&watcher, &folder, &notes).await,
        all,
        "the hub holds each once"
    );
    for c in [&laptop, &phone, &tablet] {
        assert_eq!(titles(c, &folder, &notes).await, all);
        for (remote, report) in c.sync_each().await.unwrap() {
            let r = report.unwrap();
            assert_eq!(
                (r.sent, r.received),
                (0, 0),
                "{c:?} with {remote}: nothing echoes once all have met"
            );
        }
    }

    // A peer that leaves is dropped from the status and stops syncing.
    assert!(phone.remove_remote(&"laptop".parse().unwrap()));
    assert!(!phone.remove_remote(&"laptop".parse().unwrap()));
    let names: Vec<String> = phone
        .status()
        .into_iter()
        .map(|s| s.remote.to_string())
        .collect();
    assert_eq!(names, ["hub"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_added_later_are_bounded_and_named_once() {
    let hub = InProcessHub::new();
    let c = builder("ann", "laptop")
        .sync_options(SyncOptions::default().with_auto(false))
        .build()
        .await
        .unwrap();
    c.add_remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .unwrap();
    let again = c
        .add_remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    for i in 1..mesh_client::MAX_REMOTES {
        c.add_remote(
            format!("peer-{i}").parse().unwrap(),
            hub.connect("ann".parse().unwrap()),
        )
        .unwrap();
    }
    let over = c
        .add_remote(
            "one-too-many".parse().unwrap(),
            hub.connect("ann".parse().unwrap()),
        )
        .unwrap_err();
    assert_eq!(over.kind(), ErrorKind::InvalidInput, "{over}");
    assert_eq!(c.status().len(), mesh_client::MAX_REMOTES);
    // A remote added later syncs like one given to the builder.
    let report = c.sync_each().await.unwrap();
    assert!(report.iter().all(|(_, r)| r.is_ok()));
    c.close();
    let closed = c
        .add_remote("late".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::Closed);
}

/// Rescans `a`, syncs both with their remotes (the hub may be away; one of them has the other
/// as a peer), rescans `b`, until the two directories agree twice in a row.
async fn converge_files(
    a: &MeshClient,
    b: &MeshClient,
    folder: &FolderId,
    da: &std::path::Path,
    db: &std::path::Path,
) {
    let mut stable = 0;
    for _ in 0..20 {
        a.rescan(folder).await.unwrap();
        sync(a).await;
        sync(b).await;
        b.rescan(folder).await.unwrap();
        sync(b).await;
        sync(a).await;
        a.rescan(folder).await.unwrap();
        if snapshot(da) == snapshot(db) {
            stable += 1;
            if stable == 2 {
                return;
            }
        } else {
            stable = 0;
        }
    }
    panic!(
        "directories did not converge:\nA: {:?}\nB: {:?}",
        snapshot(da).keys().collect::<Vec<_>>(),
        snapshot(db).keys().collect::<Vec<_>>()
    );
}

/// Files travel between two mapped devices over a peer connection with the hub away, in both
/// directions, whole and edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sync_between_two_mapped_devices_with_the_hub_away() {
    let hub = InProcessHub::new();
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (laptop, laptop_link) = device(&hub, &net, dir.path(), "laptop").await;
    let (phone, phone_link) = device(&hub, &net, dir.path(), "phone").await;
    let folder = laptop
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    for c in [&laptop, &phone, &laptop] {
        c.sync_now().await.unwrap();
    }
    let listener = listen(&laptop).await;
    add_peer(&phone, "laptop", listener.local_addr()).await;
    laptop_link.set_online(false);
    phone_link.set_online(false);

    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    laptop
        .map_folder_with(&folder, da.path(), quiet_mapping())
        .await
        .unwrap();
    phone
        .map_folder_with(&folder, db.path(), quiet_mapping())
        .await
        .unwrap();
    std::fs::write(da.path().join("notes.txt"), b"packing list").unwrap();
    std::fs::create_dir(da.path().join("photos")).unwrap();
    std::fs::write(da.path().join("photos/big.bin"), noise(7, 3 << 20)).unwrap();
    converge_files(&laptop, &phone, &folder, da.path(), db.path()).await;
    assert_eq!(
        std::fs::read(db.path().join("photos/big.bin")).unwrap(),
        noise(7, 3 << 20)
    );

    // An edit on the phone reaches the laptop, through the same peer connection.
    let mut edited = noise(7, 3 << 20);
    edited[1 << 20..(1 << 20) + 4096].copy_from_slice(&noise(8, 4096));
    std::fs::write(db.path().join("photos/big.bin"), &edited).unwrap();
    converge_files(&phone, &laptop, &folder, db.path(), da.path()).await;
    assert_eq!(
        std::fs::read(da.path().join("photos/big.bin")).unwrap(),
        edited
    );
}

/// With the hub and a LAN peer both in reach, a device downloads a file's chunks from the
/// peer: the hub is not asked for any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_ask_a_peer_before_the_hub() {
    let hub = InProcessHub::new();
    let dir = tempfile::tempdir().unwrap();
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open = |name: &str| {
        builder("ann", name)
            .store(StoreConfig::Sqlite(dir.path().join(format!("{name}.db"))))
            .sync_options(SyncOptions::default().with_auto(false))
    };
    let laptop = open("laptop")
        .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .build()
        .await
        .unwrap();
    let phone = open("phone")
        .remote(
            "hub".parse().unwrap(),
            HubProxy {
                fetched: fetched.clone(),
                ..HubProxy::new(&hub, "ann")
            },
        )
        .build()
        .await
        .unwrap();
    let folder = laptop
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    for c in [&laptop, &phone] {
        c.sync_now().await.unwrap();
    }
    let listener = listen(&laptop).await;
    add_peer(&phone, "laptop", listener.local_addr()).await;
    assert_eq!(phone.remote_names().len(), 2);

    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    laptop
        .map_folder_with(&folder, da.path(), quiet_mapping())
        .await
        .unwrap();
    phone
        .map_folder_with(&folder, db.path(), quiet_mapping())
        .await
        .unwrap();
    std::fs::write(da.path().join("big.bin"), noise(11, 2 << 20)).unwrap();
    // The laptop publishes to the hub too: both could serve the chunks.
    laptop.rescan(&folder).await.unwrap();
    laptop.sync_now().await.unwrap();
    converge_files(&laptop, &phone, &folder, da.path(), db.path()).await;
    assert_eq!(
        fetched.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the hub was asked for chunks the peer holds"
    );
}
