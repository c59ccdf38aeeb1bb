//! Peers on loopback: mutual authentication at the handshake, the transport suite over a
//! peer connection, two devices converging with no hub, and the guard's rules through a peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_client::peer::{
    PeerConfig, PeerCredentials, PeerError, PeerListener, PeerTransport, PeerTrust,
};
use mesh_client::prelude::*;
use mesh_client::transport::{Transport, TransportError};
use mesh_core::time::Timestamp;
use mesh_core::trust::{DeviceCertificate, SecretKey};

use crate::common::builder;

const LOOPBACK: &str = "127.0.0.1:0";
const TEN_YEARS: i64 = 10 * 365 * 86_400;

pub(crate) fn loopback() -> SocketAddr {
    LOOPBACK.parse().unwrap()
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_unix(secs as i64).unwrap()
}

/// A device key from a seed (distinct seeds, distinct keys).
pub(crate) fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// A mesh authority: the key that certifies devices (a hub's).
pub(crate) struct Authority(SecretKey);

impl Authority {
    pub(crate) fn new(seed: u8) -> Self {
        Authority(SecretKey::from_seed([seed; 32]))
    }

    /// A certificate for `user`'s `device` holding `key`, valid from `from` to `to` seconds
    /// around now.
    fn certify(
        &self,
        user: &str,
        device: &str,
        key: &SecretKey,
        from: i64,
        to: i64,
    ) -> DeviceCertificate {
        DeviceCertificate::issue(
            &self.0,
            user.parse().unwrap(),
            device.parse().unwrap(),
            key.public(),
            now().plus_secs(from),
            now().plus_secs(to),
        )
    }

    /// Credentials valid for ten years (the clients' ticking clocks start in 2027), trusting
    /// this authority.
    pub(crate) fn config(&self, user: &str, device: &str, key: &SecretKey) -> PeerConfig {
        let certificate = self.certify(user, device, key, -60, TEN_YEARS);
        self.config_with(certificate, key.clone())
    }

    fn config_with(&self, certificate: DeviceCertificate, key: SecretKey) -> PeerConfig {
        PeerConfig::new(
            PeerCredentials { certificate, key },
            PeerTrust::new(self.0.public()),
        )
    }
}

/// A client of `user` on `device` signing with `key`, syncing only when asked.
pub(crate) async fn device(user: &str, device: &str, key: &SecretKey) -> MeshClient {
    builder(user, device)
        .device_key(key.clone())
        .sync_options(SyncOptions::default().with_auto(false))
        .build()
        .await
        .unwrap()
}

/// `user`'s `device` (holding `key`) listening for peers on loopback with credentials from
/// `mesh`, and the listener's trust (to tell it of revocations).
pub(crate) async fn listening(
    mesh: &Authority,
    user: &str,
    name: &str,
    key: &SecretKey,
) -> (MeshClient, PeerListener, PeerTrust) {
    let config = mesh.config(user, name, key);
    let trust = config.trust.clone();
    let client = device(user, name, key).await;
    let listener = client.listen_peers(loopback(), config).await.unwrap();
    (client, listener, trust)
}

/// A client of `user` on `device` signing with `key`, syncing (only when asked) with the peer
/// listening at `addr` alone, as the remote `remote`, with credentials from `mesh`.
pub(crate) async fn peer_client(
    mesh: &Authority,
    (user, device): (&str, &str),
    key: &SecretKey,
    remote: &str,
    addr: SocketAddr,
) -> MeshClient {
    let to_peer = PeerTransport::new(addr, mesh.config(user, device, key)).unwrap();
    builder(user, device)
        .device_key(key.clone())
        .sync_options(SyncOptions::default().with_auto(false))
        .remote(remote.parse().unwrap(), to_peer)
        .build()
        .await
        .unwrap()
}

/// Ann's laptop (holding `key`), listening for peers, with a folder and its `notes` feed.
async fn laptop_with_notes(
    mesh: &Authority,
    key: &SecretKey,
) -> (MeshClient, PeerListener, FolderId, FeedName) {
    let (laptop, listener, _) = listening(mesh, "ann", "laptop", key).await;
    let (folder, notes) = notes_folder(&laptop, "Notes").await;
    (laptop, listener, folder, notes)
}

