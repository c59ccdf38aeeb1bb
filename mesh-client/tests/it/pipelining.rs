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

/// A new folder of `a`'s with a feed `notes`.
async fn notes_folder(a: &MeshClient) -> (FolderId, FeedName) {
    let folder = a
        .create_folder("f", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    (folder.id, notes)
}

/// A device of ann syncing through `remote` in pages of 10, only when asked to.
async fn paged(device: &str, remote: impl Transport) -> MeshClient {
    builder("ann", device)
        .remote("hub".parse().unwrap(), remote)
        .sync_options(
            SyncOptions::default()
                .with_page_size(10)
                .with_poll_interval(Duration::from_secs(3600)),
        )
        .build()
        .await
        .unwrap()
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
    let a = paged("ann-a", watching).await;
    let (folder, notes) = notes_folder(&a).await;
    a.sync_now().await.unwrap();
    counts.armed.store(true, Ordering::SeqCst);
    let mut drafts = Vec::new();
    for i in 0..95u32 {
        let mut draft = EntryDraft::new(format!("n{i}"), json!({ "i": i }));
        if blobs {
            let data = format!("the content of note {i}").repeat(100).into_bytes();
            draft.media = Some(a.put_blob(&folder, data, "text/plain").await.unwrap());
        }
        drafts.push(draft);
    }
    a.put_many(&folder, &notes, drafts).await.unwrap();
    (a, counts, folder, notes)
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

/// What [`Telling`] saw.
#[derive(Default)]
struct Told {
    /// The `since` of every pull of the watched feed, in the order they were sent.
    asked: std::sync::Mutex<Vec<u64>>,
    pulled: Notify,
    /// Answers that saw the pull of the page after them sent while they were held.
    followed_early: AtomicUsize,
    /// Answers held in vain (at most 2 s each).
    held_in_vain: AtomicUsize,
    /// Where the answers said the next page starts: (in the answer, in the word ahead).
    next: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// Tells the engine where the next page of `feed` starts before it answers a pull of it
/// (`lie`: a wrong place), then holds the answer until the pull of that page is sent (at most
/// 2 s, so that an engine that does not ask ahead fails slowly instead of hanging).
struct Telling {
    inner: InProcessTransport,
    feed: mesh_core::model::FeedKey,
    lie: bool,
    told: Arc<Told>,
}

#[async_trait]
impl Transport for Telling {
    async fn send(&self, r: Request) -> Result<Response, TransportError> {
        self.inner.send(r).await
    }
    async fn send_pull(
        &self,
        r: Request,
        next: &mesh_client::transport::NextPage,
    ) -> Result<Response, TransportError> {
        let watched = match &r {
            Request::Pull { feed, since, .. } if *feed == self.feed => {
                self.told.asked.lock().unwrap().push(since.0);
                self.told.pulled.notify_waiters();
                true
            }
            _ => false,
        };
        let answer = self.inner.send(r).await?;
        let Response::Changes {
            next: at,
            more: true,
            ..
        } = &answer
        else {
            return Ok(answer);
        };
        if !watched {
            return Ok(answer);
        }
        let at = at.0;
        let said = if self.lie { at + 3 } else { at };
        self.told.next.lock().unwrap().push((at, said));
        next.tell(mesh_core::store::Cursor(said));
        let t = &*self.told;
        let asked = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let pulled = t.pulled.notified();
                tokio::pin!(pulled);
                pulled.as_mut().enable();
                if t.asked.lock().unwrap().contains(&said) {
                    return;
                }
                pulled.await;
            }
        })
        .await;
        match asked {
            Ok(()) => t.followed_early.fetch_add(1, Ordering::SeqCst),
            Err(_) => t.held_in_vain.fetch_add(1, Ordering::SeqCst),
        };
        Ok(answer)
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.inner.watch().await
    }
    fn describe(&self) -> String {
        "telling".into()
    }
}

/// 25 entries written by one device; another pulls them through [`Telling`] in pages of 10.
async fn pulled_through_telling(lie: bool) -> (Arc<Told>, usize) {
    let hub = InProcessHub::new();
    let a = client("ann", "ann-a", hub.connect("ann".parse().unwrap())).await;
    let (folder, notes) = notes_folder(&a).await;
    let drafts = (0..25u32)
        .map(|i| EntryDraft::new(format!("n{i}"), json!({ "i": i })))
        .collect();
    a.put_many(&folder, &notes, drafts).await.unwrap();
    a.sync_now().await.unwrap();

    let told = Arc::new(Told::default());
    let telling = Telling {
        inner: hub.connect("ann".parse().unwrap()),
        feed: mesh_core::model::FeedKey::folder(folder.clone(), notes.clone()),
        lie,
        told: told.clone(),
    };
    let b = paged("ann-b", telling).await;
    b.sync_now().await.unwrap();
    let held = b
        .query(&folder, &notes, mesh_core::model::Query::new())
        .await
        .unwrap()
        .len();
    // Nothing left: the cursor stands at the end.
    let again: usize = b
        .sync_now()
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.received)
        .sum();
    assert_eq!(again, 0, "pulled again after a complete pull");
    (told, held)
}

/// The page after a pull's is asked for as soon as the remote says where it starts, while
/// the answer itself is still on its way (`Transport::send_pull`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_page_is_asked_for_as_soon_as_the_remote_says_where_it_starts() {
    let (told, held) = pulled_through_telling(false).await;
    assert_eq!(held, 25);
    assert_eq!(
        told.followed_early.load(Ordering::SeqCst),
        2,
        "both answers followed by more saw the next page asked for while held"
    );
    assert_eq!(told.held_in_vain.load(Ordering::SeqCst), 0);
}

/// A remote that says the wrong place costs a page asked for in vain, never an entry: the
/// engine moves by the answers, and drops the page it asked for ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_word_about_the_next_page_loses_nothing() {
    let (told, held) = pulled_through_telling(true).await;
    assert_eq!(held, 25, "every entry pulled");
    let asked = told.asked.lock().unwrap().clone();
    let next = told.next.lock().unwrap().clone();
    // The first answer's word was taken: its wrong page was asked for, and then the one the
    // answer leads to.
    let (at, said) = next[0];
    assert!(asked.contains(&said), "the named page asked for: {asked:?}");
    assert!(
        asked.contains(&at),
        "the page the answer leads to: {asked:?}"
    );
}
