//! The incremental path: a change is synced by asking about its feed alone, and once the
//! remote's name is known (a whole session ran while the notification stream was open) with
//! no `feeds` request at all: the writer pushes, a device told of the new head pulls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use mesh_client::transport::{InProcessHub, Notification, Transport, TransportError};
use mesh_client::{ChangeKind, ChangeSource, Event, MeshClient};
use mesh_core::model::{EntryDraft, FeedKey};
use mesh_core::sync::{Request, Response};
use serde_json::json;

use crate::common::*;

/// A request as [`Recording`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Feeds(Option<Vec<FeedKey>>),
    Pull(FeedKey),
    Push(FeedKey),
}

/// Records every sync request it forwards.
struct Recording {
    inner: mesh_client::transport::InProcessTransport,
    sent: Arc<Mutex<Vec<Sent>>>,
}

#[async_trait]
impl Transport for Recording {
    async fn send(&self, r: Request) -> Result<Response, TransportError> {
        let s = match &r {
            Request::Feeds { only, .. } => Sent::Feeds(only.clone()),
            Request::Pull { feed, .. } => Sent::Pull(feed.clone()),
            Request::Push { feed, .. } | Request::PushEncoded { feed, .. } => {
                Sent::Push(feed.clone())
            }
        };
        self.sent.lock().unwrap().push(s);
        self.inner.send(r).await
    }
    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        self.inner.watch().await
    }
    fn describe(&self) -> String {
        "recording".into()
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

async fn recorded(hub: &InProcessHub, device: &str) -> (MeshClient, Arc<Mutex<Vec<Sent>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        "ann",
        device,
        Recording {
            inner: hub.connect("ann".parse().unwrap()),
            sent: sent.clone(),
        },
    )
    .await;
    (c, sent)
}

/// Waits for a session of `events`' client that ends after `what` was seen.
async fn session_after(events: &mut BoxStream<'static, Event>, what: impl Fn(&Event) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = false;
        while let Some(e) = events.next().await {
            seen |= what(&e);
            if seen && matches!(e, Event::SyncProgress { done: true, .. }) {
                return;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a session in time");
}

/// One changed entry: one `push` from its writer, one `pull` on the device told of it, no
/// `feeds` listing on either side, and both hold the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_entry_costs_one_push_and_one_pull() {
    let hub = InProcessHub::new();
    let (a, sent_a) = recorded(&hub, "ann-a").await;
    let (b, sent_b) = recorded(&hub, "ann-b").await;
    // Several folders: a whole sync would ask about all of their feeds.
    let mut folders = Vec::new();
    for n in 0..5 {
        let f = a
            .create_folder(&format!("f{n}"), "app/notes".parse().unwrap())
            .await
            .unwrap();
        let notes = a
            .create_feed(&f.id, "notes".parse().unwrap(), "Notes")
            .await
            .unwrap();
        // An entry in each, so that both devices have synced every feed once.
        a.put(&f.id, &notes, EntryDraft::new("first", json!({})))
            .await
            .unwrap();
        folders.push((f.id, notes));
    }
    settle(&[&a, &b]).await;
    let (folder, notes) = folders[2].clone();
    let key = FeedKey::folder(folder.clone(), notes.clone());
    let mut a_events = a.events();
    let mut b_events = b.events();
    sent_a.lock().unwrap().clear();
    sent_b.lock().unwrap().clear();
    let e = a
        .put(&folder, &notes, EntryDraft::new("new", json!({"n": 1})))
        .await
        .unwrap();
    let id = e.sync.id.clone();
    session_after(&mut a_events, |e| {
        matches!(e, Event::SyncProgress { sent: 1, .. })
    })
    .await;
    session_after(&mut b_events, |e| {
        matches!(e, Event::EntryChanged { id: got, kind: ChangeKind::Added, source: ChangeSource::Remote(_), .. } if *got == id)
    })
    .await;
    // The writer pushed first and asked nothing (it may pull after since: the remote
    // announces its push to it too).
    let sent = sent_a.lock().unwrap().clone();
    assert_eq!(sent.first(), Some(&Sent::Push(key.clone())), "{sent:?}");
    assert!(
        !sent.iter().any(|s| matches!(s, Sent::Feeds(_))),
        "{sent:?}"
    );
    // The device told of the change pulled that feed, and only that.
    let sent = sent_b.lock().unwrap().clone();
    assert_eq!(sent, [Sent::Pull(key.clone())]);
    let got = b
        .get(&folder, &notes, &id)
        .await
        .unwrap()
        .expect("b holds it");
    assert_eq!(got.content.content, e.content.content);
}

/// Before the remote's name is known, a change is still synced by asking about its feed
/// alone, never about every feed the user holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_feed_is_asked_about_alone() {
    let hub = InProcessHub::new();
    let (a, sent_a) = recorded(&hub, "ann-a").await;
    let (b, _) = recorded(&hub, "ann-b").await;
    for n in 0..3 {
        let f = a
            .create_folder(&format!("f{n}"), "app/notes".parse().unwrap())
            .await
            .unwrap();
        a.create_feed(&f.id, "notes".parse().unwrap(), "Notes")
            .await
            .unwrap();
    }
    settle(&[&a, &b]).await;
    // A feed created now has no cursors yet: its first sync asks `feeds` about it alone,
    // then pushes it.
    let folder = a.folders().await.unwrap()[0].id.clone();
    let mut a_events = a.events();
    sent_a.lock().unwrap().clear();
    let feed = a
        .create_feed(&folder, "todo".parse().unwrap(), "To do")
        .await
        .unwrap();
    a.put(&folder, &feed, EntryDraft::new("x", json!({})))
        .await
        .unwrap();
    let key = FeedKey::folder(folder, feed);
    let pushed = || sent_a.lock().unwrap().contains(&Sent::Push(key.clone()));
    tokio::time::timeout(Duration::from_secs(10), async {
        while !pushed() {
            session_after(&mut a_events, |_| true).await;
        }
    })
    .await
    .expect("the new feed is pushed");
    let sent = sent_a.lock().unwrap().clone();
    assert!(
        sent.iter().all(|s| !matches!(s, Sent::Feeds(None))),
        "a whole sync: {sent:?}"
    );
    assert!(
        sent.iter()
            .any(|s| matches!(s, Sent::Feeds(Some(only)) if only.contains(&key))),
        "the new feed asked about: {sent:?}"
    );
}
