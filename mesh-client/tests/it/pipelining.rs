//! Pipelined pushes: while one page of a feed travels and merges, the next two are already
//! sent; cursors still move only over acknowledged pages, so a session cut off between them
//! resumes without loss.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use mesh_client::transport::{
    InProcessHub, InProcessTransport, Notification, Transport, TransportError,
};
use mesh_client::{MeshClient, SyncOptions};
use mesh_core::blob::ChunkHash;
use mesh_core::id::{FeedName, FolderId};
use mesh_core::model::{names, EntryDraft, Scope};
use mesh_core::sync::{Request, Response};
use serde_json::json;
use tokio::sync::Notify;

use crate::common::*;

/// What [`Watching`] saw, shared with the test.
#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    most_ordered: AtomicUsize,
    data_pushes: AtomicUsize,
    third: Notify,
    armed: AtomicBool,
    fail_third: AtomicBool,
    failed: AtomicBool,
    /// Data pushes that named a blob the hub did not hold yet when they were sent.
    before_their_blobs: AtomicUsize,
    /// Data pushes that named blobs.
    with_blobs: AtomicUsize,
}

/// Counts pushes in flight. Once armed, the first two data pushes wait (at most 5 s, so that a
/// client that does not pipeline fails instead of hanging) until three are in flight;
/// with `fail_third`, the third data push fails as a dropped connection would.
struct Watching {
    inner: InProcessTransport,
    counts: Arc<Counts>,
}

#[async_trait]
impl Transport for Watching {
    async fn send(&self, r: Request) -> Result<Response, TransportError> {
        let pushed = r.clone().decoded().unwrap();
        let Request::Push { feed, entries, .. } = &pushed else {
            return self.inner.send(r).await;
        };
        let c = &*self.counts;
        if let Scope::Folder(folder) = &feed.scope {
            let named: Vec<ChunkHash> = entries
                .iter()
                .filter_map(|e| e.content.media.as_ref())
                .map(|m| m.hash.parse().unwrap())
                .collect();
            if !named.is_empty() {
                c.with_blobs.fetch_add(1, Ordering::SeqCst);
                if !self.inner.missing_objects(folder, &named).await?.is_empty() {
                    c.before_their_blobs.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let ordered = matches!(feed.name.as_str(), names::MEMBERS | names::INFO);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.most.fetch_max(now, Ordering::SeqCst);
        if ordered {
            c.most_ordered.fetch_max(now, Ordering::SeqCst);
        }
        let n = if ordered || !c.armed.load(Ordering::SeqCst) {
            0
        } else {
            c.data_pushes.fetch_add(1, Ordering::SeqCst) + 1
        };
        if now >= 3 {
            c.third.notify_waiters();
        }
        // The first two wait: the second may otherwise be answered before the third leaves.
        if n == 1 || n == 2 {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let notified = c.third.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if c.most.load(Ordering::SeqCst) >= 3 {
                        return;
                    }
                    notified.await;
                }
            })
            .await;
        }
        let answer = if n == 3 && c.fail_third.load(Ordering::SeqCst) {
            c.failed.store(true, Ordering::SeqCst);
            Err(TransportError::Offline("cut off".into()))
        } else {
            self.inner.send(r).await
        };
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.inner.watch().await
    }
    fn describe(&self) -> String {
        "watching".into()
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
        self.inner.put_objects(folder, objects).await
    }
    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.inner.get_objects(folder, hashes).await
    }
    async fn enroll(
        &self,
        device: &mesh_core::id::DeviceId,
        key: &mesh_core::trust::PublicKey,
    ) -> Result<mesh_core::trust::Enrollment, TransportError> {
        self.inner.enroll(device, key).await
    }
    async fn whoami(&self) -> Result<Option<mesh_client::transport::Identity>, TransportError> {
        self.inner.whoami().await
    }
}

