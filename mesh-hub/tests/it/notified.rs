//! A small push's changes travel in the notifications of the feed it moved: another device
//! merges them without pulling, the pushing device gets none, and a device whose cursor
//! stands elsewhere pulls as before (nothing is skipped). On the SQLite hub, whose
//! notifications are its own (a hub on PostgreSQL announces heads only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use mesh_client::transport::{HttpTransport, Identity, Notification, Transport, TransportError};
use mesh_client::MeshClient;
use mesh_core::id::{DeviceId, FeedName, FolderId};
use mesh_core::model::{EntryDraft, Query};
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{Enrollment, PublicKey};
use serde_json::json;

use crate::common::builder;
use crate::e2e::options;
use crate::hubs::TestHub;

/// What a device's transport saw: the requests it sent and the notifications it heard.
#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    notes: Vec<Notification>,
}

/// A device's transport to the hub that records what passes; once `drop_next_page` is set,
/// the next notification carrying changes never reaches the engine (a stream that missed
/// it).
struct Recording {
    inner: HttpTransport,
    seen: Arc<Mutex<Seen>>,
    drop_next_page: Arc<AtomicBool>,
}

#[async_trait]
impl Transport for Recording {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.seen.lock().unwrap().requests.push(request.clone());
        self.inner.send(request).await
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        let (seen, dropping) = (self.seen.clone(), self.drop_next_page.clone());
        let stream = self.inner.watch().await?.filter(move |n| {
            seen.lock().unwrap().notes.push(n.clone());
            let drop = n.changes.is_some() && dropping.swap(false, Ordering::SeqCst);
            futures::future::ready(!drop)
        });
        Ok(stream.boxed())
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
}

/// A device of ann on `hub`, recording its transport's traffic.
async fn device(hub: &TestHub, name: &str) -> (MeshClient, Arc<Mutex<Seen>>, Arc<AtomicBool>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let drop_next_page = Arc::new(AtomicBool::new(false));
    let transport = Recording {
        inner: hub.transport("ann", name),
        seen: seen.clone(),
        drop_next_page: drop_next_page.clone(),
    };
    let client = builder("ann", name)
        .remote("hub".parse().unwrap(), transport)
        .sync_options(options())
        .build()
        .await
        .unwrap();
    (client, seen, drop_next_page)
}

/// Waits (bounded) until `client` holds `n` entries in `feed`.
async fn until_entries(client: &MeshClient, folder: &FolderId, feed: &FeedName, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if client
                .query(folder, feed, Query::new())
                .await
                .is_ok_and(|e| e.len() == n)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} entries reach the device"));
}