/// A notes folder named `name` that `c` founds, with its `notes` feed.
pub(crate) async fn notes_folder(c: &MeshClient, name: &str) -> (FolderId, FeedName) {
    let folder = c
        .create_folder(name, FolderKind::app("notes").unwrap())
        .await
        .unwrap()
        .id;
    let notes = c
        .create_feed(&folder, "notes".parse().unwrap(), "Notes")
        .await
        .unwrap();
    (folder, notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_transport_passes_the_suite() {
    let mesh = Authority::new(100);
    let host_key = key(1);
    let (_host, listener, _) = listening(&mesh, "host", "host-device", &host_key).await;
    let addr = listener.local_addr();
    assert!(addr.ip().is_loopback());
    crate::transport_suite::suite(|user| {
        let k = key(user.len() as u8 + 10);
        let config = mesh.config(user, &format!("{user}-peer"), &k);
        Arc::new(PeerTransport::new(addr, config).unwrap()) as Arc<dyn Transport>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_user_converge_with_no_hub() {
    let mesh = Authority::new(100);
    let (laptop_key, phone_key) = (key(1), key(2));
    let (laptop, listener, _) = listening(&mesh, "ann", "laptop", &laptop_key).await;
    let to_laptop = PeerTransport::new(
        listener.local_addr(),
        mesh.config("ann", "phone", &phone_key),
    )
    .unwrap();
    let phone = builder("ann", "phone")
        .device_key(phone_key.clone())
        .sync_options(SyncOptions::default().with_auto(false))
        .remote("laptop".parse().unwrap(), to_laptop)
        .build()
        .await
        .unwrap();

    // Written on the laptop, read on the phone.
    let folder = laptop
        .create_folder("Groceries", FolderKind::app("todo").unwrap())
        .await
        .unwrap()
        .id;
    let todos = laptop
        .create_feed(&folder, "todos".parse().unwrap(), "To do")
        .await
        .unwrap();
    let milk = laptop
        .put(
            &folder,
            &todos,
            EntryDraft::new("Buy milk", serde_json::json!({"done": false})),
        )
        .await
        .unwrap();
    phone.sync_now().await.unwrap();
    let got = phone
        .get(&folder, &todos, milk.entry_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.content.title, "Buy milk");

    // Written on the phone (signed by its certified key), accepted by the laptop's guard.
    let bread = phone
        .put(
            &folder,
            &todos,
            EntryDraft::new("Buy bread", serde_json::json!({"done": false})),
        )
        .await
        .unwrap();
    let mut events = phone.events();
    phone.sync_now().await.unwrap();
    let on_laptop = laptop
        .get(&folder, &todos, bread.entry_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_laptop.content.title, "Buy bread");
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        assert!(!matches!(e, Event::Refused { .. }), "{e:?}");
    }
    // Nothing left to move either way.
    let report = &phone.sync_now().await.unwrap()[0].1;
    assert_eq!((report.sent, report.received), (0, 0), "{report:?}");
}

/// Connects `config` to a listener trusting `mesh` and returns the handshake's outcome.
async fn handshake(listener_config: PeerConfig, config: PeerConfig) -> Result<(), PeerError> {
    let host_key = listener_config.credentials.key.clone();
    let host = device(
        listener_config.credentials.certificate.user.as_str(),
        listener_config.credentials.certificate.device.as_str(),
        &host_key,
    )
    .await;
    let listener = host
        .listen_peers(loopback(), listener_config)
        .await
        .unwrap();
    let t = PeerTransport::new(listener.local_addr(), config).unwrap();
    t.connect().await.map(|_| ())
}

fn refused_with(r: Result<(), PeerError>, code: &str) {
    match r {
        Err(PeerError::Refused { code: c, .. }) if c == code => {}
        other => panic!("expected a refusal with {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_authenticates_both_sides() {
    let mesh = Authority::new(100);
    let laptop = mesh.config("ann", "laptop", &key(1));
    let phone = mesh.config("ann", "phone", &key(2));
    // Both sides learn who the other is.
    let host = device("ann", "laptop", &key(1)).await;
    let listener = host.listen_peers(loopback(), laptop).await.unwrap();
    let t = PeerTransport::new(listener.local_addr(), phone).unwrap();
    let peer = t.connect().await.unwrap();
    assert_eq!(
        (peer.user.as_str(), peer.device.as_str()),
        ("ann", "laptop")
    );
    let me = t.whoami().await.unwrap().unwrap();
    assert_eq!(me.user.as_str(), "ann");
    assert_eq!(me.device.unwrap().as_str(), "phone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_authority_is_refused() {
    let (mesh, other) = (Authority::new(100), Authority::new(101));
    // The connecting device's certificate: refused by the listener, which says why.
    let r = handshake(
        mesh.config("ann", "laptop", &key(1)),
        PeerConfig {
            trust: PeerTrust::new(mesh.0.public()),
            ..other.config("ann", "phone", &key(2))
        },
    )
    .await;
    refused_with(r, "untrusted_certificate");
    // The listening device's certificate: refused by the connecting side.
    let r = handshake(
        PeerConfig {
            trust: PeerTrust::new(mesh.0.public()),
            ..other.config("ann", "laptop", &key(1))
        },
        mesh.config("ann", "phone", &key(2)),
    )
    .await;
    assert!(matches!(r, Err(PeerError::Untrusted(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let mesh = Authority::new(100);
    let phone_key = key(2);
    let expired = mesh.certify("ann", "phone", &phone_key, -86_400, -3_600);
    let r = handshake(
        mesh.config("ann", "laptop", &key(1)),
        mesh.config_with(expired, phone_key.clone()),
    )
    .await;
    refused_with(r, "expired_certificate");
    // Not yet valid (beyond the allowed clock skew) is refused the same way.
    let early = mesh.certify("ann", "phone", &phone_key, 86_400, 2 * 86_400);
    let r = handshake(
        mesh.config("ann", "laptop", &key(1)),
        mesh.config_with(early, phone_key),
    )
    .await;
    refused_with(r, "expired_certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused() {
    let mesh = Authority::new(100);
    let (_host, listener, trust) = listening(&mesh, "ann", "laptop", &key(1)).await;
    let phone =
        PeerTransport::new(listener.local_addr(), mesh.config("ann", "phone", &key(2))).unwrap();
    phone.connect().await.unwrap();
    let feeds = || mesh_core::sync::Request::Feeds {
        from: "phone".parse().unwrap(),
        only: None,
        certificates: false,
    };
    phone.send(feeds()).await.unwrap();
    // The laptop learns of the revocation (here from the application, `PeerTrust::revoke`):
    // the next connection of the phone is refused, and so is every request as a transport
    // error.
    trust.revoke(&"phone".parse().unwrap(), now().plus_secs(-1));
    let again =
        PeerTransport::new(listener.local_addr(), mesh.config("ann", "phone", &key(2))).unwrap();
    refused_with(again.connect().await.map(|_| ()), "revoked");
    let e = again.send(feeds()).await.unwrap_err();
    assert!(
        matches!(&e, TransportError::Refused { code, .. } if code == "revoked")
            && !e.is_retryable(),
        "{e:?}"
    );
    // The connection the phone opened before the revocation is refused at its next request.
    let cut = phone.send(feeds()).await;
    assert!(
        cut.is_err(),
        "an open connection outlived the revocation: {cut:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_watching_hears_nothing_more() {
    let mesh = Authority::new(100);
    let (host, listener, trust) = listening(&mesh, "ann", "laptop", &key(1)).await;
    let (folder, notes) = notes_folder(&host, "Notes").await;
    let phone =
        PeerTransport::new(listener.local_addr(), mesh.config("ann", "phone", &key(2))).unwrap();
    let mut heard = phone.watch().await.unwrap();
    let write = |title: &'static str| {
        let (host, folder, notes) = (host.clone(), folder.clone(), notes.clone());
        async move {
            host.put(
                &folder,
                &notes,
                EntryDraft::new(title, serde_json::json!({})),
            )
            .await
            .unwrap();
        }
    };
    write("before").await;
    let first = tokio::time::timeout(Duration::from_secs(10), heard.next()).await;
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    trust.revoke(&"phone".parse().unwrap(), now().plus_secs(-1));
    write("after").await;
    let next = tokio::time::timeout(Duration::from_secs(10), heard.next())
        .await
        .expect("the stream neither ended nor spoke");
    assert!(next.is_none(), "a revoked device still hears: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_claiming_another_users_certificate_is_refused() {
    let mesh = Authority::new(100);
    let ann_phone = mesh.certify("ann", "phone", &key(2), -60, TEN_YEARS);
    // Bob's device presents ann's phone's certificate (it is public) but holds only its own
    // key: its signature over the connection does not verify with the certified key.
    let r = handshake(
        mesh.config("ann", "laptop", &key(1)),
        mesh.config_with(ann_phone.clone(), key(3)),
    )
    .await;
    refused_with(r, "untrusted_certificate");
    // A certificate of bob's for a device the listener knows as ann's is refused too.
    let laptop = mesh.config("ann", "laptop", &key(1));
    laptop.trust.add_certificate(ann_phone).unwrap();
    let bobs = mesh.certify("bob", "phone", &key(3), -60, TEN_YEARS);
    let r = handshake(laptop, mesh.config_with(bobs, key(3))).await;
    refused_with(r, "untrusted_certificate");
}

/// The next event on `events` that `wanted` picks, within 10 s.
pub(crate) async fn next_event(
    events: &mut (impl futures::Stream<Item = Event> + Unpin),
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(e) if wanted(&e) => return e,
                Some(_) => continue,
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("no such event within 10 s")
}

async fn next_refusal(events: &mut (impl futures::Stream<Item = Event> + Unpin)) -> Event {
    next_event(events, |e| matches!(e, Event::Refused { .. })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_device_cannot_write_through_a_peer() {
    let mesh = Authority::new(100);
    let (ann_key, bob_key) = (key(1), key(3));
    let (ann, listener, folder, notes) = laptop_with_notes(&mesh, &ann_key).await;
    let bob_id: UserId = "bob".parse().unwrap();
    ann.invite(&folder, &bob_id, Role::Author).await.unwrap();
    let bob = peer_client(
        &mesh,
        ("bob", "desk"),
        &bob_key,
        "ann-laptop",
        listener.local_addr(),
    )
    .await;
    bob.sync_now().await.unwrap();
    bob.accept(&folder).await.unwrap();
    bob.sync_now().await.unwrap();
    let bob_on_laptop = |members: Vec<Member>| {
        members
            .into_iter()
            .find(|m| m.user == bob_id)
            .map(|m| (m.role, m.state))
    };
    assert_eq!(
        bob_on_laptop(ann.members(&folder).await.unwrap()),
        Some((Role::Author, InvitationState::Active))
    );

    // Ann makes bob a reader on her laptop; bob, who has not heard yet, writes.
    ann.set_role(&folder, &bob_id, Role::Reader).await.unwrap();
    let mut events = bob.events();
    let note = bob
        .put(
            &folder,
            &notes,
            EntryDraft::new("too late", serde_json::json!({})),
        )
        .await
        .unwrap();
    bob.sync_now().await.unwrap();
    // The laptop's guard refuses the write, and bob's client hears it as a typed event.
    match next_refusal(&mut events).await {
        Event::Refused { feed, id, kind, .. } => {
            assert_eq!(kind, ErrorKind::PermissionDenied);
            assert_eq!(feed, FeedKey::folder(folder.clone(), notes.clone()));
            assert_eq!(&id, note.entry_id());
        }
        other => unreachable!("{other:?}"),
    }
    assert!(ann
        .get(&folder, &notes, note.entry_id())
        .await
        .unwrap()
        .is_none());
    // And bob's device now knows it is a reader.
    assert_eq!(bob.role(&folder).await.unwrap(), Some(Role::Reader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_the_connection_cap_holds() {
    use tokio::io::AsyncReadExt;
    let mesh = Authority::new(100);
    let mut config = mesh.config("ann", "laptop", &key(1));
    config.handshake_timeout = Duration::from_millis(300);
    config.max_connections = 1;
    let host = device("ann", "laptop", &key(1)).await;
    let listener = host.listen_peers(loopback(), config).await.unwrap();
    let addr = listener.local_addr();
    // A connection that never says anything takes the only slot...
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // ...so a second one is closed at once (its TLS handshake fails)...
    let phone = PeerTransport::new(addr, mesh.config("ann", "phone", &key(2))).unwrap();
    let e = phone.connect().await.unwrap_err();
    assert!(matches!(e, PeerError::Io(_) | PeerError::Tls(_)), "{e:?}");
    // ...until the listener gives up on the silent one after its handshake timeout (the
    // peer does not choose how long it may hold a slot).
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the listener closes a silent connection");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // The slot is free again. (The listener releases it right after closing: retry briefly.)
    let mut connected = None;
    for _ in 0..50 {
        match phone.connect().await {
            Ok(peer) => {
                connected = Some(peer);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    assert_eq!(connected.unwrap().device.as_str(), "laptop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_the_protocol_are_refused_without_harm() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Authority::new(100);
    let (_host, listener, _) = listening(&mesh, "ann", "laptop", &key(1)).await;
    let addr = listener.local_addr();
    // Plain HTTP instead of TLS, and a TLS-looking record announcing a huge length: the
    // listener closes each connection.
    for junk in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        [&[0x16u8, 0x03, 0x01, 0xff, 0xff][..], &[0u8; 64][..]].concat(),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&junk).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
            .await
            .expect("the listener closes the connection");
        // Closed with or without a TLS alert first: either way, nothing else is sent.
        let _ = read;
        assert!(buf.len() < 64, "{} bytes back", buf.len());
    }
    // The listener still serves a real peer.
    let phone = PeerTransport::new(addr, mesh.config("ann", "phone", &key(2))).unwrap();
    assert_eq!(phone.connect().await.unwrap().device.as_str(), "laptop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_enrolled_with_a_hub_meet_as_peers_with_its_certificates() {
    let hub = mesh_client::transport::InProcessHub::new();
    let dir = tempfile::tempdir().unwrap();
    let open = |device: &str| {
        builder("ann", device)
            .store(mesh_client::store::StoreConfig::Sqlite(
                dir.path().join(format!("{device}.db")),
            ))
            .sync_options(SyncOptions::default().with_auto(false))
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .build()
    };
    let (laptop, phone) = (open("laptop").await.unwrap(), open("phone").await.unwrap());
    let hub_id: RemoteId = "hub".parse().unwrap();
    // Before meeting the hub a device holds no certificate.
    assert!(laptop.peer_config(&hub_id).await.unwrap().is_none());
    laptop.sync_now().await.unwrap();
    phone.sync_now().await.unwrap();
    let config = laptop.peer_config(&hub_id).await.unwrap().unwrap();
    assert_eq!(config.trust.authority(), hub.authority_key());
    assert_eq!(
        Some(&config.credentials.certificate),
        hub.certificate(&"laptop".parse().unwrap()).as_ref()
    );
    let listener = laptop.listen_peers(loopback(), config).await.unwrap();
    // A memory store keeps no enrollment: nothing to meet peers with.
    let memory = device("ann", "tablet", &key(9)).await;
    assert!(memory.peer_config(&hub_id).await.unwrap().is_none());
    let to_laptop = PeerTransport::new(
        listener.local_addr(),
        phone.peer_config(&hub_id).await.unwrap().unwrap(),
    )
    .unwrap();
    let peer = to_laptop.connect().await.unwrap();
    assert_eq!(
        (peer.user.as_str(), peer.device.as_str()),
        ("ann", "laptop")
    );
    // Both keep their own keys: the listener verifies the phone's versions with the
    // certificate the hub issued, and a request goes through.
    let answer = to_laptop
        .send(mesh_core::sync::Request::Feeds {
            from: "phone".parse().unwrap(),
            only: None,
            certificates: false,
        })
        .await
        .unwrap();
    assert!(matches!(answer, mesh_core::sync::Response::Feeds { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_notifications_bring_a_change_without_asking() {
    let mesh = Authority::new(100);
    let (laptop_key, phone_key) = (key(1), key(2));
    let (laptop, listener, folder, notes) = laptop_with_notes(&mesh, &laptop_key).await;
    let to_laptop = PeerTransport::new(
        listener.local_addr(),
        mesh.config("ann", "phone", &phone_key),
    )
    .unwrap();
    // The phone syncs on its own (the default): it watches the laptop's notifications.
    let phone = builder("ann", "phone")
        .device_key(phone_key)
        .remote("laptop".parse().unwrap(), to_laptop)
        .build()
        .await
        .unwrap();
    let mut events = phone.events();
    phone.sync_now().await.unwrap();
    let note = laptop
        .put(
            &folder,
            &notes,
            EntryDraft::new("hello", serde_json::json!({})),
        )
        .await
        .unwrap();
    let feed = FeedKey::folder(folder.clone(), notes.clone());
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(Event::EntryChanged { feed: f, id, .. })
                    if f == feed && &id == note.entry_id() =>
                {
                    return
                }
                Some(_) => continue,
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the phone hears of the laptop's write within 10 s");
    assert!(phone
        .get(&folder, &notes, note.entry_id())
        .await
        .unwrap()
        .is_some());
}
