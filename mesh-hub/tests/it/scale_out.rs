//! Several hub processes on one PostgreSQL database (each test starts three or two
//! `mesh-hub` processes on loopback): writers on different processes converge with a reader
//! that pulls throughout (nothing skipped, though one process's commits are slowed), a
//! change written through one process reaches a stream held by another, and a process killed
//! with SIGKILL mid-push loses no acknowledged write.
//!
//! They need a PostgreSQL server (`MESH_TEST_POSTGRES`, from `.ci/postgres.sh`) and skip
//! visibly without one, unless `MESH_REQUIRE_POSTGRES=1`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_client::transport::{HttpTransport, Transport};
use mesh_client::{ChangeSource, Event, MeshClient};
use mesh_core::id::EntryId;
use mesh_core::model::{EntryDraft, FeedKey, Query};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{MemoryStore, Store};
use mesh_core::sync::{Request, Response};
use mesh_core::time::Timestamp;
use mesh_core::trust::SecretKey;
use mesh_hub::Hub;
use mesh_store::postgres::{PgConfig, PgDatabase};
use serde_json::json;

use crate::common::{builder, settle};
use crate::e2e::{hub_bin, options};
use crate::hubs::{fast, fresh_schema};

/// The test server, or `None` after saying why the test does not run.
fn server() -> Option<String> {
    match std::env::var("MESH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("MESH_REQUIRE_POSTGRES").is_none(),
                "MESH_REQUIRE_POSTGRES is set but MESH_TEST_POSTGRES is not"
            );
            // Straight to the process's stderr: the harness captures `eprintln!` of passing
            // tests, and a skip must be seen in a plain `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: no PostgreSQL server (run `eval \"$(bash .ci/postgres.sh start)\"`)",
                std::thread::current().name().unwrap_or("a test")
            );
            None
        }
    }
}

/// A migrated schema, and a hub handle on it for the accounts (not served).
struct Database {
    url: String,
    schema: String,
    admin: Hub,
}

impl Database {
    fn new(url: String) -> Database {
        let schema = fresh_schema();
        let admin = Hub::builder()
            .postgres(PgConfig::new(url.clone()).schema(schema.clone()))
            .migrate(true)
            .build()
            .unwrap();
        Database { url, schema, admin }
    }

    fn token(&self, user: &str, device: &str) -> String {
        let u = user.parse().unwrap();
        if !self.admin.accounts().has_user(&u).unwrap() {
            self.admin.accounts().add_user(&u).unwrap();
        }
        self.admin
            .accounts()
            .add_device(&u, &device.parse().unwrap(), device, "test")
            .unwrap()
    }