/// A folder with a feed and one entry, written on `a` and seen by `b`.
async fn shared_feed(a: &MeshClient, b: &MeshClient) -> (FolderId, FeedName) {
    let folder = a
        .create_folder("Notes", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    a.put_many(
        &folder.id,
        &feed,
        vec![EntryDraft::new("first", json!({"n": 1}))],
    )
    .await
    .unwrap();
    a.sync_now().await.unwrap();
    until_entries(b, &folder.id, &feed, 1).await;
    // B is idle once a whole sync has ended: nothing it does after this was started before.
    b.sync_now().await.unwrap();
    (folder.id, feed)
}

/// A hub on SQLite (in memory): its notifications are its own.
async fn sqlite_hub() -> TestHub {
    TestHub::start(mesh_hub::Hub::builder().build().unwrap()).await
}

/// Writes an entry titled `title` into `feed` on `client`.
async fn write(client: &MeshClient, folder: &FolderId, feed: &FeedName, title: &str) {
    let draft = EntryDraft::new(title, json!({ "title": title }));
    client.put_many(folder, feed, vec![draft]).await.unwrap();
}

/// Pulls of `feed` among `requests`.
fn pulls(requests: &[Request], feed: &FeedName) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r, Request::Pull { feed: f, .. } if &f.name == feed))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_push_reaches_another_device_in_its_notification_without_a_pull() {
    let hub = sqlite_hub().await;
    let (a, a_seen, _) = device(&hub, "ann-a").await;
    let (b, b_seen, _) = device(&hub, "ann-b").await;
    let (folder, feed) = shared_feed(&a, &b).await;

    let before = b_seen.lock().unwrap().requests.len();
    write(&a, &folder, &feed, "second").await;
    until_entries(&b, &folder, &feed, 2).await;
    let seen = b_seen.lock().unwrap();
    let after = &seen.requests[before..];
    assert_eq!(
        pulls(after, &feed),
        0,
        "the entry came in the notification: {after:?}"
    );
    let carried = seen
        .notes
        .iter()
        .filter(|n| n.feed.name == feed)
        .filter_map(|n| n.changes.as_ref())
        .any(|c| c.entries.iter().any(|e| e.content.title == "second"));
    assert!(carried, "B's notification carried the entry");
    drop(seen);
    // The writer is told of its own push without the changes (a pull would skip them).
    let a_seen = a_seen.lock().unwrap();
    let own: Vec<_> = a_seen
        .notes
        .iter()
        .filter(|n| n.feed.name == feed)
        .collect();
    assert!(!own.is_empty());
    assert!(
        own.iter().all(|n| n.changes.is_none()),
        "the pushing device gets no changes back: {own:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_do_not_follow_the_devices_cursor_are_pulled_instead() {
    let hub = sqlite_hub().await;
    let (a, _, _) = device(&hub, "ann-a").await;
    let (b, b_seen, drop_next_page) = device(&hub, "ann-b").await;
    let (folder, feed) = shared_feed(&a, &b).await;
    // B's stream misses the second entry's notification.
    drop_next_page.store(true, Ordering::SeqCst);

    write(&a, &folder, &feed, "second").await;
    a.sync_now().await.unwrap();
    let before = b_seen.lock().unwrap().requests.len();
    // The third entry's notification follows the second's, which B never saw: B's cursor
    // stands before both, so it pulls them both.
    write(&a, &folder, &feed, "third").await;
    until_entries(&b, &folder, &feed, 3).await;
    let seen = b_seen.lock().unwrap();
    assert!(pulls(&seen.requests[before..], &feed) >= 1, "B pulled");
}

/// The next notification naming `feed` on an SSE `stream` (bounded).
async fn next_note_of<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    feed: &FeedName,
) -> serde_json::Value {
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                if let Some(v) =
                    data.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                {
                    if v["feed"]["name"] == feed.as_str() {
                        return v;
                    }
                }
            }
            let chunk = stream.next().await.expect("the stream stays open").unwrap();
            buf.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        }
    })
    .await
    .expect("the feed's notification arrives")
}

/// `GET /mesh/notifications{query}` with `token`: an SSE stream when `sse`, else a
/// long-poll; with `Accept-Encoding: gzip, zstd` when `zstd`.
async fn open_notifications(
    hub: &TestHub,
    query: &str,
    token: &str,
    sse: bool,
    zstd: bool,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .get(format!("{}/mesh/notifications{query}", hub.url))
        .bearer_auth(token);
    if sse {
        r = r.header("accept", "text/event-stream");
    }
    if zstd {
        r = r.header("accept-encoding", "gzip, zstd");
    }
    r.send().await.unwrap()
}

/// Changes travel only on streams that ask for them (`?changes=1`): other clients of the
/// protocol get the notifications they always got. Anything but 0 or 1 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_streams_that_ask_for_changes_get_them() {
    let hub = sqlite_hub().await;
    let (a, _, _) = device(&hub, "ann-a").await;
    let (b, _, _) = device(&hub, "ann-b").await;
    let (folder, feed) = shared_feed(&a, &b).await;
    let open = |query, device| {
        let token = hub.token("ann", device);
        let hub = &hub;
        async move { open_notifications(hub, query, &token, true, false).await }
    };
    let asking = open("?changes=1", "ann-c").await;
    let plain = open("", "ann-d").await;
    assert_eq!(
        (asking.status().as_u16(), plain.status().as_u16()),
        (200, 200)
    );
    assert_eq!(open("?changes=yes", "ann-e").await.status().as_u16(), 400);
    let (mut asking, mut plain) = (asking.bytes_stream(), plain.bytes_stream());
    // Both streams are subscribed once their response has started.
    write(&a, &folder, &feed, "second").await;
    let with = next_note_of(&mut asking, &feed).await;
    let without = next_note_of(&mut plain, &feed).await;
    assert_eq!(
        with["changes"]["entries"][0]["content"]["title"], "second",
        "{with}"
    );
    assert!(with["changes"]["since"].is_u64(), "{with}");
    assert!(without.get("changes").is_none(), "{without}");
    assert_eq!(with["head"], without["head"]);
}

