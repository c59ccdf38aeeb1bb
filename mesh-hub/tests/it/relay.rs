//! The hub relaying a large blob: the entry naming it arrives while its chunks still upload,
//! and another device's fetches wait for the chunks as they arrive, within bounds the hub
//! sets (never while nothing is uploading, never past its own limit). On the backend under
//! test (`MESH_HUB_BACKEND`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use mesh_client::transport::{HttpTransport, Identity, Notification, Transport, TransportError};
use mesh_client::MeshClient;
use mesh_core::blob::{pack, ChunkHash};
use mesh_core::id::{DeviceId, FeedName, FolderId};
use mesh_core::model::{EntryDraft, MediaRef, Query};
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{Enrollment, PublicKey};
use mesh_hub::HubConfig;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::blobs::{noise, obj, pack_of, raw, setup_on, PACK};
use crate::common::builder;
use crate::e2e::options;
use crate::hubs::{fresh_hub_with, TestHub};

const HASHES: &str = "application/x-mesh-hashes";

/// A hub of the backend under test with these waiting bounds.
async fn hub_with(fetch_wait_max: Duration, upload_idle: Duration) -> TestHub {
    let config = HubConfig {
        fetch_wait_max,
        upload_idle,
        ..HubConfig::default()
    };
    TestHub::start(fresh_hub_with(config)).await
}

/// A fetch of `hashes` asking to wait `wait_ms`: its status, the objects and how long it took.
async fn fetch_waiting(
    rest: &crate::hubs::Rest,
    hashes: &[ChunkHash],
    wait_ms: &str,
) -> (u16, Vec<(ChunkHash, Vec<u8>)>, Duration) {
    let started = Instant::now();
    let (s, _, body) = raw(rest
        .req(
            Method::POST,
            &format!("/mesh/folders/f1@ann/objects/fetch?wait={wait_ms}"),
        )
        .header(CONTENT_TYPE, HASHES)
        .body(pack::encode_hashes(hashes)))
    .await;
    let objects = if s == 200 {
        pack::decode(&body).unwrap()
    } else {
        Vec::new()
    };
    (s, objects, started.elapsed())
}

