//! Connection limits, timeouts, body limits, rate limits and quotas, over raw sockets and
//! HTTP clients against a real hub on loopback.

use std::time::Duration;

use mesh_hub::{ConnectionLimits, Hub, HubConfig, Quotas, RateLimits};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mesh_client::transport::{HttpTransport, Transport};
use mesh_core::content::JsonContent;
use mesh_core::id::{DeviceId, FolderId};
use mesh_core::model::{EntryDraft, FeedKey, InvitationState, Member, Role};
use mesh_core::replica::{Actor, Replica};
use mesh_core::store::{MemoryStore, Store};
use mesh_core::sync::Request;
use mesh_core::time::Timestamp;

use crate::hubs::{Rest, TestHub};

/// Waits (at most `within`) for the server to close `s`; returns what it sent before.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Reads one whole response with a `Content-Length` from `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

fn hub_with(config: HubConfig) -> Hub {
    Hub::builder().config(config).build().unwrap()
}

fn limits(f: impl FnOnce(&mut ConnectionLimits)) -> HubConfig {
    let mut config = HubConfig::default();
    f(&mut config.connections);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_header_is_cut_off() {
    let hub = TestHub::start(hub_with(limits(|l| {
        l.header_read_timeout = Duration::from_millis(300);
    })))
    .await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(got.is_some(), "the connection stays open");
    // A connection that sends nothing at all is cut off too.
    let mut quiet = TcpStream::connect(hub.addr).await.unwrap();
    assert!(closed_within(&mut quiet, Duration::from_secs(5))
        .await
        .is_some());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let hub = TestHub::start(hub_with(limits(|l| {
        l.idle_timeout = Duration::from_millis(300);
        l.header_read_timeout = Duration::from_secs(30);
    })))
    .await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "the idle connection stays open"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_waits_for_its_next_header_no_longer_than_the_header_timeout() {
    let hub = TestHub::start(hub_with(limits(|l| {
        l.idle_timeout = Duration::from_secs(60);
        l.header_read_timeout = Duration::from_millis(300);
    })))
    .await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "the connection waits for a next request past the header timeout"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_over_32_kib_is_refused() {
    let hub = TestHub::memory().await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 << 10)
    );
    // The hub may close before it has read all of it.
    let _ = s.write_all(big.as_bytes()).await;
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the hub closes the connection");
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "{got}");
    // A header under the limit is served.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let fine = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 << 10)
    );
    s.write_all(fine.as_bytes()).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off() {
    let hub = TestHub::start(hub_with(limits(|l| {
        l.body_timeout = Duration::from_millis(300);
    })))
    .await;
    let token = hub.token("ann", "ann-laptop");
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /mesh/folders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the hub gives up on the body");
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 4"),
        "an error or nothing: {got}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let hub = TestHub::start(hub_with(HubConfig {
        max_body: 4096,
        ..HubConfig::default()
    }))
    .await;
    let token = hub.token("ann", "ann-laptop");
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    // Only the header: the hub must answer without waiting for 100 MB.
    let head = format!(
        "POST /mesh/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_response(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("payload_too_large"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_503_with_retry_after() {
    let hub = TestHub::start(hub_with(limits(|l| {
        l.max_connections = 2;
        l.retry_after = Duration::from_secs(3);
    })))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(hub.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut third, Duration::from_secs(5))
        .await
        .expect("the refused connection is closed");
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.to_ascii_lowercase().contains("retry-after: 3"), "{got}");
    assert!(got.contains("\"code\":\"unavailable\""), "{got}");
    // Once a held connection closes, a new one is served.
    drop(held.pop());
    let served = async {
        loop {
            let mut s = TcpStream::connect(hub.addr).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            if let Some(got) = closed_within(&mut s, Duration::from_secs(5)).await {
                if got.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("a freed slot serves again");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_get_429_with_retry_after() {
    let hub = TestHub::start(hub_with(HubConfig {
        rates: RateLimits {
            device_per_second: 1,
            device_burst: 3,
            user_per_second: 1,
            user_burst: 5,
        },
        ..HubConfig::default()
    }))
    .await;
    let laptop = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let phone = Rest::new(&hub, hub.token("ann", "ann-phone"));
    let bob = Rest::new(&hub, hub.token("bob", "bob-laptop"));
    for _ in 0..3 {
        assert_eq!(laptop.get("/mesh/me").await.0, 200);
    }
    let resp = laptop
        .req(reqwest::Method::GET, "/mesh/me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // The user's other device has its own bucket, until the user's is spent.
    assert_eq!(phone.get("/mesh/me").await.0, 200);
    assert_eq!(phone.get("/mesh/me").await.0, 200);
    assert_eq!(phone.get("/mesh/me").await.0, 429);
    // Other users are not affected; health needs no token and is never limited.
    assert_eq!(bob.get("/mesh/me").await.0, 200);
    for _ in 0..10 {
        assert_eq!(laptop.get("/health").await.0, 200);
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_own_more_folders_than_the_quota() {
    let hub = TestHub::start(hub_with(HubConfig {
        quotas: Quotas {
            max_folders_per_user: 2,
            ..Quotas::default()
        },
        ..HubConfig::default()
    }))
    .await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let bob = Rest::new(&hub, hub.token("bob", "bob-laptop"));
    for id in ["f1@ann", "f2@ann"] {
        let (s, v) = ann
            .post("/mesh/folders", json!({"name": id, "id": id}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = ann
        .post("/mesh/folders", json!({"name": "f3@ann", "id": "f3@ann"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{v}"
    );
    // Through the sync protocol too: a push creating a folder's members feed.
    let err = push_owner(&hub.transport("ann", "ann-desktop"), "ann", "f4@ann").await;
    assert!(err.contains("quota"), "{err}");
    // Others are not affected.
    let (s, _) = bob
        .post("/mesh/folders", json!({"name": "b", "id": "b1@bob"}))
        .await;
    assert_eq!(s, 201);
    hub.stop().await;
}

/// Creations at once: the check and the creation are one step, so exactly the quota's worth
/// pass. (When the REST route checked in one step and created in the next, this failed on
/// every run: more than three of the eight passed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_created_at_once_stay_within_the_quota() {
    let hub = TestHub::start(hub_with(HubConfig {
        quotas: Quotas {
            max_folders_per_user: 3,
            ..Quotas::default()
        },
        ..HubConfig::default()
    }))
    .await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    for round in 0..4 {
        let creations = (0..8).map(|i| {
            let id = format!("r{round}-{i}@ann");
            let ann = &ann;
            async move {
                ann.post("/mesh/folders", json!({"name": id, "id": id}))
                    .await
            }
        });
        let answers = futures::future::join_all(creations).await;
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        let expected = if round == 0 { 3 } else { 0 };
        assert_eq!(created, expected, "round {round}: {answers:?}");
        assert!(answers
            .iter()
            .all(|(s, v)| *s == 201 || v["code"] == "quota_exceeded"));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_of_a_users_folders_stay_under_the_stored_bytes_quota() {
    use mesh_core::blob::ChunkHash;
    let (hub, ann) = bytes_quota_hub(100_000).await;
    for id in ["q1@ann", "q2@ann"] {
        let (s, v) = ann
            .post("/mesh/folders", json!({"name": id, "id": id}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let t = hub.transport("ann", "ann-desktop");
    let object = |n: u8, len: usize| {
        let data = vec![n; len];
        (ChunkHash::of(&data), data)
    };
    let (q1, q2): (FolderId, FolderId) = ("q1@ann".parse().unwrap(), "q2@ann".parse().unwrap());
    t.put_objects(&q1, vec![object(1, 60_000)]).await.unwrap();
    // The same bytes again, or claimed by another of her folders, cost nothing more.
    t.put_objects(&q1, vec![object(1, 60_000)]).await.unwrap();
    t.put_objects(&q2, vec![object(1, 60_000)]).await.unwrap();
    // New bytes past the quota, in either folder, are refused with a typed error.
    for f in [&q1, &q2] {
        let err = t
            .put_objects(f, vec![object(2, 50_000)])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quota_exceeded") || err.contains("quota"),
            "{err}"
        );
    }
    assert_eq!(
        hub.hub.blobs().usage().unwrap(),
        (1, 60_000),
        "nothing refused was kept"
    );
    t.put_objects(&q2, vec![object(3, 40_000)]).await.unwrap();
    // Another user's folders are not affected.
    let bob = Rest::new(&hub, hub.token("bob", "bob-laptop"));
    assert_eq!(
        bob.post("/mesh/folders", json!({"name": "b", "id": "qb@bob"}))
            .await
            .0,
        201
    );
    hub.transport("bob", "bob-desk")
        .put_objects(&"qb@bob".parse().unwrap(), vec![object(4, 90_000)])
        .await
        .unwrap();
    hub.stop().await;
}

/// Pushes `user` as the owner of a new folder `folder` through the sync protocol; returns the
/// error the hub answers with.
async fn push_owner(transport: &HttpTransport, user: &str, folder: &str) -> String {
    let device: DeviceId = "ann-desktop".parse().unwrap();
    let mut replica = Replica::new(MemoryStore::new(device.as_str().parse().unwrap()));
    let folder: FolderId = folder.parse().unwrap();
    let feed = FeedKey::members(&folder);
    let when = Timestamp::from_unix(1_700_000_000).unwrap();
    let draft = EntryDraft {
        title: user.into(),
        content: JsonContent::from_serialize(&Member {
            user: user.parse().unwrap(),
            role: Role::Owner,
            state: InvitationState::Active,
            invited_by: user.parse().unwrap(),
            invited_at: when,
        })
        .unwrap(),
        media: None,
    };
    let actor = Actor::new(user.parse().unwrap(), device.clone());
    replica
        .create(&feed, user.parse().unwrap(), draft, &actor, when)
        .unwrap();
    let entries = replica.store().list(&feed, None, 10).unwrap();
    let err = transport
        .send(Request::Push {
            from: device.as_str().parse().unwrap(),
            feed,
            entries,
        })
        .await
        .expect_err("the push is refused");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_cannot_share_the_same_free_bytes() {
    use mesh_core::blob::ChunkHash;
    let (hub, ann) = bytes_quota_hub(100_000).await;
    let (s, v) = ann
        .post("/mesh/folders", json!({"name": "q", "id": "q@ann"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let q: FolderId = "q@ann".parse().unwrap();
    let t = hub.transport("ann", "ann-desktop");
    // Eight uploads of 30,000 new bytes each, at once: the quota has room for three.
    let uploads = (0..8u8).map(|n| {
        let data = vec![n; 30_000];
        t.put_objects(&q, vec![(ChunkHash::of(&data), data)])
    });
    let results = futures::future::join_all(uploads).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    let (_, bytes) = hub.hub.blobs().usage().unwrap();
    assert!(bytes <= 100_000, "{bytes} bytes stored past the quota");
    assert_eq!(stored, 3, "{results:?}");
    hub.stop().await;
}

/// A hub whose users may store `bytes` each, and ann's REST client on it.
async fn bytes_quota_hub(bytes: u64) -> (TestHub, Rest) {
    let hub = TestHub::start(hub_with(HubConfig {
        quotas: Quotas {
            max_bytes_per_user: bytes,
            ..Quotas::default()
        },
        ..HubConfig::default()
    }))
    .await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    (hub, ann)
}
