//! Device keys and enrollment as a client sees them: signed writes, the pinned authority, and
//! an in-process hub that checks every version like the HTTP hub.

use mesh_client::store::StoreConfig;
use mesh_client::transport::InProcessHub;
use mesh_core::model::{EntryDraft, Query};
use mesh_core::trust::{verify_entry, KeyStatus, Keyring, MemoryKeyring};

use crate::common::builder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_signed_and_the_hub_checks_them() {
    let hub = InProcessHub::new();
    let ann = builder("ann", "ann-laptop")
        .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .build()
        .await
        .unwrap();
    let folder = ann
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let feed = ann
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let id = ann
        .put(
            &folder.id,
            &feed,
            EntryDraft::new("hello", serde_json::json!({})),
        )
        .await
        .unwrap()
        .sync
        .id;
    ann.sync_now().await.unwrap();
    // The device enrolled: its key is certified by the hub's authority, and what the hub
    // holds verifies from scratch against that.
    let key = hub.authority_key();
    let entry = hub.inspect(|r| {
        r.get(
            &mesh_core::model::FeedKey::folder(folder.id.clone(), feed.clone()),
            &id,
        )
        .unwrap()
        .unwrap()
    });
    assert!(entry.sync.history[0].seal.is_some());
    let cert = hub.certificate(&"ann-laptop".parse().unwrap()).unwrap();
    let mut ring = MemoryKeyring::new(key);
    ring.add(cert).unwrap();
    assert!(matches!(
        ring.lookup(&"ann-laptop".parse().unwrap()),
        KeyStatus::Device(_)
    ));
    let key_feed = mesh_core::model::FeedKey::folder(folder.id.clone(), feed.clone());
    verify_entry(&ring, &key_feed, None, &entry).unwrap();
    // A revoked device's new writes no longer reach the hub; the earlier one stays.
    hub.revoke_device(&"ann-laptop".parse().unwrap());
    ann.put(
        &folder.id,
        &feed,
        EntryDraft::new("after", serde_json::json!({})),
    )
    .await
    .unwrap();
    let _ = ann.sync_now().await;
    let held = hub.inspect(|r| {
        mesh_core::store::Store::list(r.store(), &key_feed, None, 10)
            .unwrap()
            .len()
    });
    assert_eq!(held, 1);
    assert_eq!(
        ann.query(&folder.id, &feed, Query::new())
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refuses_an_authority_other_than_the_one_it_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::Sqlite(dir.path().join("ann.db"));
    let first = InProcessHub::new();
    let ann = builder("ann", "ann-laptop")
        .store(store.clone())
        .remote(
            "hub".parse().unwrap(),
            first.connect("ann".parse().unwrap()),
        )
        .build()
        .await
        .unwrap();
    ann.sync_now().await.unwrap();
    ann.close();
    drop(ann);
    // The same store, the same remote name, another hub: its authority is not the pinned one.
    let other = InProcessHub::new();
    let ann = builder("ann", "ann-laptop")
        .store(store)
        .remote(
            "hub".parse().unwrap(),
            other.connect("ann".parse().unwrap()),
        )
        .build()
        .await
        .unwrap();
    let err = ann.sync_now().await.unwrap_err();
    // (The failure's kind becomes typed with the client's typed errors; the code is in it.)
    assert!(err.to_string().contains("untrusted certificate"), "{err}");
    assert!(err.to_string().contains("pinned"), "{err}");
}
