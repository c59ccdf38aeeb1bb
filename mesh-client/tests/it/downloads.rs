//! Blob downloads: a download is complete only when every object arrived; a remote that
//! leaves one out fails the download, and the next asks only for what is still missing.

use futures::stream::BoxStream;
use mesh_client::transport::{InProcessHub, Notification, Transport, TransportError};
use mesh_core::blob::ChunkHash;
use mesh_core::id::{DeviceId, FolderId};
use mesh_core::model::{EntryDraft, MediaRef};
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{Enrollment, PublicKey};
use serde_json::json;

use crate::common::*;

/// A new folder of ann's with an entry whose media is `data`, written and synced to `hub` by
/// a device of hers.
async fn synced_blob(hub: &InProcessHub, data: Vec<u8>) -> (FolderId, MediaRef) {
    let a = client("ann", "ann-a", hub.connect("ann".parse().unwrap())).await;
    let folder = a
        .create_folder("f", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let media = a
        .put_blob(&folder.id, data, "application/octet-stream")
        .await
        .unwrap();
    let mut draft = EntryDraft::new("blob", json!({}));
    draft.media = Some(media.clone());
    a.put_many(&folder.id, &notes, vec![draft]).await.unwrap();
    a.sync_now().await.unwrap();
    (folder.id, media)
}

/// A blob of many chunks: the download of its chunks fails while the remote leaves one of
/// them out (the chunks it did send are kept), and the next download asks for that one chunk
/// alone and completes with the whole content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_missing_one_chunk_fails_and_the_next_asks_only_for_it() {
    let hub = InProcessHub::new();
    let mut rng = fastrand::Rng::with_seed(16);
    let data: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
    let (folder, media) = synced_blob(&hub, data.clone()).await;

    let proxy = HubProxy::new(&hub, "ann");
    let (asked, withheld) = (proxy.asked.clone(), proxy.withheld.clone());
    let b = client("ann", "ann-b", proxy).await;
    b.sync_now().await.unwrap();
    // The manifest arrives; then one chunk of the middle is left out.
    let manifest: ChunkHash = media.hash.parse().unwrap();
    let chunks: Vec<ChunkHash> = mesh_core::blob::chunk_boundaries(&data)
        .map(|r| ChunkHash::of(&data[r]))
        .collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let left_out = chunks[chunks.len() / 2];
    withheld.lock().unwrap().insert(left_out);
    assert!(
        b.fetch_blob(&folder, &media).await.is_err(),
        "a download without one of its chunks is not complete"
    );
    assert!(b.read_blob(&folder, &media).await.is_err());
    {
        let asked = asked.lock().unwrap();
        assert!(asked.contains(&manifest) && asked.contains(&left_out));
    }

    withheld.lock().unwrap().clear();
    asked.lock().unwrap().clear();
    b.fetch_blob(&folder, &media).await.unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        vec![left_out],
        "only the chunk still missing is asked for"
    );
    assert_eq!(b.read_blob(&folder, &media).await.unwrap(), data);
}

/// A remote that answers every fetch with an object nobody asked for (valid, and hashed
/// right): the download ends, failed, instead of asking for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_answering_with_objects_not_asked_for_ends_the_download() {
    struct Junk(mesh_client::transport::InProcessTransport);
    #[async_trait::async_trait]
    impl Transport for Junk {
        async fn send(&self, r: Request) -> Result<Response, TransportError> {
            self.0.send(r).await
        }
        async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
            self.0.watch().await
        }
        fn describe(&self) -> String {
            "junk".into()
        }
        async fn enroll(
            &self,
            device: &DeviceId,
            key: &PublicKey,
        ) -> Result<Enrollment, TransportError> {
            self.0.enroll(device, key).await
        }
        async fn get_objects(
            &self,
            _: &FolderId,
            _: &[ChunkHash],
        ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
            Ok(vec![(ChunkHash::of(b"junk"), b"junk".to_vec())])
        }
    }
    let hub = InProcessHub::new();
    let (folder, media) = synced_blob(&hub, vec![7u8; 100_000]).await;
    let b = client("ann", "ann-b", Junk(hub.connect("ann".parse().unwrap()))).await;
    b.sync_now().await.unwrap();
    let fetched = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        b.fetch_blob(&folder, &media),
    )
    .await
    .expect("the download ends");
    assert!(fetched.is_err(), "nothing it asked for arrived");
}
