//! Deleting a folder revokes it: its members' devices learn of the deletion, nobody reads or
//! writes its data through the hub any more, and the hub purges it (its id stays reserved).

use mesh_core::model::{names, EntryDraft, FeedKey, Query, Role};
use mesh_core::store::Store;
use mesh_hub::Hub;
use serde_json::json;

use crate::common::settle;
use crate::e2e::client;
use crate::hubs::TestHub;

async fn get(url: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_folder_revokes_and_purges_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(Hub::builder().data_dir(dir.path()).open().unwrap()).await;
    let ann = client(&hub, "ann", "ann-a").await;
    let bob = client(&hub, "bob", "bob-a").await;
    let bob_token = hub.token("bob", "bob-rest");
    let folder = ann
        .create_folder("Plans", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = ann
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    for n in 0..3 {
        ann.put(
            &folder.id,
            &notes,
            EntryDraft::new(format!("n{n}"), json!({})),
        )
        .await
        .unwrap();
    }
    // A file in the folder: its objects reach the hub.
    let media = ann
        .put_blob(&folder.id, vec![7u8; 200_000], "application/octet-stream")
        .await
        .unwrap();
    let mut draft = EntryDraft::new("file", json!({}));
    draft.media = Some(media.clone());
    ann.put(&folder.id, &notes, draft).await.unwrap();
    ann.invite(&folder.id, &"bob".parse().unwrap(), Role::Full)
        .await
        .unwrap();
    settle(&[&ann, &bob]).await;
    bob.accept(&folder.id).await.unwrap();
    settle(&[&ann, &bob]).await;
    assert_eq!(
        bob.query(&folder.id, &notes, Query::default())
            .await
            .unwrap()
            .len(),
        4
    );
    let manifest: mesh_core::blob::ChunkHash = media.hash.parse().unwrap();
    assert!(hub.hub.blobs().get(&manifest).unwrap().is_some());
    let entries = format!("{}/mesh/folders/{}/feeds/notes/entries", hub.url, folder.id);
    assert_eq!(get(&entries, &bob_token).await.0, 200);

    ann.delete_folder(&folder.id).await.unwrap();
    settle(&[&ann, &bob]).await;

    // Bob's device learned of the deletion.
    assert!(bob
        .folders()
        .await
        .unwrap()
        .iter()
        .all(|f| f.id != folder.id));
    // Bob's device no longer writes into it either.
    let late = bob
        .put(&folder.id, &notes, EntryDraft::new("late", json!({})))
        .await;
    assert_eq!(
        late.as_ref().map_err(|e| e.kind()).err(),
        Some(mesh_client::ErrorKind::NotFound),
        "{late:?}"
    );
    settle(&[&ann, &bob]).await;
    // Through REST the folder is gone, with the same answer as a folder that never existed.
    let (status, body) = get(&entries, &bob_token).await;
    let missing = format!("{}/mesh/folders/never-was/feeds/notes/entries", hub.url);
    let (status_missing, body_missing) = get(&missing, &bob_token).await;
    assert_eq!((status, status_missing), (404, 404));
    assert_eq!(body["code"], body_missing["code"]);
    let one = format!("{}/mesh/folders/{}", hub.url, folder.id);
    assert_eq!(get(&one, &bob_token).await.0, 404);
    // Its id stays reserved.
    let r = reqwest::Client::new()
        .post(format!("{}/mesh/folders", hub.url))
        .bearer_auth(&bob_token)
        .json(&json!({"name": "squat", "id": folder.id}))
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status().as_u16(),
        201,
        "a deleted folder's id is not reused"
    );

    // The hub purged it: its files, and every feed but the two that record its deletion.
    assert_eq!(hub.hub.blobs().get(&manifest).unwrap(), None);
    assert_eq!(hub.hub.blobs().usage().unwrap(), (0, 0));
    hub.stop().await;
    let store = mesh_store::SqliteStore::open(
        dir.path().join(mesh_hub::REPLICA_DB),
        "unused".parse().unwrap(),
    )
    .unwrap();
    let left: Vec<FeedKey> = store
        .feeds()
        .unwrap()
        .into_iter()
        .map(|h| h.feed)
        .filter(|f| f.to_string().contains(folder.id.as_str()))
        .collect();
    assert!(!left.is_empty());
    assert!(
        left.iter()
            .all(|f| matches!(f.name.as_str(), names::MEMBERS | names::INFO)),
        "{left:?} (bob's late write: {late:?})"
    );
}
