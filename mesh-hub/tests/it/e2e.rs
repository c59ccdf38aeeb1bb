//! End to end through a hub on an ephemeral 127.0.0.1 port: clients converge, roles hold,
//! revocation cuts a device off, and a hub killed mid-sync loses nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use mesh_client::sync::SyncOptions;
use mesh_client::transport::{
    HttpConfig, HttpTransport, SimConfig, SimNetwork, Transport, TransportError,
};
use mesh_client::{ChangeSource, ErrorKind, Event, MeshClient};
use mesh_core::model::{EntryDraft, FeedKey, Query, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::MemoryStore;
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_hub::Hub;
use serde_json::json;

use crate::common::{builder, settle};
use crate::hubs::{fast, Rest, TestHub};

pub(crate) fn options() -> SyncOptions {
    SyncOptions::default()
        .with_page_size(100)
        .with_backoff_min(Duration::from_millis(20))
        .with_backoff_max(Duration::from_millis(300))
        .with_poll_interval(Duration::from_secs(3600))
}

/// A device of `user` syncing with `hub` (test options: quick backoff, no polling).
pub(crate) async fn client(hub: &TestHub, user: &str, device: &str) -> MeshClient {
    builder(user, device)
        .remote("hub".parse().unwrap(), hub.transport(user, device))
        .sync_options(options())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_and_a_reader_converge_through_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(Hub::builder().data_dir(dir.path()).build().unwrap()).await;
    let laptop = client(&hub, "ann", "ann-laptop").await;
    let phone = client(&hub, "ann", "ann-phone").await;
    let bob = client(&hub, "bob", "bob-desk").await;

    let folder = laptop
        .create_folder("Groceries", "app/todo".parse().unwrap())
        .await
        .unwrap();
    let todos = laptop
        .create_feed(&folder.id, "todos".parse().unwrap(), "To do")
        .await
        .unwrap();
    for i in 0..25 {
        laptop
            .put(
                &folder.id,
                &todos,
                EntryDraft::new(format!("item {i}"), json!({"n": i})),
            )
            .await
            .unwrap();
    }
    laptop
        .invite(&folder.id, &"bob".parse().unwrap(), Role::Reader)
        .await
        .unwrap();
    settle(&[&laptop, &phone, &bob]).await;
    bob.accept(&folder.id).await.unwrap();
    phone
        .put(
            &folder.id,
            &todos,
            EntryDraft::new("from the phone", json!({})),
        )
        .await
        .unwrap();
    settle(&[&laptop, &phone, &bob]).await;

    let all = |c: MeshClient| {
        let (f, t) = (folder.id.clone(), todos.clone());
        async move { c.query(&f, &t, Query::new()).await.unwrap() }
    };
    let on_laptop = all(laptop.clone()).await;
    assert_eq!(on_laptop.len(), 26);
    assert_eq!(all(phone.clone()).await, on_laptop);
    assert_eq!(all(bob.clone()).await, on_laptop);
    assert_eq!(bob.role(&folder.id).await.unwrap(), Some(Role::Reader));

    // The reader's writes are refused: by its own client…
    let err = bob
        .put(&folder.id, &todos, EntryDraft::new("bob's", json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // …by the hub when a device pushes anyway…
    let key = FeedKey::folder(folder.id.clone(), todos.clone());
    let mut forged = Replica::new(MemoryStore::new("forger".parse().unwrap()));
    let w = forged
        .create(
            &key,
            "forged".parse().unwrap(),
            EntryDraft::new("forged", json!({})),
            &Actor::new("bob".parse().unwrap(), "bob-desk".parse().unwrap()),
            Timestamp::EPOCH,
        )
        .unwrap();
    let raw = hub.transport("bob", "bob-raw");
    let Response::Pushed { results, .. } = raw
        .send(Request::Push {
            from: "forger".parse().unwrap(),
            feed: key.clone(),
            entries: vec![w.entry],
        })
        .await
        .unwrap()
    else {
        panic!("pushed expected")
    };
    assert!(results[0].refused.is_some(), "{results:?}");
    // …and through the REST API.
    let rest = Rest::new(&hub, hub.token("bob", "bob-rest"));
    let (status, body) = rest
        .post(
            &format!("/mesh/folders/{}/feeds/todos/entries", folder.id),
            json!({"title": "nope"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied"))
    );
    assert_eq!(all(laptop.clone()).await.len(), 26);

    // A write on the laptop reaches the phone by notification alone (no sync_now).
    let mut events = phone.subscribe(&folder.id, Some(&todos));
    let e = laptop
        .put(&folder.id, &todos, EntryDraft::new("live", json!({})))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if let Event::EntryChanged {
                id,
                source: ChangeSource::Remote(_),
                ..
            } = ev
            {
                if id == e.sync.id {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("the change event arrives");
    assert!(got);
    for c in [&laptop, &phone, &bob] {
        c.close();
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_at_once() {
    let hub = TestHub::memory().await;
    let phone = hub.transport("ann", "ann-phone");
    let laptop = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let feeds = || Request::Feeds {
        from: "phone-replica".parse().unwrap(),
        only: None,
        certificates: false,
    };
    assert!(phone.send(feeds()).await.is_ok());
    let mut stream = phone.watch().await.unwrap();
    assert_eq!(hub.hub.open_streams(), 1);
    let (_, devices) = laptop.get("/mesh/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == "ann-phone" && d["online"] == true));

    // One device asking is not enough to revoke another; a second device's request is.
    let (status, _) = laptop.delete("/mesh/devices/ann-phone").await;
    assert_eq!(status, 202);
    assert!(
        phone.send(feeds()).await.is_ok(),
        "still live after one request"
    );
    let desk = Rest::new(&hub, hub.token("ann", "ann-desk"));
    let (status, _) = desk.delete("/mesh/devices/ann-phone").await;
    assert_eq!(status, 204);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the open stream closes at once");
    assert!(end.is_none());
    assert_eq!(
        phone.send(feeds()).await.unwrap_err(),
        TransportError::Unauthorized
    );
    assert_eq!(
        phone.watch().await.err(),
        Some(TransportError::Unauthorized)
    );
    // Another user's device cannot be revoked (nor seen).
    hub.token("bob", "bob-desk");
    let (status, _) = laptop.delete("/mesh/devices/bob-desk").await;
    assert_eq!(status, 404);
    // A revoked id cannot come back.
    let (_, code) = laptop.post("/mesh/devices/codes", json!(null)).await;
    let (status, _) = laptop
        .post(
            "/mesh/devices",
            json!({"id": "ann-phone", "code": code["code"]}),
        )
        .await;
    assert_eq!(status, 409);
    // Revocation by the operator (library call) also closes streams.
    let tablet = hub.transport("ann", "ann-tablet");
    let mut s = tablet.watch().await.unwrap();
    hub.hub
        .revoke_device(&"ann-tablet".parse().unwrap())
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("closed");
    assert!(end.is_none());
    hub.stop().await;
}

/// A device revoked at the hub is refused by its owner's other devices on the LAN once they
/// sync with the hub: the hub's `feeds` answer carries the authority's signed statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_the_hub_reaches_peers_with_the_next_sync() {
    use mesh_client::peer::PeerTransport;
    let hub = TestHub::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let device = |name: &'static str| {
        builder("ann", name)
            .store(mesh_client::store::StoreConfig::Sqlite(
                dir.path().join(format!("{name}.db")),
            ))
            .remote("hub".parse().unwrap(), hub.transport("ann", name))
            .sync_options(options().with_auto(false))
            .build()
    };
    let (laptop, phone) = (
        device("ann-laptop").await.unwrap(),
        device("ann-phone").await.unwrap(),
    );
    for c in [&laptop, &phone] {
        c.sync_now().await.unwrap();
    }
    let config = |c: &MeshClient| {
        let c = c.clone();
        async move {
            c.peer_config(&"hub".parse().unwrap())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let listener = laptop
        .listen_peers("127.0.0.1:0".parse().unwrap(), config(&laptop).await)
        .await
        .unwrap();
    let meet = || async {
        PeerTransport::new(listener.local_addr(), config(&phone).await)
            .unwrap()
            .connect()
            .await
            .map(|_| ())
    };
    meet().await.unwrap();
    // Asked, the hub sends the certificates of the devices the asker may receive versions
    // from (ann's two certified ones here), as peers need them to judge relayed versions.
    let asked = hub
        .transport("ann", "ann-probe")
        .send(Request::Feeds {
            from: "probe".parse().unwrap(),
            only: None,
            certificates: true,
        })
        .await
        .unwrap();
    let Response::Feeds { certificates, .. } = asked else {
        panic!("{asked:?}")
    };
    let devices: Vec<String> = certificates.iter().map(|c| c.device.to_string()).collect();
    assert_eq!(devices, ["ann-laptop", "ann-phone"]);

    hub.hub
        .revoke_device(&"ann-phone".parse().unwrap())
        .unwrap();
    // The laptop has not synced since: it still takes the phone.
    meet().await.unwrap();
    let mut events = laptop.events();
    laptop.sync_now().await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::DeviceRevoked { device, .. }) = events.next().await {
                return device;
            }
        }
    })
    .await
    .expect("the revocation is reported");
    assert_eq!(heard.as_str(), "ann-phone");
    let refused = meet().await.unwrap_err();
    assert_eq!(refused.code(), "revoked", "{refused}");
    // The statement is the hub's authority's own.
    let statements = config(&laptop).await.trust.revocations();
    assert_eq!(statements.len(), 1);
    statements[0]
        .verify(&hub.hub.accounts().authority_key())
        .unwrap();
    hub.stop().await;
}

// ---- a hub in its own process --------------------------------------------------------------

pub(crate) fn hub_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-hub")
}

pub(crate) fn admin(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(hub_bin())
        .arg("--data")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub(crate) struct HubProcess {
    pub child: Child,
    pub url: String,
}

impl HubProcess {
    pub fn start(dir: &Path, listen: &str) -> HubProcess {
        let mut child = Command::new(hub_bin())
            .arg("--data")
            .arg(dir)
            .args(["--listen", listen, "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("mesh-hub listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        HubProcess { child, url }
    }

    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn replica_of(url: &str, token: &str) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/mesh"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["replica"].as_str().unwrap().to_owned()
}

fn http_config() -> HttpConfig {
    fast().with_retries(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_hub_mid_sync_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    admin(dir.path(), &["user", "add", "ann"]);
    let token_a = admin(dir.path(), &["device", "add", "ann", "a"]);
    let token_b = admin(dir.path(), &["device", "add", "ann", "b"]);
    let mut hub = HubProcess::start(dir.path(), "127.0.0.1:0");
    let url = hub.url.clone();
    let replica = replica_of(&url, &token_a).await;

    // A's link goes through a simulated network only so that the test can hold A back while
    // it looks at the restarted hub; it adds a little delay and no faults.
    let net = SimNetwork::new(
        SimConfig::default()
            .with_seed(3)
            .with_max_delay(Duration::from_millis(4)),
    );
    let (link_a, control) =
        net.wrap(HttpTransport::with_config(&url, &token_a, http_config()).unwrap());
    let a = builder("ann", "a")
        .remote("hub".parse().unwrap(), link_a)
        .sync_options(options().with_page_size(50))
        .build()
        .await
        .unwrap();
    // Write everything while A is cut off, then let it sync and kill the hub mid-way.
    control.set_online(false);
    let folder = a
        .create_folder("Big", "app/test".parse().unwrap())
        .await
        .unwrap();
    let feed = a
        .create_feed(&folder.id, "items".parse().unwrap(), "Items")
        .await
        .unwrap();
    const N: usize = 3000;
    for i in 0..N {
        a.put(
            &folder.id,
            &feed,
            EntryDraft::new(format!("item {i}"), json!({"n": i, "pad": "x".repeat(200)})),
        )
        .await
        .unwrap();
    }
    let mut events = a.events();
    control.set_online(true);
    let syncing = {
        let a = a.clone();
        tokio::spawn(async move { a.sync_now().await })
    };
    // Kill the hub (SIGKILL) while a session is pushing.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = events.next().await {
            if let Event::SyncProgress {
                sent, done: false, ..
            } = e
            {
                if sent > N / 5 {
                    return;
                }
            }
        }
    })
    .await
    .expect("a session starts");
    control.set_online(false);
    hub.child.kill().unwrap();
    let _ = syncing.await;
    hub.child.wait().unwrap();
    let addr = hub.addr().to_owned();
    drop(hub);

    let hub = HubProcess::start(dir.path(), &addr);
    assert_eq!(hub.url, url);
    assert_eq!(
        replica_of(&url, &token_a).await,
        replica,
        "the replica survived"
    );
    let (_, doc) = crate::hubs::send(
        reqwest::Client::new()
            .get(format!("{url}/mesh/folders/{}/feeds/items", folder.id))
            .bearer_auth(&token_a),
    )
    .await;
    let held = doc["entries"].as_u64().unwrap_or(0) as usize;
    // What the hub acknowledged before the kill is still there; the rest is still to come.
    assert!(
        held > 0 && held < N,
        "the hub was killed mid-sync (it held {held} of {N})"
    );
    control.set_online(true);
    let mut ok = false;
    for _ in 0..100 {
        if a.sync_now().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a syncs again after the restart");
    let b = builder("ann", "b")
        .remote(
            "hub".parse().unwrap(),
            HttpTransport::with_config(&url, &token_b, http_config()).unwrap(),
        )
        .sync_options(options())
        .build()
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    let on_a = a.query(&folder.id, &feed, Query::new()).await.unwrap();
    let on_b = b.query(&folder.id, &feed, Query::new()).await.unwrap();
    assert_eq!(on_a.len(), N);
    assert_eq!(on_a, on_b);
    a.close();
    b.close();
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_hub_down_gracefully_with_streams_open() {
    let dir = tempfile::tempdir().unwrap();
    admin(dir.path(), &["user", "add", "ann"]);
    let token = admin(dir.path(), &["device", "add", "ann", "a"]);
    let mut hub = HubProcess::start(dir.path(), "127.0.0.1:0");
    let t = HttpTransport::with_config(&hub.url, &token, http_config()).unwrap();
    let mut stream = t.watch().await.unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &hub.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream closes");
    assert!(end.is_none());
    let exit = tokio::task::spawn_blocking(move || {
        let s = hub.child.wait().unwrap();
        drop(hub);
        s
    })
    .await
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Entries too large to share a page of the configured size still sync over HTTP: pages are
/// cut by bytes (`MAX_PAGE_BYTES`), so neither a push nor a pull answer passes the hub's body
/// limit (12 MiB here), though the 12 entries of 1.5 MiB add up to 18 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_entries_stay_within_the_hubs_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(
        Hub::builder()
            .data_dir(dir.path())
            .max_body(12 << 20)
            .build()
            .unwrap(),
    )
    .await;
    let laptop = client(&hub, "ann", "ann-laptop").await;
    let phone = client(&hub, "ann", "ann-phone").await;
    let folder = laptop
        .create_folder("Scans", "app/scans".parse().unwrap())
        .await
        .unwrap();
    let scans = laptop
        .create_feed(&folder.id, "scans".parse().unwrap(), "Scans")
        .await
        .unwrap();
    let drafts = (0..12)
        .map(|i| {
            EntryDraft::new(
                format!("scan {i}"),
                json!({ "text": format!("{i}").repeat(1_500_000) }),
            )
        })
        .collect();
    laptop.put_many(&folder.id, &scans, drafts).await.unwrap();
    laptop.sync_now().await.unwrap();
    phone.sync_now().await.unwrap();
    let got = phone.query(&folder.id, &scans, Query::new()).await.unwrap();
    assert_eq!(got.len(), 12);
}