/// A write through the REST API is the hub's own: its changes travel to every device that
/// listens, the caller's own device too (its pull would not skip them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_write_reaches_devices_in_their_notifications() {
    let hub = sqlite_hub().await;
    let (a, _, _) = device(&hub, "ann-a").await;
    let (b, b_seen, _) = device(&hub, "ann-b").await;
    let (folder, feed) = shared_feed(&a, &b).await;
    let before = b_seen.lock().unwrap().requests.len();
    // With B's own credentials.
    let token = hub
        .hub
        .accounts()
        .mint_token(&"ann-b".parse().unwrap())
        .unwrap();
    let rest = crate::hubs::Rest::new(&hub, token);
    let (s, body) = rest
        .post(
            &format!("/mesh/folders/{folder}/feeds/{feed}/entries"),
            json!({"title": "from the web"}),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {body}");
    until_entries(&b, &folder, &feed, 2).await;
    until_entries(&a, &folder, &feed, 2).await;
    let seen = b_seen.lock().unwrap();
    assert_eq!(
        pulls(&seen.requests[before..], &feed),
        0,
        "{:?}",
        seen.requests
    );
}

/// A stream with changes along that takes zstd is coded, a frame per event: it reads as the
/// plain one does, in fewer bytes when the changes compress. A stream without changes, or
/// that does not take zstd, stays plain; a long-poll answer is coded like a sync answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_changes_along_is_zstd_coded_when_taken() {
    use std::io::Write;
    use std::sync::atomic::AtomicUsize;
    let hub = sqlite_hub().await;
    let (a, _, _) = device(&hub, "ann-a").await;
    let (b, _, _) = device(&hub, "ann-b").await;
    let (folder, feed) = shared_feed(&a, &b).await;
    let open = |query, device, zstd| {
        let token = hub.token("ann", device);
        let hub = &hub;
        async move { open_notifications(hub, query, &token, true, zstd).await }
    };
    let coded = open("?changes=1", "ann-c", true).await;
    let plain = open("?changes=1", "ann-d", false).await;
    let heads_only = open("", "ann-e", true).await;
    let coding = |r: &reqwest::Response| {
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(coding(&coded).as_deref(), Some("zstd"));
    assert_eq!((coding(&plain), coding(&heads_only)), (None, None));

    // The coded stream through a decoder of its own, counting the bytes on the wire.
    let (wire, text) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut decoder = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
    let (w, t) = (wire.clone(), text.clone());
    let mut coded = coded.bytes_stream().map(move |chunk| {
        chunk.map(|c| {
            w.fetch_add(c.len(), Ordering::SeqCst);
            decoder.write_all(&c).unwrap();
            decoder.flush().unwrap();
            let out = std::mem::take(decoder.get_mut());
            t.fetch_add(out.len(), Ordering::SeqCst);
            out
        })
    });
    let mut plain = plain.bytes_stream();
    let title = "0123456789".repeat(150);
    write(&a, &folder, &feed, &title).await;
    let from_coded = next_note_of(&mut coded, &feed).await;
    let from_plain = next_note_of(&mut plain, &feed).await;
    assert_eq!(from_coded, from_plain);
    assert_eq!(
        from_coded["changes"]["entries"][0]["content"]["title"],
        title.as_str()
    );
    let (wire, text) = (wire.load(Ordering::SeqCst), text.load(Ordering::SeqCst));
    assert!(text > 1500 && wire < text / 2, "{wire} bytes for {text}");

    // Long-poll: the write above is this device's backlog (heads only: under 512 bytes, as it
    // is), then a long answer from many feeds moved.
    let token = hub.token("ann", "ann-f");
    let polled = open_notifications(&hub, "?wait=0", &token, false, true).await;
    assert_eq!(coding(&polled), None);
    let cursor = polled.json::<serde_json::Value>().await.unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..12 {
        let draft = EntryDraft::new("n", json!({ "n": i }));
        let f = a
            .create_feed(&folder, format!("feed-{i:02}").parse().unwrap(), "Feed")
            .await
            .unwrap();
        a.put_many(&folder, &f, vec![draft]).await.unwrap();
    }
    a.sync_now().await.unwrap();
    let query = format!("?wait=0&cursor={cursor}");
    let long = open_notifications(&hub, &query, &token, false, true).await;
    assert_eq!(coding(&long).as_deref(), Some("zstd"));
    let body = zstd::stream::decode_all(&long.bytes().await.unwrap()[..]).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let moved = body["changes"].as_array().unwrap().iter();
    let named = |n: &serde_json::Value| n["feed"]["name"].as_str().unwrap().starts_with("feed-");
    assert_eq!(moved.filter(|n| named(n)).count(), 12, "{body}");
}