async fn upload(rest: &crate::hubs::Rest, objects: &[(ChunkHash, Vec<u8>)]) {
    let (s, _, _) = raw(rest
        .req(Method::POST, "/mesh/folders/f1@ann/objects")
        .header(CONTENT_TYPE, PACK)
        .body(pack_of(objects)))
    .await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_answers_as_soon_as_an_upload_brings_an_object() {
    let hub = hub_with(Duration::from_secs(60), Duration::from_secs(60)).await;
    let (hub, ann, bob, _) = setup_on(hub).await;
    // An upload to the folder: it is receiving.
    upload(&ann, &[obj(b"first of the blob")]).await;
    let later = obj(&noise(50_000, 7));
    let asked = [later.0];
    let waiting = tokio::spawn(async move { fetch_waiting(&bob, &asked, "30000").await });
    // The fetch waits (it found nothing); the upload wakes it.
    until_waiting(&hub, 1).await;
    upload(&ann, std::slice::from_ref(&later)).await;
    let (s, objects, took) = waiting.await.unwrap();
    assert_eq!(s, 200);
    assert!(
        took < Duration::from_secs(20),
        "woken by the upload, not its bound: {took:?}"
    );
    assert_eq!(objects, vec![later]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_answers_at_once_when_the_folder_receives_no_uploads() {
    let hub = hub_with(Duration::from_secs(60), Duration::from_secs(60)).await;
    let (_hub, _ann, bob, _) = setup_on(hub).await;
    let never = ChunkHash::of(b"never uploaded");
    let (s, objects, took) = fetch_waiting(&bob, &[never], "30000").await;
    assert_eq!((s, objects.len()), (200, 0));
    assert!(
        took < Duration::from_secs(10),
        "nothing to wait for: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_ends_at_the_hubs_bound_and_its_wait_must_be_a_number() {
    let hub = hub_with(Duration::from_millis(300), Duration::from_secs(60)).await;
    let (_hub, ann, bob, _) = setup_on(hub).await;
    upload(&ann, &[obj(b"something")]).await;
    let never = ChunkHash::of(b"never uploaded");
    // It asks for 30 s; the hub waits its own 300 ms at most.
    let (s, objects, took) = fetch_waiting(&bob, &[never], "30000").await;
    assert_eq!((s, objects.len()), (200, 0));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (s, _, _) = fetch_waiting(&bob, &[never], "soon").await;
    assert_eq!(s, 400);
    // A reader cannot make the folder "receive": its upload is refused before it counts.
    let (s, _, _) = raw(bob
        .req(Method::POST, "/mesh/folders/f1@ann/objects")
        .header(CONTENT_TYPE, PACK)
        .body(pack_of(&[obj(b"from a reader")])))
    .await;
    assert_eq!(s, 403);
}

/// How many fetches the hub counts as waiting for uploads (its metrics).
async fn fetches_waiting(hub: &TestHub) -> u64 {
    let text = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("mesh_hub_fetches_waiting "))
        .expect("the metric is reported")
        .trim()
        .parse()
        .unwrap()
}

/// Waits (bounded) until the hub counts `n` waiting fetches.
async fn until_waiting(hub: &TestHub, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while fetches_waiting(hub).await != n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the fetch waits");
}

/// An upload wakes a waiting fetch to look for the head of its list only (a bounded lookup
/// per upload, whatever the list's length): objects further down do not end the wait; the
/// last look at the end of the wait finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_wakes_a_waiting_fetch_for_the_head_of_its_list_only() {
    let hub = hub_with(Duration::from_millis(1_500), Duration::from_secs(60)).await;
    let (hub, ann, bob, _) = setup_on(hub).await;
    upload(&ann, &[obj(b"first of the blob")]).await;
    let tail = obj(&noise(20_000, 9));
    // The head (65 objects that never come: more than a wake looks at, the first one named
    // twice, which must not make the head look shorter), then the tail.
    let mut asked: Vec<ChunkHash> = (0..65u32)
        .map(|i| ChunkHash::of(&i.to_be_bytes()))
        .collect();
    asked.insert(1, asked[0]);
    asked.push(tail.0);
    let waiting = tokio::spawn(async move { fetch_waiting(&bob, &asked, "60000").await });
    until_waiting(&hub, 1).await;
    let woken_at = Instant::now();
    upload(&ann, std::slice::from_ref(&tail)).await;
    let (s, objects, _) = waiting.await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(objects, vec![tail]);
    assert!(
        woken_at.elapsed() >= Duration::from_millis(700),
        "answered at its bound, not when the tail arrived: {:?}",
        woken_at.elapsed()
    );
    assert_eq!(fetches_waiting(&hub).await, 0);
}

/// A device's transport to the hub whose blob uploads stop after the first `open` requests
/// until `gate` opens, or fail once at request `fail_at`, and which tells `waiting` when a
/// fetch waits.
struct Gated {
    inner: HttpTransport,
    puts: Arc<AtomicUsize>,
    open: usize,
    gate: watch::Receiver<bool>,
    fail_at: Option<usize>,
    waiting: Arc<Notify>,
}

impl Gated {
    fn new(inner: HttpTransport) -> Gated {
        Gated {
            inner,
            puts: Arc::new(AtomicUsize::new(0)),
            open: usize::MAX,
            gate: watch::channel(true).1,
            fail_at: None,
            waiting: Arc::new(Notify::new()),
        }
    }
}

#[async_trait]
impl Transport for Gated {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.inner.send(request).await
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.inner.watch().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn enroll(
        &self,
        device: &DeviceId,
        key: &PublicKey,
    ) -> Result<Enrollment, TransportError> {
        self.inner.enroll(device, key).await
    }

    async fn whoami(&self) -> Result<Option<Identity>, TransportError> {
        self.inner.whoami().await
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.inner.missing_objects(folder, hashes).await
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        if Some(n) == self.fail_at {
            return Err(TransportError::Offline("cut midway (test)".into()));
        }
        if n >= self.open {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        self.inner.put_objects(folder, objects).await
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.inner.get_objects(folder, hashes).await
    }

    fn relays_blobs(&self) -> bool {
        self.inner.relays_blobs()
    }

    async fn get_objects_waiting(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        wait: Duration,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.waiting.notify_one();
        self.inner.get_objects_waiting(folder, hashes, wait).await
    }
}

async fn device(device: &str, transport: impl Transport) -> MeshClient {
    builder("ann", device)
        .remote("hub".parse().unwrap(), transport)
        .sync_options(options())
        .build()
        .await
        .unwrap()
}

/// A 12 MiB blob (three upload requests of chunks) in an entry of a new folder of `a`.
async fn large_entry(a: &MeshClient) -> (FolderId, FeedName, Vec<u8>, MediaRef) {
    let folder = a
        .create_folder("Videos", "app/files".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "clips".parse().unwrap(), "Clips")
        .await
        .unwrap();
    let data = noise(12 << 20, 11);
    let media = a
        .put_blob(&folder.id, data.clone(), "video/mp4")
        .await
        .unwrap();
    let mut draft = EntryDraft::new("clip", json!({}));
    draft.media = Some(media.clone());
    a.put_many(&folder.id, &feed, vec![draft]).await.unwrap();
    (folder.id, feed, data, media)
}

/// The entry reaches B while A's upload of its chunks is held back; B's download waits for
/// the chunks as they arrive, and A's sync ends only once they are all up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_gets_a_large_blobs_entry_and_chunks_while_they_still_upload() {
    let hub = hub_with(Duration::from_secs(10), Duration::from_secs(60)).await;
    let (open_gate, gate) = watch::channel(false);
    let a = device(
        "ann-a",
        Gated {
            // The manifest's request and one request of chunks pass.
            open: 2,
            gate,
            ..Gated::new(hub.transport("ann", "ann-a"))
        },
    )
    .await;
    let (folder, feed, data, media) = large_entry(&a).await;
    let a_sync = tokio::spawn({
        let a = a.clone();
        async move { a.sync_now().await }
    });

    let b_transport = Gated::new(hub.transport("ann", "ann-b"));
    let waiting = b_transport.waiting.clone();
    let b = device("ann-b", b_transport).await;
    // B sees the entry while A's chunks are held back.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            b.sync_now().await.unwrap();
            if b.query(&folder, &feed, Query::new())
                .await
                .is_ok_and(|e| e.len() == 1)
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the entry reaches B before its blob is whole on the hub");
    assert!(!a_sync.is_finished(), "A's sync waits for its chunks");

    // B's download takes what is there, then waits for the rest.
    let fetch = tokio::spawn({
        let (b, folder, media) = (b.clone(), folder.clone(), media.clone());
        async move { b.fetch_blob(&folder, &media).await }
    });
    tokio::time::timeout(Duration::from_secs(30), waiting.notified())
        .await
        .expect("B's download waits for chunks still uploading");
    open_gate.send(true).unwrap();
    fetch
        .await
        .unwrap()
        .expect("B's download completes as the chunks arrive");
    assert_eq!(b.read_blob(&folder, &media).await.unwrap(), data);
    a_sync.await.unwrap().unwrap();
}

/// A's upload of the chunks is cut after the entry went: that sync fails, and the next one
/// uploads what is missing (the push is sent again; nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_upload_cut_midway_is_completed_by_the_next_sync() {
    let hub = hub_with(Duration::from_secs(10), Duration::from_secs(1)).await;
    let transport = Gated {
        // The manifest's request, one of chunks, then the cut.
        fail_at: Some(2),
        ..Gated::new(hub.transport("ann", "ann-a"))
    };
    let puts = transport.puts.clone();
    let a = device("ann-a", transport).await;
    let (folder, feed, data, media) = large_entry(&a).await;
    // This sync, or the one the write started on its own, meets the cut and fails; the
    // engine tries again.
    let _ = a.sync_now().await;
    a.sync_now().await.unwrap();
    assert!(
        puts.load(Ordering::SeqCst) > 3,
        "the upload was cut and resumed"
    );
    let b = device("ann-b", hub.transport("ann", "ann-b")).await;
    b.sync_now().await.unwrap();
    assert_eq!(
        b.query(&folder, &feed, Query::new()).await.unwrap().len(),
        1
    );
    b.fetch_blob(&folder, &media).await.unwrap();
    assert_eq!(b.read_blob(&folder, &media).await.unwrap(), data);
}