    /// A `mesh-hub` process serving the schema.
    fn process(&self, env: &[(&str, &str)]) -> HubProcess {
        let mut child = Command::new(hub_bin())
            .args(["--database", &self.url, "--db-schema", &self.schema])
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .envs(env.iter().copied())
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

    /// Every entry id of `feed` in the database.
    fn ids(&self, feed: &FeedKey) -> Vec<String> {
        let db = PgDatabase::connect(PgConfig::new(self.url.clone()).schema(self.schema.clone()))
            .unwrap();
        db.open_replica("unused".parse().unwrap()).unwrap();
        let store = db.store().unwrap();
        let list = store.list(feed, None, usize::MAX).unwrap();
        list.into_iter().map(|e| e.sync.id.to_string()).collect()
    }
}

struct HubProcess {
    child: Child,
    url: String,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client_on(db: &Database, hub: &HubProcess, user: &str, device: &str) -> MeshClient {
    let http = HttpTransport::with_config(&hub.url, db.token(user, device), fast()).unwrap();
    builder(user, device)
        .remote("hub".parse().unwrap(), http)
        .sync_options(options())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_three_processes_converge_with_a_reader_pulling_throughout() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let p1 = db.process(&[]);
    // The second process holds every commit for a while: writers elsewhere queue behind it.
    let p2 = db.process(&[("MESH_PG_TEST_COMMIT_DELAY_MS", "40")]);
    let p3 = db.process(&[]);
    let w1 = client_on(&db, &p1, "ann", "ann-1").await;
    let w2 = client_on(&db, &p2, "ann", "ann-2").await;
    let w3 = client_on(&db, &p3, "ann", "ann-3").await;
    let reader = client_on(&db, &p3, "ann", "ann-reader").await;
    let folder = w1
        .create_folder("Shared", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = w1
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    settle(&[&w1, &w2, &w3, &reader]).await;

    const EACH: usize = 30;
    let write = |c: MeshClient, tag: &'static str| {
        let (f, n) = (folder.id.clone(), notes.clone());
        tokio::spawn(async move {
            for i in 0..EACH {
                c.put(
                    &f,
                    &n,
                    EntryDraft::new(format!("{tag} {i}"), json!({ "i": i })),
                )
                .await
                .unwrap();
                if i % 5 == 4 {
                    c.sync_now().await.unwrap();
                }
            }
            c.sync_now().await.unwrap();
        })
    };
    let writers = [
        write(w1.clone(), "one"),
        write(w2.clone(), "two"),
        write(w3.clone(), "three"),
    ];
    // The reader pulls incrementally (from its cursor) the whole time.
    let r = reader.clone();
    let pulling = tokio::spawn(async move {
        let mut rounds = 0;
        while rounds < 2_000 {
            r.sync_now().await.unwrap();
            rounds += 1;
            tokio::task::yield_now().await;
        }
    });
    for w in writers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("writers finish")
            .unwrap();
    }
    pulling.abort();
    // Only incremental pulls from here too: a change a cursor skipped would never arrive.
    settle(&[&w1, &w2, &w3, &reader]).await;
    let all = |c: MeshClient| {
        let (f, n) = (folder.id.clone(), notes.clone());
        async move {
            let mut titles: Vec<String> = c
                .query(&f, &n, Query::new())
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.content.title.clone())
                .collect();
            titles.sort();
            titles
        }
    };
    let on_reader = all(reader.clone()).await;
    assert_eq!(on_reader.len(), 3 * EACH, "the reader has every write");
    for w in [&w1, &w2, &w3] {
        assert_eq!(all(w.clone()).await, on_reader);
    }
    drop((p1, p2, p3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_written_through_one_process_reaches_a_stream_on_another() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let (p1, p2) = (db.process(&[]), db.process(&[]));
    let listener = client_on(&db, &p1, "ann", "ann-listener").await;
    let writer = client_on(&db, &p2, "ann", "ann-writer").await;
    let folder = writer
        .create_folder("Shared", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = writer
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    settle(&[&writer, &listener]).await;
    // From here the listener never syncs on its own initiative: only its notification
    // stream (held by process 1) can bring the change written through process 2.
    let mut events = listener.events();
    let mut latencies = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        let w = writer
            .put(
                &folder.id,
                &notes,
                EntryDraft::new(format!("n{i}"), json!({})),
            )
            .await
            .unwrap();
        writer.sync_now().await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = events.next().await {
                if let Event::EntryChanged {
                    id,
                    source: ChangeSource::Remote(_),
                    ..
                } = &e
                {
                    if id == w.id() {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(heard.is_ok(), "the change reached process 1's stream");
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    eprintln!("write → event across processes: median {:?}", latencies[2]);
}

/// A device that pushes signed versions through the sync endpoint and counts the pages a
/// process acknowledged.
struct Pusher {
    http: HttpTransport,
    replica: Replica<MemoryStore>,
    actor: Actor,
}

impl Pusher {
    async fn new(db: &Database, hub: &HubProcess, device: &str) -> Pusher {
        let token = db.token("ann", device);
        let http = HttpTransport::with_config(&hub.url, token, fast()).unwrap();
        let key = SecretKey::from_seed([7; 32]);
        http.enroll(&device.parse().unwrap(), &key.public())
            .await
            .unwrap();
        let mut replica = Replica::new(MemoryStore::new(device.parse().unwrap()));
        replica.set_signer(key);
        Pusher {
            http,
            replica,
            actor: Actor::new("ann".parse().unwrap(), device.parse().unwrap()),
        }
    }

    /// Writes `ids` locally and pushes them in one page; `Ok` once the process answered.
    async fn push(&mut self, feed: &FeedKey, ids: &[String]) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut entries = Vec::new();
        for id in ids {
            let w = self
                .replica
                .create(
                    feed,
                    id.parse::<EntryId>().unwrap(),
                    EntryDraft::new(id.clone(), json!({ "pad": "x".repeat(200) })),
                    &self.actor,
                    Timestamp::from_unix(now).unwrap(),
                )
                .unwrap();
            entries.push(w.entry);
        }
        let r = self
            .http
            .send(Request::Push {
                from: self.replica.id(),
                feed: feed.clone(),
                entries,
            })
            .await
            .map_err(|e| e.to_string())?;
        let Response::Pushed { results, .. } = r else {
            return Err(format!("unexpected answer {r:?}"));
        };
        match results.iter().find_map(|x| x.code.clone()) {
            None => Ok(()),
            Some(code) => Err(format!("refused: {code}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_push_loses_no_acknowledged_write() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let p1 = db.process(&[]);
    let mut p2 = db.process(&[("MESH_PG_TEST_COMMIT_DELAY_MS", "5")]);
    // The folder, through process 1's REST API.
    let owner = reqwest::Client::new();
    let token = db.token("ann", "ann-admin");
    for (path, body) in [
        (
            "/mesh/folders",
            json!({"name": "Log", "kind": "app/log", "id": "log@ann"}),
        ),
        ("/mesh/folders/log@ann/feeds", json!({"name": "lines"})),
    ] {
        let s = owner
            .post(format!("{}{path}", p1.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 201);
    }
    let feed: FeedKey = "folder:log@ann/lines".parse().unwrap();
    let mut pusher = Pusher::new(&db, &p2, "ann-pusher").await;
    let mut acknowledged = Vec::new();
    let mut killed = false;
    for page in 0..200 {
        let ids: Vec<String> = (0..40).map(|i| format!("p{page:03}-{i:02}")).collect();
        if page == 6 {
            // Kill the process while the next pushes are in flight.
            let pid = p2.child.id();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            });
            killed = true;
        }
        match pusher.push(&feed, &ids).await {
            Ok(()) => acknowledged.extend(ids),
            Err(_) if killed => break,
            Err(e) => panic!("push failed before the kill: {e}"),
        }
    }
    assert!(killed);
    let _ = p2.child.wait();
    let stored: std::collections::HashSet<String> = db.ids(&feed).into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        acknowledged.len() >= 6 * 40,
        "pages were acknowledged before the kill"
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // Another process carries on where the killed one stopped.
    let mut again = Pusher::new(&db, &p1, "ann-pusher-2").await;
    again.push(&feed, &["after".to_owned()]).await.unwrap();
    assert!(db.ids(&feed).contains(&"after".to_owned()));
}

/// Two owners demote each other at once through two processes, ten times over: the folder's
/// scope lock makes one demotion see the other, so one owner always stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demotions_through_two_processes_keep_one_owner() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let (p1, p2) = (db.process(&[]), db.process(&[]));
    let http = reqwest::Client::new();
    let (ann, frank) = (db.token("ann", "ann-rest"), db.token("frank", "frank-rest"));
    let call = |method: reqwest::Method, hub: &HubProcess, token: &str, path: &str, body| {
        http.request(method, format!("{}{path}", hub.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    for round in 0..10 {
        let f = format!("f{round}@ann");
        let s = call(
            reqwest::Method::POST,
            &p1,
            &ann,
            "/mesh/folders",
            json!({"name": "F", "kind": "app/x", "id": f}),
        )
        .await
        .unwrap()
        .status();
        assert_eq!(s, 201);
        let members = format!("/mesh/folders/{f}/members");
        let s = call(
            reqwest::Method::POST,
            &p1,
            &ann,
            &members,
            json!({"user": "frank", "role": "owner"}),
        )
        .await
        .unwrap()
        .status();
        assert!(s.is_success(), "{s}");
        let s = call(
            reqwest::Method::POST,
            &p2,
            &frank,
            &format!("/mesh/invitations/{f}/accept"),
            json!(null),
        )
        .await
        .unwrap()
        .status();
        assert!(s.is_success(), "{s}");
        let (r1, r2) = tokio::join!(
            call(
                reqwest::Method::PUT,
                &p1,
                &ann,
                &format!("{members}/frank"),
                json!({"role": "full"})
            ),
            call(
                reqwest::Method::PUT,
                &p2,
                &frank,
                &format!("{members}/ann"),
                json!({"role": "full"})
            ),
        );
        let (s1, s2) = (r1.unwrap().status(), r2.unwrap().status());
        let list: serde_json::Value = call(reqwest::Method::GET, &p1, &ann, &members, json!(null))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let owners = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "owner" && m["state"] == "active")
            .count();
        assert_eq!(owners, 1, "round {round}: {s1} {s2} {list}");
    }
}

/// Two processes share a device's rate limit: once they have counted each other (by their
/// heartbeats in the database), a burst spread over both gets the configured burst in all,
/// not once per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_processes() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let limits = [
        ("MESH_HUB_DEVICE_RATE", "1"),
        ("MESH_HUB_DEVICE_BURST", "10"),
        ("MESH_HUB_USER_RATE", "0"),
    ];
    let (p1, p2) = (db.process(&limits), db.process(&limits));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A fresh device each time: a full bucket on each process.
        let token = db.token("ann", &format!("ann-{attempt}"));
        let mut passed = 0;
        for i in 0..20 {
            let hub = if i % 2 == 0 { &p1 } else { &p2 };
            let s = http
                .get(format!("{}/mesh/devices", hub.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            if s.is_success() {
                passed += 1;
            } else {
                assert_eq!(s, 429);
            }
        }
        if passed <= 11 {
            break;
        }
        // Before both share, each process allows its own burst (up to 20 in all).
        assert!(passed <= 20, "{passed}");
        assert!(
            Instant::now() < deadline,
            "the processes never shared the limit"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Two processes creating one user's folders at once keep the folder quota between them:
/// each checks under the database's lock on that user's folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_quota_holds_across_processes() {
    let Some(url) = server() else { return };
    let db = Database::new(url);
    let quota = [("MESH_HUB_MAX_FOLDERS", "3")];
    let (p1, p2) = (db.process(&quota), db.process(&quota));
    let token = db.token("ann", "ann-laptop");
    let http = reqwest::Client::new();
    let creations = (0..12).map(|i| {
        let hub = if i % 2 == 0 { &p1 } else { &p2 };
        let id = format!("f{i}@ann");
        let req = http
            .post(format!("{}/mesh/folders", hub.url))
            .bearer_auth(&token)
            .json(&json!({"name": id, "id": id}));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let answers = futures::future::join_all(creations).await;
    let created = answers.iter().filter(|s| **s == 201).count();
    assert_eq!(created, 3, "{answers:?}");
    assert!(
        answers.iter().all(|s| *s == 201 || *s == 403),
        "{answers:?}"
    );
}

/// A hub on a fresh schema whose pool holds one connection (waiting `timeout` for it, or the
/// default).
async fn one_connection_hub(url: String, timeout: Option<Duration>) -> crate::hubs::TestHub {
    let mut config = PgConfig::new(url)
        .schema(crate::hubs::fresh_schema())
        .max_connections(1);
    if let Some(t) = timeout {
        config.timeout = t;
    }
    let hub = Hub::builder()
        .postgres(config)
        .migrate(true)
        .build()
        .unwrap();
    crate::hubs::TestHub::start(hub).await
}

/// A request holds at most one connection of the pool at a time: the keyring it checks
/// signatures against (a query over a connection of its own) is read before the request's
/// connection is taken. So a hub with a pool of one connection serves a device's whole sync
/// (folder creation, pushes, a second device's pulls) instead of waiting on itself until the
/// pool's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_connection_serves_whole_syncs() {
    let Some(url) = server() else { return };
    let served = one_connection_hub(url, None).await;
    let a = crate::e2e::client(&served, "ann", "ann-a").await;
    let b = crate::e2e::client(&served, "ann", "ann-b").await;
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        let folder = a
            .create_folder("Shared", "app/notes".parse().unwrap())
            .await
            .unwrap();
        let notes = a
            .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
            .await
            .unwrap();
        for i in 0..20 {
            a.put(
                &folder.id,
                &notes,
                EntryDraft::new(format!("n {i}"), json!({ "i": i })),
            )
            .await
            .unwrap();
        }
        a.sync_now().await.unwrap();
        b.sync_now().await.unwrap();
        b.query(&folder.id, &notes, Query::default())
            .await
            .unwrap()
            .len()
    })
    .await;
    assert_eq!(
        done.ok(),
        Some(20),
        "every entry reached the second device in time"
    );
}

/// A hub on a pool of one connection stores a file and purges the folder when it is deleted.
/// Both steps once asked the pool for a second connection while holding one, and so waited on
/// themselves until the pool's timeout: an upload under the stored-bytes quota (the quota's
/// lock held on one connection, the check and the write on others), and the release of a
/// deleted folder's objects (the request's connection held). The upload failed; the release
/// failed after the deletion was merged, so the folder's objects stayed claimed for good (a
/// retried deletion changes nothing, so nothing purges it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_connection_purges_a_deleted_folder() {
    let Some(url) = server() else { return };
    // Long enough for requests to take turns on the one connection, short enough for the
    // deadlock this test guards against to fail it quickly.
    let served = one_connection_hub(url, Some(Duration::from_secs(5))).await;
    let a = crate::e2e::client(&served, "ann", "ann-a").await;
    let folder = a
        .create_folder("Doomed", "app/notes".parse().unwrap())
        .await
        .unwrap();
    let notes = a
        .create_feed(&folder.id, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    let media = a
        .put_blob(&folder.id, vec![9u8; 200_000], "application/octet-stream")
        .await
        .unwrap();
    let mut draft = EntryDraft::new("file", json!({}));
    draft.media = Some(media.clone());
    a.put(&folder.id, &notes, draft).await.unwrap();
    a.sync_now().await.unwrap();
    let manifest: mesh_core::blob::ChunkHash = media.hash.parse().unwrap();
    assert!(served.hub.blobs().get(&manifest).unwrap().is_some());

    a.delete_folder(&folder.id).await.unwrap();
    a.sync_now().await.unwrap();
    assert_eq!(
        served.hub.blobs().get(&manifest).unwrap(),
        None,
        "the deleted folder's objects were released"
    );
    assert_eq!(served.hub.blobs().usage().unwrap(), (0, 0));
}