/// Ann's device writing through [`Watching`] in pages of 10, with a folder and feed synced
/// and then 95 entries written locally (their sync starts in the background), each naming a
/// blob of its own when `blobs` is set.
async fn writer(
    hub: &InProcessHub,
    fail_third: bool,
    blobs: bool,
) -> (MeshClient, Arc<Counts>, FolderId, FeedName) {
    let counts = Arc::new(Counts {
        fail_third: AtomicBool::new(fail_third),
        ..Counts::default()
    });
    let watching = Watching {
        inner: hub.connect("ann".parse().unwrap()),
        counts: counts.clone(),
    };
    let a = builder("ann", "ann-a")
        .remote("hub".parse().unwrap(), watching)
        .sync_options(
            SyncOptions::default()
                .with_page_size(10)
                .with_poll_interval(Duration::from_secs(3600)),
        )
        .build()
        .await
        .unwrap();
    let folder = a
        .create_folder("f", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    a.sync_now().await.unwrap();
    counts.armed.store(true, Ordering::SeqCst);
    let mut drafts = Vec::new();
    for i in 0..95u32 {
        let mut draft = EntryDraft::new(format!("n{i}"), json!({ "i": i }));
        if blobs {
            let data = format!("the content of note {i}").repeat(100).into_bytes();
            draft.media = Some(a.put_blob(&folder.id, data, "text/plain").await.unwrap());
        }
        drafts.push(draft);
    }
    a.put_many(&folder.id, &notes, drafts).await.unwrap();
    (a, counts, folder.id, notes)
}

/// How many entries of `folder`'s `notes` a fresh device of ann pulls from the hub.
async fn held_by_the_hub(hub: &InProcessHub, folder: &FolderId, notes: &FeedName) -> usize {
    let b = client("ann", "ann-b", hub.connect("ann".parse().unwrap())).await;
    b.sync_now().await.unwrap();
    b.query(folder, notes, mesh_core::model::Query::new())
        .await
        .unwrap()
        .len()
}

/// 95 entries in pages of 10: three pushes are in flight at once, never more (and never for
/// `members` or `info`), and everything arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_page_is_pushed_while_one_merges() {
    let hub = InProcessHub::new();
    let (a, counts, folder, notes) = writer(&hub, false, false).await;
    // The write started a session in the background; this one runs after it.
    a.sync_now().await.unwrap();
    assert_eq!(
        counts.most.load(Ordering::SeqCst),
        3,
        "pushes of one feed in flight together, at most"
    );
    assert!(counts.most_ordered.load(Ordering::SeqCst) <= 1);
    assert_eq!(held_by_the_hub(&hub, &folder, &notes).await, 95);
    let again: usize = a
        .sync_now()
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.sent)
        .sum();
    assert_eq!(again, 0, "the cursor covers every acknowledged page");
}

/// The third page fails while the fourth and fifth were already sent ahead: the session fails, the
/// cursor stays after the last page acknowledged in order, and the next session sends the
/// rest, so the hub ends with every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_pipeline_resumes_from_the_last_page_acknowledged_in_order() {
    let hub = InProcessHub::new();
    let (a, counts, folder, notes) = writer(&hub, true, false).await;
    // The write started a session in the background; this one or that one is cut.
    let _ = a.sync_now().await;
    assert!(counts.failed.load(Ordering::SeqCst), "a push was cut");
    counts.fail_third.store(false, Ordering::SeqCst);
    let mut ok = false;
    for _ in 0..5 {
        if a.sync_now().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a session after the cut succeeds");
    assert_eq!(held_by_the_hub(&hub, &folder, &notes).await, 95);
}

/// Pushes that name blobs are pipelined too, and each is sent only once the blobs it names
/// are uploaded: the hub never receives an entry whose content it cannot serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_naming_blobs_are_pipelined_each_after_its_blobs() {
    let hub = InProcessHub::new();
    let (a, counts, folder, notes) = writer(&hub, false, true).await;
    a.sync_now().await.unwrap();
    assert_eq!(
        counts.most.load(Ordering::SeqCst),
        3,
        "pushes naming blobs in flight together, at most"
    );
    assert!(counts.with_blobs.load(Ordering::SeqCst) >= 10);
    assert_eq!(
        counts.before_their_blobs.load(Ordering::SeqCst),
        0,
        "pushes sent before the blobs they name"
    );
    assert_eq!(held_by_the_hub(&hub, &folder, &notes).await, 95);
    let b = client("ann", "ann-c", hub.connect("ann".parse().unwrap())).await;
    b.sync_now().await.unwrap();
    for e in b
        .query(&folder, &notes, mesh_core::model::Query::new())
        .await
        .unwrap()
    {
        let media = e.content.media.clone().expect("every note names its blob");
        let i: u32 = e.content.title[1..].parse().unwrap();
        let want = format!("the content of note {i}").repeat(100).into_bytes();
        assert_eq!(b.read_blob(&folder, &media).await.unwrap(), want);
    }
}
